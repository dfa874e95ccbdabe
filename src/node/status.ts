/**
 * A peer's live status, for people watching a swarm (the page `flora-peer --http` serves,
 * and `GET /status.json`): who the members are (rank, addresses, connected or not), the
 * round in progress and its phase, every committed round's state hash with the members that
 * certified it (the hash-agreement history), train and eval loss per round, and rejections.
 *
 *   const status = new StatusTracker(peer, { rank: 8, rounds: 10 })
 *   const server = await startPeerHttpServer({ port: 8080, status })
 *   ...
 *   status.recordEval(round, loss)   // if the app evaluates the agreed weights
 *   status.close(); await server.close()
 *
 * It follows the peer's events and keeps bounded history (the newest MAX_ROUNDS rounds and
 * MAX_RECENT_REJECTIONS rejections), so a peer that runs for months does not grow.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { VERSION } from '../version.js'
import type { RoundPhase } from './engine.js'
import type { FloraPeer, PeerEvents } from './peer.js'

export const MAX_ROUNDS = 1000
export const MAX_RECENT_REJECTIONS = 50

export interface MemberStatus {
  readonly peerId: string
  /** Its LoRA rank, from its newest adapter this peer received (undefined: none yet). */
  readonly rank?: number
  /** Remote addresses of its open connections (empty when not connected). */
  readonly addresses: readonly string[]
  readonly connected: boolean
  /** The newest round its adapter was merged in, as far as this peer saw. */
  readonly lastContributed?: number
}

export interface RoundStatus {
  readonly round: number
  readonly stateHash: string
  readonly proposer: string
  readonly view: number
  readonly contributors: readonly string[]
  /** Members whose precommit votes certify this state hash (they hold the same weights). */
  readonly certifiedBy: readonly string[]
  /** Members recorded after the round. */
  readonly members: number
  readonly roundMs: number
  /** Set when this peer caught up with the round instead of taking part. */
  readonly synced?: 'replay' | 'snapshot'
  readonly trainLoss?: number
  readonly evalLoss?: number
  /** Held-out token accuracy (model trainer), when evaluated. */
  readonly evalAccuracy?: number
  /** When this peer committed it (ms since the epoch). */
  readonly at: number
}

export interface RejectionStatus {
  readonly at: number
  readonly peerId: string
  readonly reason: string
  readonly detail: string
  readonly round?: number
}

export interface PeerStatus {
  readonly version: string
  readonly peerId: string
  readonly swarmId: string
  readonly rank?: number
  /** Rounds this peer runs (undefined: until stopped). */
  readonly rounds?: number
  /** This peer's own addresses (others bootstrap to these). */
  readonly addresses: readonly string[]
  readonly startedAt: number
  readonly now: number
  /** 'waiting' for members, 'running' rounds, 'done', 'stopped' ('idle' before start). */
  readonly status: string
  readonly head: { readonly round: number; readonly stateHash: string }
  /** The round in progress (undefined between rounds or before the first). */
  readonly current?: {
    readonly round: number
    readonly phase: RoundPhase
    readonly view: number
    readonly elapsedMs: number
    readonly adapters: number
    readonly expected: number
  }
  readonly members: readonly MemberStatus[]
  /** Committed rounds, oldest first (the newest MAX_ROUNDS). */
  readonly history: readonly RoundStatus[]
  /** Held-out loss of the base weights (round 0), when evaluated. */
  readonly genesisEvalLoss?: number
  readonly rejections: { readonly byReason: Readonly<Record<string, number>>; readonly recent: readonly RejectionStatus[] }
  readonly stalled?: { readonly round: number; readonly reason: string }
}

/** What StatusTracker reads from a peer. */
export type StatusSource = Pick<FloraPeer, 'peerId' | 'swarmId' | 'head' | 'service' | 'libp2p' | 'multiaddrs' | 'addEventListener' | 'removeEventListener'>

export interface StatusTrackerOptions {
  /** This peer's rank (shown; the peer does not announce its own rank to itself). */
  rank?: number
  /** Rounds the peer runs. */
  rounds?: number
}

export class StatusTracker {
  readonly #peer: StatusSource
  readonly #o: StatusTrackerOptions
  readonly #startedAt = Date.now()
  readonly #members = new Map<string, { rank?: number; lastContributed?: number }>()
  readonly #history: RoundStatus[] = []
  readonly #evals = new Map<number, { loss: number; accuracy?: number }>()
  readonly #byReason: Record<string, number> = {}
  readonly #recent: RejectionStatus[] = []
  readonly #detach: Array<() => void> = []
  #stalled: { round: number; reason: string } | undefined

  constructor(peer: StatusSource, options: StatusTrackerOptions = {}) {
    this.#peer = peer
    this.#o = options
    for (const id of peer.service.members) this.#members.set(id, {})
    this.#on('member:join', (d) => {
      if (!this.#members.has(d.peerId)) this.#members.set(d.peerId, {})
    })
    this.#on('adapter:received', (d) => {
      const m = this.#member(d.peerId)
      m.rank = d.rank
    })
    this.#on('round:complete', (d) => {
      for (const id of d.contributors) {
        if (id === peer.peerId) continue
        this.#member(id).lastContributed = d.round
      }
      this.#history.push({
        round: d.round,
        stateHash: d.stateHash,
        proposer: d.proposer,
        view: d.view,
        contributors: [...d.contributors],
        certifiedBy: [...d.certifiedBy],
        members: d.members.length,
        roundMs: d.metrics.roundMs,
        ...(d.synced != null ? { synced: d.synced } : {}),
        ...(d.metrics.train?.loss != null && Number.isFinite(d.metrics.train.loss) ? { trainLoss: d.metrics.train.loss } : {}),
        at: Date.now(),
      })
      if (this.#history.length > MAX_ROUNDS) this.#history.splice(0, this.#history.length - MAX_ROUNDS)
    })
    this.#on('peer:rejected', (d) => {
      this.#byReason[d.reason] = (this.#byReason[d.reason] ?? 0) + 1
      this.#recent.push({ at: Date.now(), peerId: d.peerId, reason: d.reason, detail: d.detail, ...(d.round != null ? { round: d.round } : {}) })
      if (this.#recent.length > MAX_RECENT_REJECTIONS) this.#recent.splice(0, this.#recent.length - MAX_RECENT_REJECTIONS)
    })
    this.#on('round:stalled', (d) => {
      this.#stalled = { round: d.round, reason: d.reason }
    })
  }

  /** The held-out loss (and token accuracy) of the agreed weights after `round` (0: the base model), evaluated by the app. */
  recordEval(round: number, loss: number, accuracy?: number): void {
    if (!Number.isFinite(loss)) return
    this.#evals.set(round, { loss, ...(accuracy !== undefined && Number.isFinite(accuracy) ? { accuracy } : {}) })
    if (this.#evals.size > MAX_ROUNDS + 1) this.#evals.delete(Math.min(...this.#evals.keys()))
  }

  snapshot(): PeerStatus {
    const peer = this.#peer
    const engine = peer.service.engine
    const progress = engine.progress
    const now = Date.now()
    const connected = new Set(peer.service.members)
    const members: MemberStatus[] = []
    for (const [id, m] of this.#members) {
      const addresses = peer.libp2p.getConnections(peerIdFromString(id)).map((c) => c.remoteAddr.toString())
      members.push({
        peerId: id,
        ...(m.rank != null ? { rank: m.rank } : {}),
        addresses: [...new Set(addresses)],
        connected: connected.has(id),
        ...(m.lastContributed != null ? { lastContributed: m.lastContributed } : {}),
      })
    }
    members.sort((a, b) => Number(b.connected) - Number(a.connected) || (a.peerId < b.peerId ? -1 : 1))
    const genesisEvalLoss = this.#evals.get(0)?.loss
    return {
      version: VERSION,
      peerId: peer.peerId,
      swarmId: peer.swarmId,
      ...(this.#o.rank != null ? { rank: this.#o.rank } : {}),
      ...(this.#o.rounds != null ? { rounds: this.#o.rounds } : {}),
      addresses: peer.multiaddrs(),
      startedAt: this.#startedAt,
      now,
      status: engine.status,
      head: { round: peer.head.round, stateHash: peer.head.hash },
      ...(progress != null && engine.status === 'running'
        ? { current: { round: progress.round, phase: progress.phase, view: progress.view, elapsedMs: now - progress.startedAt, adapters: progress.adapters, expected: progress.expected } }
        : {}),
      members,
      history: this.#history.map((r) => {
        const e = this.#evals.get(r.round)
        return e != null ? { ...r, evalLoss: e.loss, ...(e.accuracy !== undefined ? { evalAccuracy: e.accuracy } : {}) } : r
      }),
      ...(genesisEvalLoss != null ? { genesisEvalLoss } : {}),
      rejections: { byReason: { ...this.#byReason }, recent: [...this.#recent].reverse() },
      ...(this.#stalled != null ? { stalled: this.#stalled } : {}),
    }
  }

  /** Stops following the peer's events. */
  close(): void {
    for (const off of this.#detach.splice(0)) off()
  }

  #member(id: string): { rank?: number; lastContributed?: number } {
    let m = this.#members.get(id)
    if (m == null) this.#members.set(id, (m = {}))
    return m
  }

  #on<K extends keyof PeerEvents>(type: K, handle: (detail: PeerEvents[K]['detail']) => void): void {
    const listener = (evt: PeerEvents[K]): void => handle(evt.detail)
    this.#peer.addEventListener(type, listener)
    this.#detach.push(() => this.#peer.removeEventListener(type, listener))
  }
}
