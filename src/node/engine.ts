/**
 * The round engine: drives one round at a time through training, adapter collection and
 * agreement, and appends every certified round to the chain.
 *
 * Round r on a peer, starting from the certified state S_{r-1} with hash h_{r-1} and the
 * recorded membership M_{r-1}:
 *  1. train: a fresh LoRA of the peer's own rank (or the strategy's warm start) on S_{r-1};
 *  2. announce: store the encoded adapter under its sha256 and gossip a signed
 *     announcement {round r, parent h_{r-1}, author, rank, alpha, samples, hash, size};
 *  3. collect: fetch every announced payload once (author first), decode it strictly,
 *     check it matches its announcement;
 *  4. agree: the RoundMachine (round-machine.ts) runs views with one proposer each over
 *     M_{r-1}; members replay the view's proposal, prevote, precommit on a prevote quorum,
 *     and the round is final on a precommit quorum of M_{r-1} (its certificate);
 *  5. commit: the certified state becomes the head, the record (manifest, certificate,
 *     M_r) is appended to the chain, and round r+1 begins.
 * A peer that cannot gather a quorum (a minority, a peer behind the swarm) never commits:
 * it waits, says so (`stalled`), and follows a certificate when one reaches it.
 *
 * This file is the driver: it performs the machine's effects (publish, fetch, replay,
 * timers, events). It is transport-agnostic: messages come in through `handleMessage`
 * (after the gossipsub validator checked them), go out through `RoundNetwork.publish`,
 * and payloads move through the PayloadFetcher / PayloadStore.
 */
import { TypedEventEmitter, type PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { ClientUpdate } from '../aggregation/types.js'
import { getStrategy } from '../aggregation/index.js'
import { PayloadTransferError, type PayloadTransferErrorCode, type RejectReason } from '../gossip/errors.js'
import type { PayloadFetcher } from '../gossip/fetcher.js'
import {
  messageRound,
  type CommitMessage,
  type GossipMessage,
  type ManifestBody,
  type SignedAnnouncement,
  type SignedManifest,
  type SignedVote,
} from '../gossip/messages.js'
import type { PayloadStore } from '../gossip/payload.js'
import { entryFromAnnouncement, manifestValueHash, signAnnouncement, signManifest, signVote, verifyAnnouncement, verifyVote } from '../gossip/sign.js'
import { decodeAdapter, encodeAdapter } from '../lora/wire.js'
import { loraScaling } from '../lora/scaling.js'
import type { AdapterSet } from '../lora/types.js'
import { payloadCap, type SwarmConfig } from './config.js'
import { EMPTY_MEMBERSHIP, MEMBER_TTL_ROUNDS, memberIds, nextMembership, quorumFor, quorumSize, type Membership } from './membership.js'
import { RoundLog, type RoundRecord } from './round-log.js'
import { RepeatLog } from './repeat-log.js'
import { RoundMachine, type MachineEffect, type MachineEvent, type ProposalInfo } from './round-machine.js'
import { applyRound, type ApplyOptions, type SwarmState } from './state.js'
import { parseSnapshot } from './snapshot.js'
import type { StateDir } from './state-dir.js'
import { verifyCertifiedCommit, type ChainTip } from './state-sync.js'
import { CumulativeUpdate } from './export.js'
import type { SyncHead } from '../gossip/sync.js'
import type { Trainer, TrainResult } from './trainer.js'
import { createHash } from 'node:crypto'
import { appendFileSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs'

export interface RoundMetrics {
  /** Wall time of the round on this peer, from its local start to commit. */
  readonly roundMs: number
  /** Local training time (undefined if training did not finish before the round closed). */
  readonly trainMs?: number
  /** Time this peer spent merging the round's adapters and hashing the new state. */
  readonly mergeMs?: number
  /** Payload bytes this peer fetched for the round. */
  readonly bytesReceived: number
  /** Payload bytes this peer served for the round's payloads (so far). */
  readonly bytesSent: number
  /** Whatever the trainer reported (e.g. loss). */
  readonly train?: Readonly<Record<string, number>>
}

export interface RoundCompleteDetail {
  readonly round: number
  readonly stateHash: string
  readonly parentStateHash: string
  readonly proposer: string
  /** Peer ids merged this round, in canonical order. */
  readonly contributors: readonly string[]
  /** The view the round was decided in (0: its first proposer). */
  readonly view: number
  /** Voters of the precommit certificate. */
  readonly certifiedBy: readonly string[]
  /** Members recorded after this round (M_r). */
  readonly members: readonly string[]
  /** Set when this peer did not take part but caught up: by replaying the round, or from a head snapshot. */
  readonly synced?: 'replay' | 'snapshot'
  readonly metrics: RoundMetrics
}

export interface AdapterReceivedDetail {
  readonly round: number
  readonly peerId: string
  readonly payloadHash: string
  readonly bytes: number
  readonly rank: number
  readonly alpha: number
  readonly samples: number
  /** From the announcement to the payload fetched, decoded and checked. */
  readonly fetchMs: number
}

export interface PeerRejectedDetail {
  readonly peerId: string
  readonly reason: RejectReason
  readonly detail: string
  readonly round?: number
}

export interface RoundStalledDetail {
  readonly round: number
  /** Time since the round started on this peer. */
  readonly waitedMs: number
  /** True when members report rounds this peer has not committed (restarted or late). */
  readonly behind: boolean
  readonly reason: string
}

export interface RoundEngineEvents {
  'round:start': CustomEvent<{ round: number; parentStateHash: string }>
  'round:complete': CustomEvent<RoundCompleteDetail>
  'round:stalled': CustomEvent<RoundStalledDetail>
  'adapter:received': CustomEvent<AdapterReceivedDetail>
  'peer:rejected': CustomEvent<PeerRejectedDetail>
  done: CustomEvent<{ round: number; stateHash: string }>
}

/** What the engine needs from the network. */
export interface RoundNetwork {
  publish(msg: GossipMessage): Promise<void>
  /** Connected peers that passed the swarm handshake (self excluded). */
  members(): ReadonlySet<string>
  /** True once a member is known to be subscribed to the swarm topic (so it gets our gossip). */
  isReady(peerId: string): boolean
  /** The head round a member reported in its handshake (undefined: unknown). */
  reportedHead?(peerId: string): number | undefined
  /** The member showed it is no longer behind (it caught up). */
  forgetReportedHead?(peerId: string): void
  /** This peer caught up with the swarm (tell the members its head). */
  caughtUp?(): void
  /** Payload bytes served so far for a payload hash (for metrics). */
  bytesServed(hash: string): number
  /** Payload bytes fetched for a payload hash (0 if we never fetched it, e.g. our own). */
  bytesFetched(hash: string): number
  /** State sync (src/gossip/sync.ts): a member's head, its certified commits, its head snapshot in chunks. */
  syncHead?(peer: string, signal: AbortSignal): Promise<SyncHead>
  syncCommits?(peer: string, from: number, limit: number, signal: AbortSignal): Promise<CommitMessage[]>
  syncSnapshotChunk?(peer: string, req: { round: number; offset: number; length: number }, signal: AbortSignal): Promise<{ total: number; bytes: Uint8Array } | undefined>
}

/** What a restarted peer brings back from its state dir. */
export interface RestoredState {
  readonly head: SwarmState
  /** Records up to the head's round. */
  readonly records: readonly RoundRecord[]
  /** Certified commits recorded past the head, replayed (or synced) first. */
  readonly pending: readonly CommitMessage[]
  /** The cumulative update since genesis at the head's round, if kept. */
  readonly update?: CumulativeUpdate
}

export interface RoundEngineInit {
  self: string
  privateKey: PrivateKey
  config: SwarmConfig
  swarmId: string
  genesis: SwarmState
  rank: number
  alpha: number
  trainer: Trainer
  network: RoundNetwork
  store: PayloadStore
  fetcher: PayloadFetcher
  log: Logger
  /** Stop after this round (undefined: run until stopped). */
  maxRounds?: number
  /** Merge worker threads (0: the event loop thread). */
  mergeWorkers?: number
  /** Records file (JSON lines) the round log mirrors every round into (`--records`). */
  recordsFile?: string
  /** Persistent state (head snapshots, records, payloads) written after every commit. */
  stateDir?: StateDir
  /** The chain a restarted peer had (from its state dir). */
  restored?: RestoredState
  /** Keep the cumulative update since genesis (for export; costs memory linear in rounds). */
  trackUpdate?: boolean
  /** Rounds of payloads kept in the store for others to fetch and to sync from (default 8). */
  retainRounds?: number
  /** A round not certified this long after it started is reported as stalled (default deadline + 10 grace). */
  stallMs?: number
  /** Committed rounds this peer had before a restart (e.g. from its records file): it must not found a new chain. */
  priorHead?: number
}

interface Contribution {
  readonly adapter: AdapterSet
  readonly payloadHash: string
}

type Effect = MachineEffect<SignedManifest, SignedVote>
type Event = MachineEvent<SignedManifest, SignedVote>

/** Everything about the round in progress; replaced wholesale on commit. */
interface RoundContext {
  readonly round: number
  readonly parent: SwarmState
  readonly members: readonly string[]
  readonly startedAt: number
  readonly ac: AbortController
  readonly machine: RoundMachine<SignedManifest, SignedVote>
  readonly anns: Map<string, SignedAnnouncement>
  readonly adapters: Map<string, Contribution>
  /** When each adapter became usable here (censorship check). */
  readonly heldAt: Map<string, number>
  readonly rejected: Map<string, RejectReason>
  /** Members whose adapter a proposer waits for. */
  readonly expected: Set<string>
  /** Replayed states by value hash. */
  readonly states: Map<string, SwarmState>
  /** When each proposal (by signature) reached us. */
  readonly receivedAt: Map<string, number>
  /** Our own signed votes and proposals of the round (re-published while it stays open). */
  readonly own: GossipMessage[]
  readonly behind: boolean
  /** Founding round: announcements counted so far (new ones restart the stall clock). */
  foundersSeen: number
  ownDone: boolean
  trainMs?: number
  trainMetrics?: Readonly<Record<string, number>>
  wake?: NodeJS.Timeout
  stall?: NodeJS.Timeout
  /** The stall timer fired once and a catch-up was tried before giving up. */
  stallProbed?: boolean
  repeat?: NodeJS.Timeout
}

type Status = 'idle' | 'waiting' | 'running' | 'done' | 'stopped'

/** What a running round is doing: training locally, collecting adapters (and proposing, voting), committing a decided value, or catching up by state sync. */
export type RoundPhase = 'training' | 'collecting' | 'committing' | 'catching-up'

export interface RoundProgress {
  readonly round: number
  readonly phase: RoundPhase
  /** The view (proposer turn) this peer is in. */
  readonly view: number
  /** When the round started here (ms since the epoch). */
  readonly startedAt: number
  /** Adapters held for the round, this peer's own included once trained. */
  readonly adapters: number
  /** Adapters the round waits for (up to its deadline), this peer's own included. */
  readonly expected: number
}

/**
 * Whether a member whose handshake reported head `reported` counts as behind (a restarted
 * peer: not a round participant until it catches up) while our head is `ours`. One round
 * behind is ordinary lag, not a restart: a member greets us again just as we commit a round
 * it is still finishing (a loaded machine, a slow replay) and commits it a moment later.
 * Counting it out dropped its adapter from the next round although nothing was wrong (the
 * 3-peer swarm test failed this way under CI load).
 */
export function handshakeSaysBehind(reported: number | undefined, ours: number): boolean {
  return reported !== undefined && reported < ours - 1
}

export class RoundEngine extends TypedEventEmitter<RoundEngineEvents> {
  readonly #i: RoundEngineInit
  readonly #log: Logger
  readonly records: RoundLog
  #head: SwarmState
  #membership: Membership = EMPTY_MEMBERSHIP
  #ctx: RoundContext | undefined
  #status: Status = 'idle'
  readonly #stop = new AbortController()
  /** Validated messages for future rounds, replayed when their round begins. */
  readonly #stash = new Map<number, GossipMessage[]>()
  /** Decoded adapters by payload hash (with their round, for pruning). */
  readonly #decoded = new Map<string, { adapter: AdapterSet; round: number }>()
  readonly #malformed = new Map<string, string>()
  readonly #equalRanks: boolean
  readonly #timers = new Set<NodeJS.Timeout>()
  /** Time the merge + state hash of a replayed state took, by its hash (for metrics). */
  readonly #mergeMs = new Map<string, number>()
  /** Rejections logged once per (peer, reason) and window, then counted. */
  readonly #rejectLog = new RepeatLog()
  /** Last round whose clipped contributions were logged (a round is replayed more than once). */
  #clipLogged = 0
  /** Our commit message for the last committed round (repairs peers one round behind). */
  #lastCommit: CommitMessage | undefined
  #lastRepairAt = 0
  #wakeWaiting: (() => void) | undefined
  readonly #done: Promise<void>
  #resolveDone!: () => void
  /** Round in which a caught-up peer was last waited for (caughtUp). */
  readonly #caughtUpAt = new Map<string, number>()
  /** Round starts at which this peer, back from a restart or a catch-up, still tells the members its head (#beginRound). */
  #rejoinGreets = 0
  /** Peers that announced, by round (in time or late): their adapters are waited for next round. */
  readonly #participants = new Map<number, Set<string>>()
  /** Peers heard from (announced or voted), by round: a proposer not heard from last round is skipped. */
  readonly #heard = new Map<number, Set<string>>()
  /** Certified commits from the state dir past its head snapshot (replayed first). */
  #pending: CommitMessage[] = []
  #syncing: Promise<void> | undefined
  #lastSyncAt = 0
  /** Members whose sync data did not verify: never asked again. */
  readonly #syncBad = new Set<string>()
  /** The cumulative update since genesis (undefined: not tracked, or unknown after a snapshot). */
  #update: CumulativeUpdate | undefined

  constructor(init: RoundEngineInit) {
    super()
    this.#i = init
    this.#log = init.log
    this.#head = init.restored?.head ?? init.genesis
    this.records = new RoundLog({ file: init.stateDir?.recordsFile, records: init.restored?.records, mirror: init.recordsFile })
    const lastRecord = this.records.last
    if (lastRecord != null) {
      if (lastRecord.round !== this.#head.round || lastRecord.stateHash !== this.#head.hash) throw new Error(`restored head (round ${this.#head.round}) does not match the last record (round ${lastRecord.round})`)
      this.#membership = lastRecord.members
    }
    this.#pending = [...(init.restored?.pending ?? [])]
    if (init.restored != null || (init.priorHead ?? 0) > 0) this.#rejoinGreets = MEMBER_TTL_ROUNDS
    if (init.trackUpdate === true) this.#update = init.restored != null && init.restored.head.round > 0 ? init.restored.update : new CumulativeUpdate()
    this.#equalRanks = getStrategy(init.config.strategy).requiresEqualRanks
    this.#done = new Promise((resolve) => {
      this.#resolveDone = resolve
    })
  }

  /** The last committed state. */
  get head(): SwarmState {
    return this.#head
  }

  /** The membership recorded by the last committed round (empty before round 1). */
  get membership(): Membership {
    return this.#membership
  }

  /** True while members report rounds this peer has not committed (it is catching up). */
  get behind(): boolean {
    return this.#swarmHead() > this.#head.round || this.#ctx?.behind === true
  }

  /** The round in progress (head + 1). */
  get round(): number {
    return this.#head.round + 1
  }

  get status(): Status {
    return this.#status
  }

  /** Where the running round stands (for status pages); undefined between rounds. */
  get progress(): RoundProgress | undefined {
    const ctx = this.#ctx
    if (ctx == null || ctx.ac.signal.aborted) return undefined
    const phase: RoundPhase = ctx.behind ? 'catching-up' : ctx.machine.decided ? 'committing' : !ctx.ownDone ? 'training' : 'collecting'
    const others = [...ctx.adapters.keys()].filter((p) => p !== this.#i.self).length
    return {
      round: ctx.round,
      phase,
      view: ctx.machine.view,
      startedAt: ctx.startedAt,
      adapters: others + (ctx.ownDone && !ctx.behind ? 1 : 0),
      expected: ctx.expected.size,
    }
  }

  /** Resolves when `maxRounds` rounds are committed, or the engine stops. */
  whenDone(): Promise<void> {
    return this.#done
  }

  /** Waits for `minPeers` ready members, then runs rounds. Resolves once round 1 has started. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.#status !== 'idle') return
    // Restarted on a state dir that already holds every round asked for: nothing to do.
    if (this.#i.maxRounds !== undefined && this.#head.round >= this.#i.maxRounds && this.#pending.length === 0) {
      this.#status = 'running'
      this.#finishIfDone()
      return
    }
    this.#status = 'waiting'
    const minPeers = this.#i.config.round.minPeers
    this.#log.info({ minPeers, round: this.round }, 'waiting for swarm members')
    const wake = (): void => this.#wakeWaiting?.()
    signal?.addEventListener('abort', wake)
    this.#stop.signal.addEventListener('abort', wake)
    try {
      // Woken by membersChanged() (handshakes, subscriptions, heartbeats) and by aborts.
      while (this.#status === 'waiting') {
        if (signal?.aborted === true) throw signal.reason
        const ready = this.#active().size + 1
        if (ready >= minPeers) break
        // In a large swarm some pairs' direct gossip streams come up late (or only through
        // the mesh): start once minPeers members passed the handshake and all but a tenth
        // of them are ready; gossip reaches the others through the mesh and is repeated.
        if (this.#handshaken().length + 1 >= minPeers && ready >= minPeers - Math.floor(minPeers / 10)) break
        // Members report rounds we have not committed: we are behind; start (as a follower) at once.
        if (this.#swarmHead() > this.#head.round) break
        // A member already announced its adapter for our next round: the swarm has formed (it
        // counted minPeers members ready) and the round's clock runs. Waiting on for our own
        // count (gossip streams that come up late on a loaded machine) would start our round
        // minutes after theirs, in views theirs left long ago.
        if (this.#memberStartedRound()) break
        await new Promise<void>((resolve) => {
          this.#wakeWaiting = resolve
        })
        this.#wakeWaiting = undefined
      }
    } finally {
      signal?.removeEventListener('abort', wake)
      this.#stop.signal.removeEventListener('abort', wake)
    }
    if (this.#status !== 'waiting') return
    this.#status = 'running'
    this.#beginRound()
  }

  /** Aborts training, fetches and timers. The engine cannot be restarted. */
  stop(): void {
    if (this.#status === 'stopped') return
    this.#status = 'stopped'
    this.#stop.abort(new Error('engine stopped'))
    this.#rejectLog.flush()
    this.#closeCtx()
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
    this.#wakeWaiting?.()
    this.#resolveDone()
  }

  /** Call when the member set or topic subscriptions change. */
  membersChanged(): void {
    this.#wakeWaiting?.()
    const ctx = this.#ctx
    if (ctx == null || ctx.ac.signal.aborted) return
    const active = this.#active()
    for (const p of [...ctx.expected]) if (p !== this.#i.self && !active.has(p) && !ctx.anns.has(p)) ctx.expected.delete(p)
    // A member that (re)connected mid-round takes part in it.
    const observed = this.#participants.get(ctx.round - 1)
    for (const p of active) if (this.#waitsFor(p, ctx.members, observed)) ctx.expected.add(p)
    this.#feed(ctx, { type: 'absent', now: Date.now(), peers: this.#absent(ctx) })
    this.#feedCollection(ctx)
  }

  /** A member says (in its handshake) that it committed rounds we have not: catch up. */
  aheadReported(peer: string, round: number): void {
    if (round <= this.#head.round || this.#status !== 'running') return
    this.#requestSync(`member ${peer.slice(-8)} reports round ${round} committed`)
  }

  /**
   * A peer says (in a fresh handshake) that it caught up with our head: it is about to
   * train the running round, so wait for its adapter in it (up to the deadline, as for any
   * member). Once per peer per MEMBER_TTL_ROUNDS rounds, so a peer that says so and never
   * delivers cannot hold every round to its deadline; a round decided before its deadline
   * was not held, and does not count (#commit).
   */
  caughtUp(peer: string): void {
    const ctx = this.#ctx
    if (ctx == null || ctx.ac.signal.aborted || ctx.machine.founding || peer === this.#i.self) return
    const last = this.#caughtUpAt.get(peer)
    if (last !== undefined && ctx.round - last < MEMBER_TTL_ROUNDS) return
    if (!this.#active().has(peer) || ctx.expected.has(peer)) return
    this.#caughtUpAt.set(peer, ctx.round)
    if (this.#caughtUpAt.size > 10_000) this.#caughtUpAt.clear()
    ctx.expected.add(peer)
    this.#log.debug({ round: ctx.round, peer }, 'a peer caught up: waiting for its adapter this round')
    this.#feedCollection(ctx)
  }

  /**
   * Members that take part in rounds: connected, past the handshake, and subscribed to the
   * swarm topic with gossip flowing both ways. A peer that finished its rounds unsubscribes.
   */
  #active(): Set<string> {
    const net = this.#i.network
    return new Set([...net.members()].filter((p) => net.isReady(p) && !this.#reportsBehind(p)))
  }

  /**
   * Whether a round waits (up to its deadline) for an active peer's adapter. Founding
   * round: every active peer. Later: the peers that announced an adapter in the previous
   * round (in time or late), so a member that sat a round out (silent, diverged, stuck) is
   * not waited for in the next (its adapter still gets in if it arrives before the
   * proposal; a peer that caught up says so and is waited for, see caughtUp). With no
   * record of the previous round (this peer restarted or caught up): the recorded members.
   */
  #waitsFor(peer: string, members: readonly string[], lastRound: ReadonlySet<string> | undefined): boolean {
    if (members.length === 0) return true
    if (lastRound != null && lastRound.size > 0) return lastRound.has(peer)
    return members.includes(peer)
  }

  /** Peers that passed the swarm handshake and are not behind (founding candidates). */
  #handshaken(): string[] {
    return [...this.#i.network.members()].filter((p) => !this.#reportsBehind(p))
  }

  /** Whether a handshaken member's announcement for our next round is stashed. */
  #memberStartedRound(): boolean {
    const members = this.#i.network.members()
    return (this.#stash.get(this.round) ?? []).some((m) => m.kind === 'announce' && members.has(m.body.author))
  }

  /** A member that said in its handshake that it is behind (see handshakeSaysBehind). */
  #reportsBehind(peer: string): boolean {
    return handshakeSaysBehind(this.#i.network.reportedHead?.(peer), this.#head.round)
  }

  /** The highest head round any connected member reported. */
  #swarmHead(): number {
    let max = Math.max(this.#i.priorHead ?? 0, this.#pending.at(-1)?.manifest.body.round ?? 0)
    for (const p of this.#i.network.members()) max = Math.max(max, this.#i.network.reportedHead?.(p) ?? 0)
    return max
  }

  /**
   * Proposers whose turn is skipped: members not connected and ready (or behind), and
   * members we did not hear from (no announcement, no vote) in the previous round while
   * we heard from others: a silent member first in the order costs one round, not every one.
   */
  #absent(ctx: RoundContext): string[] {
    const active = this.#active()
    const heard = this.#heard.get(ctx.round - 1)
    const silent = (p: string): boolean => heard != null && heard.size > 0 && !heard.has(p) && !(this.#heard.get(ctx.round)?.has(p) ?? false)
    return ctx.machine.order().filter((p) => p !== this.#i.self && (!active.has(p) || silent(p)))
  }

  /**
   * Round-context check for the gossip validator, before any signature is checked: is this
   * message's round in the window we accept? Announcements, proposals and votes: the
   * current round and the next; commits: the current round and the two after it.
   */
  checkContext(msg: GossipMessage): { action: 'ignore' | 'reject'; reason: RejectReason; detail: string } | undefined {
    const cur = this.round
    const r = messageRound(msg)
    if (r === cur - 1 && msg.kind !== 'commit') this.#repair()
    const hi = msg.kind === 'commit' ? cur + 2 : cur + 1
    // A commit past our round, or anything two rounds ahead: the swarm went on without us
    // (we were partitioned, paused or slow). Catch up (what we fetch is verified).
    if ((msg.kind === 'commit' && r > cur) || r > cur + 1) this.#requestSync(`a ${msg.kind} for round ${r} arrived while this peer is in round ${cur}`)
    // A late announcement or vote for the round we just committed: its author takes part (checked before it counts).
    if (r === cur - 1 && (msg.kind === 'announce' || msg.kind === 'vote')) {
      const who = msg.kind === 'announce' ? msg.body.author : msg.body.voter
      if (who !== this.#i.self && !(this.#participants.get(r)?.has(who) ?? false)) {
        void (msg.kind === 'announce' ? verifyAnnouncement(msg) : verifyVote(msg)).then((ok) => {
          if (!ok) return
          if (msg.kind === 'announce') this.#noteParticipant(r, who)
          else {
            this.#noteHeard(r, who)
            this.#followsAlong(r, who)
          }
        })
      }
    }
    if (r < cur || r > hi) {
      return { action: 'ignore', reason: 'round-window', detail: `${msg.kind} for round ${r}, we accept ${cur}..${hi}` }
    }
    return this.#checkShape(msg)
  }

  /**
   * The largest gossip message an honest member of a swarm this size sends: a manifest or
   * commit lists at most one entry and two votes per member (~1.8 KB); 4 KiB per member
   * that could be in the round, plus 16 KiB, leaves room. A 2 MB manifest in a swarm of
   * three is refused before it is parsed.
   */
  maxMessageBytes(): number {
    return 16 * 1024 + this.#mostInRound() * 4096
  }

  /**
   * At most how many peers can be in a round: twice the peers this one knows of (recorded
   * members, connected members, this round's announcers, itself) plus 8. Generous, since a
   * peer connected to part of a large swarm may not know every author yet (the founding
   * round, newcomers); a 4,096-entry manifest in a swarm of three is far past it.
   */
  #mostInRound(): number {
    const known = new Set([...memberIds(this.#membership), ...this.#i.network.members(), ...(this.#ctx?.anns.keys() ?? []), this.#i.self])
    return 2 * known.size + 8
  }

  /**
   * Cheap structural checks of a round-r message against the chain we hold (before any
   * signature is checked, let alone a replay): a manifest or certificate names no more
   * peers than could be in the round (#mostInRound), and a
   * fresh proposal for the round we are in comes from the proposer of its view.
   */
  #checkShape(msg: GossipMessage): { action: 'reject'; reason: RejectReason; detail: string } | undefined {
    if (msg.kind !== 'manifest' && msg.kind !== 'commit') return undefined
    const body = msg.kind === 'manifest' ? msg.body : msg.manifest.body
    const ctx = this.#ctx
    // Sizes: for the running round and the next (whose members are at most ours plus the
    // running round's authors, all of them connected or recorded).
    if (ctx == null || (body.round !== ctx.round && body.round !== ctx.round + 1)) return undefined
    const most = this.#mostInRound()
    if (body.entries.length > most) {
      return { action: 'reject', reason: 'too-many-entries', detail: `manifest for round ${body.round} lists ${body.entries.length} adapters, more than the ${most} this peer allows for a swarm its size` }
    }
    const votes = msg.kind === 'manifest' ? msg.body.justify.length : msg.certificate.length
    if (votes > most) {
      return { action: 'reject', reason: 'too-many-entries', detail: `${msg.kind} for round ${body.round} carries ${votes} votes, more than the ${most} this peer allows for a swarm its size` }
    }
    // Turn: only on our own chain (same round, same parent), where the order is ours too.
    if (msg.kind === 'manifest' && !ctx.machine.founding && body.round === ctx.round && body.parentStateHash === ctx.parent.hash) {
      const turn = ctx.machine.proposerOf(body.view)
      if (turn !== body.proposer) {
        return { action: 'reject', reason: 'not-your-turn', detail: `proposal for round ${body.round} view ${body.view} by ${body.proposer}, whose proposer is ${turn}` }
      }
    }
    return undefined
  }

  /** A peer is still in the round we committed last: send it our certificate (at most once per grace). */
  #repair(): void {
    const commit = this.#lastCommit
    const now = Date.now()
    if (commit == null || now - this.#lastRepairAt < this.#i.config.round.graceMs) return
    this.#lastRepairAt = now
    void this.#i.network.publish(commit).catch(() => {})
  }

  /** A message accepted by the gossip validator. */
  handleMessage(msg: GossipMessage): void {
    if (this.#status === 'stopped') return
    const r = messageRound(msg)
    const ctx = this.#ctx
    if (ctx == null || r !== ctx.round) {
      if (r >= this.round) {
        let list = this.#stash.get(r)
        if (list == null) this.#stash.set(r, (list = []))
        if (list.length < 10_000) list.push(msg)
        if (msg.kind === 'announce' && this.#status === 'waiting') this.#wakeWaiting?.()
      }
      return
    }
    this.#dispatch(ctx, msg)
  }

  #dispatch(ctx: RoundContext, msg: GossipMessage): void {
    const now = Date.now()
    switch (msg.kind) {
      case 'announce':
        void this.#onAnnouncement(ctx, msg)
        return
      case 'manifest':
        if (!ctx.receivedAt.has(msg.sig)) {
          ctx.receivedAt.set(msg.sig, now)
          this.#log.debug({ round: ctx.round, view: msg.body.view, proposer: msg.body.proposer.slice(-8), entries: msg.body.entries.length, ourView: ctx.machine.view, waitedMs: now - ctx.startedAt }, 'proposal received')
        }
        this.#feed(ctx, { type: 'proposal', now, proposal: proposalInfo(msg) })
        return
      case 'vote':
        this.#noteHeard(msg.body.round, msg.body.voter)
        this.#feed(ctx, { type: 'vote', now, vote: { ...msg.body, ref: msg } })
        return
      case 'commit': {
        // Certified elsewhere: count its precommits (member check in the machine) and replay.
        if (!ctx.receivedAt.has(msg.manifest.sig)) ctx.receivedAt.set(msg.manifest.sig, now)
        for (const v of msg.certificate) this.#feed(ctx, { type: 'vote', now, vote: { ...v.body, ref: v } })
        this.#feed(ctx, { type: 'proposal', now, proposal: proposalInfo(msg.manifest), certified: true })
        return
      }
    }
  }

  // ---------------------------------------------------------------------------------
  // Round lifecycle

  #beginRound(): void {
    const round = this.round
    const parent = this.#head
    const { config, self } = this.#i
    const members = memberIds(this.#membership)
    const active = this.#active()
    const swarmHead = this.#swarmHead()
    // Someone already committed the round we are starting: we are behind (restarted or
    // late) and must not found or vote on a chain of our own.
    const behind = swarmHead >= round
    const expected = new Set<string>([self])
    // Recorded members, and peers that took part in the previous round (announced or voted,
    // in time or late): a restarted or new peer trains along but starts each round a little
    // after the others, and must be waited for once to get in.
    const trainedAlong = this.#participants.get(round - 1)
    for (const p of active) if (this.#waitsFor(p, members, trainedAlong)) expected.add(p)
    for (const r of this.#participants.keys()) if (r < round - 1) this.#participants.delete(r)
    for (const r of this.#heard.keys()) if (r < round - 1) this.#heard.delete(r)
    const now = Date.now()
    const machine = new RoundMachine<SignedManifest, SignedVote>({
      round,
      self,
      members,
      quorum: config.round.quorum,
      minPeers: config.round.minPeers,
      startedAt: now,
      deadlineMs: config.round.deadlineMs,
      graceMs: config.round.graceMs,
      skewMs: Math.floor(config.round.graceMs / 2),
      canVote: !behind,
    })
    const ctx: RoundContext = {
      round,
      parent,
      members,
      startedAt: now,
      ac: new AbortController(),
      machine,
      anns: new Map(),
      adapters: new Map(),
      heldAt: new Map(),
      rejected: new Map(),
      expected,
      states: new Map(),
      receivedAt: new Map(),
      own: [],
      behind,
      foundersSeen: 0,
      ownDone: behind,
    }
    this.#ctx = ctx
    this.#log.info({ round, parent: parent.hash.slice(0, 12), members: members.length, expected: expected.size, behind }, 'round start')
    if (behind) {
      this.#log.warn({ round, swarmHead }, `members report round ${swarmHead} committed; this peer is at round ${parent.round} (restarted or late): catching up by state sync before it trains, proposes or votes`)
      this.#requestSync(`members report round ${swarmHead}`)
      this.#rejoinGreets = MEMBER_TTL_ROUNDS
    } else if (this.#rejoinGreets > 0) {
      // Back from a restart or a catch-up: tell the members our head as we start training,
      // at every round start until an adapter of ours is merged (at most MEMBER_TTL_ROUNDS
      // rounds); a member whose head is ours waits for our adapter (caughtUp, once per
      // MEMBER_TTL_ROUNDS). Told only when a catch-up ended, members that had committed
      // another round meanwhile saw a stale head, and members met later heard nothing: the
      // restarted peer, which starts each round a little after them, was not waited for and
      // its adapter came tens of ms after the proposal, round after round (scripts/soak.ts).
      if (this.records.last?.contributors.includes(self) === true) this.#rejoinGreets = 0
      else {
        this.#rejoinGreets--
        this.#i.network.caughtUp?.()
      }
    }
    this.safeDispatchEvent('round:start', { detail: { round, parentStateHash: parent.hash } })
    this.#armStall(ctx)
    ctx.repeat = setInterval(() => this.#republish(ctx), config.round.graceMs)
    ctx.repeat.unref()
    if (!behind) void this.#train(ctx)
    this.#feed(ctx, { type: 'candidates', now, peers: [...expected, ...(members.length === 0 ? this.#handshaken() : [])] })
    this.#feed(ctx, { type: 'absent', now, peers: this.#absent(ctx) })
    const stashed = this.#stash.get(round) ?? []
    this.#stash.delete(round)
    for (const m of stashed) this.#dispatch(ctx, m)
    this.#feedCollection(ctx)
  }

  /**
   * (Re)starts the round's stall clock. The founding round restarts it whenever another
   * founder turns up: peers of a large swarm start over minutes, and round 1 can only be
   * certified once enough of them are there.
   */
  #armStall(ctx: RoundContext): void {
    const { config } = this.#i
    if (ctx.stall != null) clearTimeout(ctx.stall)
    ctx.stall = setTimeout(() => this.#stalled(ctx), this.#i.stallMs ?? config.round.deadlineMs + 10 * config.round.graceMs)
    ctx.stall.unref()
  }

  #stalled(ctx: RoundContext): void {
    if (ctx !== this.#ctx || ctx.ac.signal.aborted) return
    // Before giving up: did the swarm go on without us (we lost our connections, or missed
    // the certificate)? Ask the members we can reach, and give the round one more stall period.
    if (ctx.stallProbed !== true && this.#i.network.members().size > 0) {
      ctx.stallProbed = true
      this.#log.warn({ round: ctx.round }, 'round not certified in time: asking members whether the swarm went on')
      this.#lastSyncAt = 0
      this.#requestSync(`round ${ctx.round} is not certified after the stall timeout`)
      this.#armStall(ctx)
      return
    }
    const waitedMs = Date.now() - ctx.startedAt
    const swarmHead = this.#swarmHead()
    const behind = ctx.behind || swarmHead >= ctx.round
    let reason: string
    if (behind) {
      reason =
        swarmHead > ctx.parent.round
          ? `this peer is behind the swarm (members report round ${swarmHead} committed, this peer has ${ctx.parent.round}) and could not catch up from any member`
          : `this peer was behind the swarm (at round ${ctx.parent.round}) and no member that could catch it up is connected now (${this.#i.network.members().size} connected)`
    } else {
      const { needed, eligible } = quorumFor(ctx.members, [...ctx.anns.keys()], this.#i.config.round.quorum, this.#i.config.round.minPeers)
      const reachable = [...eligible].filter((p) => p === this.#i.self || this.#active().has(p)).length
      reason =
        ctx.members.length > 0
          ? `no certificate for round ${ctx.round}: it needs votes of ${needed} of the ${ctx.members.length} recorded members, ${reachable} are connected here`
          : `no certificate for round ${ctx.round} (founding): it needs votes of ${needed} founding members, ${reachable} are connected here`
    }
    this.#log.error({ round: ctx.round, waitedMs }, `stalled: ${reason}`)
    this.safeDispatchEvent('round:stalled', { detail: { round: ctx.round, waitedMs, behind, reason } })
  }

  /** gossipsub is best effort: say our round messages again while the round stays open. */
  #republish(ctx: RoundContext): void {
    if (ctx !== this.#ctx || ctx.ac.signal.aborted) return
    if (ctx.behind) this.#requestSync('still behind the swarm')
    const own = ctx.anns.get(this.#i.self)
    for (const m of [...(own != null ? [own] : []), ...ctx.own.slice(-4)]) void this.#i.network.publish(m).catch(() => {})
  }

  #closeCtx(): void {
    const ctx = this.#ctx
    if (ctx == null) return
    ctx.ac.abort(new Error(`round ${ctx.round} closed`))
    if (ctx.wake != null) clearTimeout(ctx.wake)
    if (ctx.stall != null) clearTimeout(ctx.stall)
    if (ctx.repeat != null) clearInterval(ctx.repeat)
  }

  /** Whether we hold (or refused) the adapter of every member we expect: tells the machine. */
  #feedCollection(ctx: RoundContext): void {
    let complete = ctx.ownDone
    for (const p of new Set([...ctx.expected, ...ctx.anns.keys()])) {
      if (p === this.#i.self) continue
      if (!ctx.adapters.has(p) && !ctx.rejected.has(p)) complete = false
    }
    // Founding round: not complete before the adapters of minPeers founders (ours included)
    // are in, whatever this peer expects: a peer that started round 1 on a member's
    // announcement may not have met every founder yet, and proposing as soon as the few it
    // knows are in founds the chain without the rest (the proposal waits for the deadline).
    if (ctx.machine.founding) {
      const held = [...ctx.adapters.keys()].filter((p) => p !== this.#i.self).length + (ctx.ownDone ? 1 : 0)
      if (held < this.#i.config.round.minPeers) complete = false
    }
    const now = Date.now()
    // Founding round: announcers that passed the swarm handshake with us take part, and so
    // do announcers whose adapter we fetched and checked (relayed to us by members: in a
    // large swarm not every pair of founders connects, and candidate sets that differ make
    // founding turns differ); a stranger that announced nothing checkable does not.
    if (ctx.machine.founding) {
      const members = this.#i.network.members()
      const before = ctx.machine.order().length
      this.#feed(ctx, { type: 'candidates', now, peers: [...this.#handshaken(), ...[...ctx.anns.keys()].filter((p) => members.has(p) || ctx.adapters.has(p))] })
      // Founders turn up (and announce) over minutes in a large swarm: that is progress.
      if (ctx.machine.order().length > before || ctx.anns.size > ctx.foundersSeen) this.#armStall(ctx)
      ctx.foundersSeen = ctx.anns.size
    }
    this.#feed(ctx, { type: 'collection', now, complete })
  }

  // ---------------------------------------------------------------------------------
  // The machine's effects

  #feed(ctx: RoundContext, event: Event): void {
    if (ctx !== this.#ctx || ctx.ac.signal.aborted || this.#status === 'stopped') return
    for (const e of ctx.machine.handle(event)) this.#perform(ctx, e)
  }

  #perform(ctx: RoundContext, e: Effect): void {
    if (ctx !== this.#ctx || ctx.ac.signal.aborted) return
    switch (e.type) {
      case 'wake': {
        if (ctx.wake != null) clearTimeout(ctx.wake)
        ctx.wake = setTimeout(() => this.#feed(ctx, { type: 'tick', now: Date.now() }), Math.max(0, e.at - Date.now()))
        ctx.wake.unref()
        return
      }
      case 'reject':
        this.#reject(e.peer, e.reason, e.detail, ctx.round)
        return
      case 'propose':
        void this.#propose(ctx, e.view, e.reuse)
        return
      case 'verify':
        void this.#verify(ctx, e.proposal)
        return
      case 'vote':
        void this.#vote(ctx, e.phase, e.view, e.valueHash, e.newStateHash)
        return
      case 'commit':
        this.#commit(ctx, e.proposal, e.certificate, e.view)
        return
    }
  }

  async #vote(ctx: RoundContext, phase: 'prevote' | 'precommit', view: number, valueHash: string, newStateHash: string): Promise<void> {
    const signed = await signVote(this.#i.privateKey, {
      swarmId: this.#i.swarmId,
      round: ctx.round,
      view,
      phase,
      voter: this.#i.self,
      parentStateHash: ctx.parent.hash,
      newStateHash,
      valueHash,
    })
    if (ctx !== this.#ctx || ctx.ac.signal.aborted) return
    this.#log.debug({ round: ctx.round, view, phase, value: valueHash.slice(0, 12) }, 'vote')
    ctx.own.push(signed)
    await this.#i.network.publish(signed).catch((err: Error) => {
      this.#log.warn({ round: ctx.round, err: err.message }, 'publishing a vote failed')
    })
    this.#feed(ctx, { type: 'vote', now: Date.now(), vote: { ...signed.body, ref: signed } })
  }

  async #propose(ctx: RoundContext, view: number, reuse: { proposal: SignedManifest; lockView: number; justify: readonly SignedVote[] } | undefined): Promise<void> {
    const { self } = this.#i
    let body: ManifestBody
    if (reuse != null) {
      body = { ...reuse.proposal.body, view, proposer: self, lockView: reuse.lockView, justify: [...reuse.justify] }
      this.#log.info({ round: ctx.round, view, lockView: reuse.lockView }, 're-proposing the locked value')
    } else {
      const authors = [...ctx.adapters.keys()].filter((a) => ctx.anns.has(a)).sort()
      // A founding proposal with fewer authors than the founding quorum can never be
      // certified: proposing it would only cost every peer a replay. Let a later view propose.
      const founders = quorumSize(Math.max(1, this.#i.config.round.minPeers), this.#i.config.round.quorum)
      if (ctx.machine.founding && authors.length < founders) {
        this.#log.debug({ round: ctx.round, view, held: authors.length, founders }, 'not proposing: fewer adapters than the founding quorum')
        return
      }
      const entries = authors.map((a) => entryFromAnnouncement(ctx.anns.get(a) as SignedAnnouncement))
      const updates: ClientUpdate[] = authors.map((a) => ({
        id: a,
        samples: (ctx.anns.get(a) as SignedAnnouncement).body.samples,
        adapter: (ctx.adapters.get(a) as Contribution).adapter,
      }))
      this.#log.info({ round: ctx.round, view, entries: entries.length, waitedMs: Date.now() - ctx.startedAt }, 'proposing round manifest')
      let next: SwarmState
      try {
        next = await this.#merge(ctx.parent, updates)
      } catch (err) {
        this.#log.error({ round: ctx.round, err: (err as Error).message }, 'could not compute our manifest')
        return
      }
      body = {
        swarmId: this.#i.swarmId,
        round: ctx.round,
        view,
        parentStateHash: ctx.parent.hash,
        proposer: self,
        entries,
        newStateHash: next.hash,
        lockView: -1,
        justify: [],
      }
      ctx.states.set(manifestValueHash(body), next)
    }
    const signed = await signManifest(this.#i.privateKey, body)
    if (ctx !== this.#ctx || ctx.ac.signal.aborted) return
    ctx.own.push(signed)
    ctx.receivedAt.set(signed.sig, Date.now())
    await this.#i.network.publish(signed).catch((err: Error) => {
      this.#log.warn({ round: ctx.round, err: err.message }, 'publishing the manifest failed')
    })
    this.#feed(ctx, { type: 'proposal', now: Date.now(), proposal: proposalInfo(signed) })
  }

  /** Merge options: workers and the swarm's contribution bounds (clipped contributions are logged once per round). */
  #applyOptions(round: number): ApplyOptions {
    return {
      workers: this.#i.mergeWorkers,
      bounds: this.#i.config.contribution,
      onBounded: (report) => {
        if (this.#clipLogged >= round) return
        const clipped = report.filter((r) => r.clipped.length > 0)
        if (clipped.length === 0) return
        this.#clipLogged = round
        for (const c of clipped) {
          const worst = c.clipped.reduce((a, b) => (b.norm / b.bound > a.norm / a.bound ? b : a))
          this.#log.warn(
            { round, contributor: c.id, modules: c.clipped.length, worstModule: worst.module, ratio: Number((worst.norm / worst.bound).toPrecision(3)) },
            'contribution clipped to the swarm\'s per-module norm bound',
          )
        }
      },
    }
  }

  /** The round's merge on `parent` (timed, for the round's metrics). */
  async #merge(parent: SwarmState, updates: readonly ClientUpdate[]): Promise<SwarmState> {
    const t0 = performance.now()
    const next = await applyRound(parent, this.#i.config.strategy, this.#i.config.targets, updates, this.#applyOptions(parent.round + 1))
    this.#mergeMs.set(next.hash, performance.now() - t0)
    return next
  }

  /** Replays a proposal on the round's parent: fetch its payloads, merge, compare hashes. */
  async #verify(ctx: RoundContext, m: SignedManifest): Promise<void> {
    const b = m.body
    const value = manifestValueHash(b)
    const done = (ok: boolean, detail?: string, censored?: string[]): void =>
      this.#feed(ctx, { type: 'verified', now: Date.now(), id: m.sig, ok, detail, censored })
    const censoredBy = (): string[] => {
      if (b.lockView >= 0) return []
      const received = ctx.receivedAt.get(m.sig) ?? Date.now()
      const included = new Set(b.entries.map((e) => e.peerId))
      const grace = this.#i.config.round.graceMs
      return [...ctx.heldAt].filter(([author, at]) => !included.has(author) && at <= received - grace).map(([author]) => author).sort()
    }
    const known = ctx.states.get(value)
    if (known != null) {
      done(known.hash === b.newStateHash, undefined, censoredBy())
      return
    }
    if (b.parentStateHash !== ctx.parent.hash) {
      done(false, `manifest for round ${b.round} builds on ${b.parentStateHash.slice(0, 12)}, agreed parent is ${ctx.parent.hash.slice(0, 12)}`)
      return
    }
    const signal = ctx.ac.signal
    const t0 = Date.now()
    const results = await Promise.all(
      b.entries.map(async (e) => {
        const own = ctx.adapters.get(e.peerId)
        if (own != null && own.payloadHash === e.payloadHash) return { ok: true as const, adapter: own.adapter }
        const got = await this.#obtain(ctx, e.payloadHash, e.payloadSize, [e.peerId, b.proposer], signal)
        if (!got.ok) return got
        const check = this.#checkDecoded(got.adapter, e)
        return check.ok ? got : check
      }),
    )
    if (signal.aborted) return
    const updates: ClientUpdate[] = []
    for (let i = 0; i < results.length; i++) {
      const res = results[i]
      const e = b.entries[i]
      if (!res.ok) {
        done(false, `manifest for round ${b.round} includes the ${res.reason === 'payload-unavailable' ? 'unavailable' : 'bad'} payload of ${e.peerId}: ${res.detail}`)
        return
      }
      updates.push({ id: e.peerId, samples: e.samples, adapter: res.adapter })
    }
    let next: SwarmState
    try {
      next = await this.#merge(ctx.parent, updates)
    } catch (err) {
      done(false, `manifest for round ${b.round} cannot be aggregated: ${(err as Error).message}`)
      return
    }
    if (next.hash !== b.newStateHash) {
      done(false, `manifest for round ${b.round} claims state ${b.newStateHash.slice(0, 12)}, replay gives ${next.hash.slice(0, 12)}`)
      return
    }
    ctx.states.set(value, next)
    this.#log.debug({ round: ctx.round, view: b.view, entries: b.entries.length, ms: Date.now() - t0, ourView: ctx.machine.view }, 'proposal replayed')
    done(true, undefined, censoredBy())
  }

  #commit(ctx: RoundContext, m: SignedManifest, certificate: readonly SignedVote[], view: number): void {
    const next = ctx.states.get(manifestValueHash(m.body))
    if (next == null) throw new Error(`round ${ctx.round}: committing a value that was never replayed`)
    this.#closeCtx()
    this.#ctx = undefined
    // Decided before its deadline: no caught-up peer held this round, so the peers it waited
    // for may be waited for again (caughtUp). Counted, a wait spent where it could not help
    // (a peer that said so while still replaying rounds, or once this round was proposed)
    // kept the round it did train from waiting for it, and its adapter came tens of ms after
    // that round's proposal (scripts/soak.ts).
    if (Date.now() - ctx.startedAt < this.#i.config.round.deadlineMs) {
      for (const [p, r] of this.#caughtUpAt) if (r === ctx.round) this.#caughtUpAt.delete(p)
    }
    const record = this.#adopt(next, m, certificate, nextMembership(this.#membership, ctx.round, m.body.entries.map((e) => e.peerId)))
    // The value's proposer spreads the certificate for peers that missed votes.
    if (m.body.proposer === this.#i.self) void this.#i.network.publish(this.#lastCommit as CommitMessage).catch(() => {})
    const hashes = new Set([...m.body.entries.map((e) => e.payloadHash), ...[...ctx.anns.values()].map((a) => a.body.payloadHash)])
    let bytesSent = 0
    let bytesReceived = 0
    for (const h of hashes) {
      bytesSent += this.#i.network.bytesServed(h)
      bytesReceived += this.#i.network.bytesFetched(h)
    }
    this.#announceCommit(record, view, undefined, {
      roundMs: Date.now() - ctx.startedAt,
      trainMs: ctx.trainMs,
      mergeMs: this.#takeMergeMs(next.hash),
      bytesReceived,
      bytesSent,
      train: ctx.trainMetrics,
    })
    this.#advance()
  }

  #takeMergeMs(hash: string): number | undefined {
    const ms = this.#mergeMs.get(hash)
    this.#mergeMs.clear()
    return ms
  }

  /**
   * Makes a certified state the head: keeps its payloads, appends its record (the commit
   * point, fsynced), writes the head snapshot, extends the cumulative update. Nothing is
   * reported before this returns.
   */
  #adopt(next: SwarmState, m: SignedManifest, certificate: readonly SignedVote[], members: Membership, synced?: 'snapshot'): RoundRecord {
    const round = m.body.round
    const parent = this.#head
    const sd = this.#i.stateDir
    if (sd != null) {
      for (const e of m.body.entries) {
        const bytes = this.#i.store.get(e.payloadHash)
        if (bytes != null) sd.savePayload(round, e.payloadHash, bytes)
      }
    }
    if (synced === 'snapshot') this.#update = undefined
    else if (this.#update != null) {
      try {
        this.#update.add(round, next.aggregate?.merge ?? new Map())
      } catch (err) {
        this.#log.warn({ round, err: (err as Error).message }, 'cumulative update dropped (export will write the model only)')
        this.#update = undefined
      }
    }
    this.#head = next
    this.#membership = members
    const record: RoundRecord = {
      round,
      parentStateHash: m.body.parentStateHash,
      stateHash: m.body.newStateHash,
      manifest: m,
      certificate: [...certificate].sort((a, b) => (a.body.voter < b.body.voter ? -1 : 1)),
      members,
      contributors: m.body.entries.map((e) => e.peerId),
      committedAt: Date.now(),
    }
    if (record.parentStateHash !== parent.hash || record.stateHash !== next.hash) throw new Error(`round ${round}: adopting a state that does not extend the head`)
    this.records.append(record)
    if (sd != null) {
      try {
        sd.saveHead(next)
        if (this.#update != null) sd.saveUpdate(this.#update.serialize())
      } catch (err) {
        // The record is on disk: a restart replays the round from the kept payloads, or syncs it.
        this.#log.error({ round, err: (err as Error).message }, 'could not write the head snapshot to the state dir')
      }
    }
    this.#lastCommit = { kind: 'commit', manifest: m, certificate: [...record.certificate] }
    this.#prune(round)
    return record
  }

  #announceCommit(record: RoundRecord, view: number, synced: 'replay' | 'snapshot' | undefined, metrics: RoundMetrics): void {
    const m = record.manifest
    const detail: RoundCompleteDetail = {
      round: record.round,
      stateHash: record.stateHash,
      parentStateHash: record.parentStateHash,
      proposer: m.body.proposer,
      contributors: record.contributors,
      view,
      certifiedBy: record.certificate.map((v) => v.body.voter),
      members: memberIds(record.members),
      ...(synced != null ? { synced } : {}),
      metrics,
    }
    this.#log.info(
      { round: record.round, state: record.stateHash.slice(0, 12), view, proposer: m.body.proposer, contributors: record.contributors.length, votes: record.certificate.length, roundMs: metrics.roundMs, ...(synced != null ? { synced } : {}) },
      synced != null ? 'round caught up (certified)' : 'round certified',
    )
    this.safeDispatchEvent('round:complete', { detail })
  }

  /** The cumulative update since genesis at the head (undefined: not tracked, or unknown after a snapshot sync). */
  get cumulativeUpdate(): CumulativeUpdate | undefined {
    return this.#update
  }

  // ---------------------------------------------------------------------------------
  // State sync: a peer behind the swarm catches up from any member, verifying every step

  /** Starts a catch-up unless one runs (or asked members within the last grace period). */
  #requestSync(why: string): void {
    if (this.#syncing != null || this.#status !== 'running') return
    const now = Date.now()
    if (now - this.#lastSyncAt < Math.min(this.#i.config.round.graceMs, 2000)) return
    const before = this.#lastSyncAt
    this.#lastSyncAt = now
    let askedMembers = true
    this.#syncing = this.#catchUp(why)
      .then((asked) => {
        askedMembers = asked
      })
      .catch((err: Error) => {
        if (!this.#stop.signal.aborted) this.#log.error({ err: err.message }, 'state sync failed')
      })
      .finally(() => {
        this.#syncing = undefined
        // A catch-up that asked no member (a restarted peer replays its state dir's commits
        // before any member is connected) does not hold the next one back: the members'
        // handshakes a moment later report the rounds the swarm committed meanwhile, and a
        // request dropped then is not made again until the swarm's next commit (often
        // dropped too). The peer trained a round the swarm had already committed and
        // rejoined 3-4 rounds after it was up (scripts/soak.ts).
        this.#lastSyncAt = askedMembers ? Date.now() : before
      })
  }

  /** What replaying these commits costs, in bytes: their payloads, plus a round trip's worth per round. */
  #replayCost(commits: readonly CommitMessage[]): number {
    let bytes = 0
    for (const c of commits) {
      if (c.manifest.body.round < this.round) continue
      bytes += 256 << 10
      for (const e of c.manifest.body.entries) if (!this.#i.store.has(e.payloadHash)) bytes += e.payloadSize
    }
    return bytes
  }

  /** Members to ask, those that said they are ahead first; bad ones never. */
  #syncPeers(): string[] {
    const net = this.#i.network
    const all = [...net.members()].filter((p) => !this.#syncBad.has(p))
    const head = (p: string): number => net.reportedHead?.(p) ?? 0
    return all.sort((a, b) => head(b) - head(a) || (a < b ? -1 : 1))
  }

  #tip(): ChainTip {
    return { round: this.#head.round, stateHash: this.#head.hash, members: this.#membership }
  }

  #policy(): { swarmId: string; quorum: SwarmConfig['round']['quorum']; minPeers: number } {
    return { swarmId: this.#i.swarmId, quorum: this.#i.config.round.quorum, minPeers: this.#i.config.round.minPeers }
  }

  #syncReject(peer: string, detail: string): void {
    this.#syncBad.add(peer)
    this.#reject(peer, 'bad-sync', detail)
  }

  /** Catches up from the state dir's pending commits, then from members; resolves whether it asked any member. */
  async #catchUp(why: string): Promise<boolean> {
    const start = this.#head.round
    let asked = false
    this.#log.info({ round: this.round, why }, 'catching up with the swarm')
    let adopted = 0
    // Our own state dir's certified commits first (a crash between record and snapshot).
    while (this.#pending.length > 0 && this.#status === 'running') {
      const c = this.#pending.shift() as CommitMessage
      if (c.manifest.body.round !== this.round) continue
      const res = await this.#syncCommit(c, undefined)
      if (res === 'adopted') adopted++
      else {
        this.#log.warn({ round: c.manifest.body.round, res }, 'could not replay a round from the state dir; asking members')
        this.#pending = []
      }
    }
    const net = this.#i.network
    if (net.syncCommits != null) {
      // Until a member has nothing newer, or at most one round: that one (and the rounds
      // after it) are followed live, through their certificates, like any member does. A
      // swarm whose rounds are shorter than a sync request must not keep us syncing forever.
      outer: while (this.#status === 'running') {
        let emptyAnswers = 0
        for (const peer of this.#syncPeers()) {
          let commits: CommitMessage[]
          asked = true
          try {
            commits = await net.syncCommits(peer, this.round, 64, AbortSignal.any([this.#stop.signal, AbortSignal.timeout(30_000)]))
          } catch (err) {
            this.#log.debug({ peer, err: (err as Error).message }, 'sync: commits request failed')
            continue
          }
          // A member behind us, or as far as we are, has nothing: ask a few before concluding.
          if (commits.length === 0) {
            if (++emptyAnswers >= 3) break outer
            continue
          }
          let progressed = false
          // Far behind (replaying costs more bytes and round trips than the state itself):
          // take the member's head snapshot first, then replay what follows it.
          if (commits.length >= SNAPSHOT_MIN_GAP && this.#replayCost(commits) > snapshotEstimate(this.#i.config)) {
            const got = await this.#syncSnapshot(peer)
            if (got > 0) {
              adopted += got
              continue outer
            }
          }
          for (const c of commits) {
            if (this.#status !== 'running') break outer
            if (c.manifest.body.round < this.round) continue
            const res = await this.#syncCommit(c, peer)
            if (res === 'adopted') {
              adopted++
              progressed = true
              continue
            }
            if (res === 'no-payload') {
              const got = await this.#syncSnapshot(peer)
              if (got > 0) {
                adopted += got
                progressed = true
              }
            }
            break
          }
          if (progressed && commits.length <= 1) break outer
          if (progressed) continue outer
        }
        break
      }
    }
    if (this.#head.round > start) {
      this.#log.info({ from: start, to: this.#head.round, rounds: adopted }, 'caught up')
      // The members hear our head as the next round starts (#beginRound).
      this.#rejoinGreets = MEMBER_TTL_ROUNDS
    }
    if (adopted > 0 && this.#status === 'running' && this.#ctx == null) this.#beginRound()
    return asked
  }

  /**
   * Verifies one certified commit for our next round and replays it (payloads by hash,
   * merge, hash check). 'stale': the round was committed meanwhile by the normal path.
   */
  async #syncCommit(c: CommitMessage, peer: string | undefined): Promise<'adopted' | 'bad' | 'no-payload' | 'stale'> {
    const round = this.round
    const tip = this.#tip()
    const check = await verifyCertifiedCommit(c, tip, this.#policy())
    if (this.#head.round !== tip.round) return 'stale'
    if (!check.ok) {
      if (peer != null) this.#syncReject(peer, `sync: ${check.detail}`)
      return 'bad'
    }
    const b = c.manifest.body
    const signal = this.#stop.signal
    const updates: ClientUpdate[] = []
    // All payloads at once; one pass over the members: a payload past everyone's kept
    // rounds is not waited for (a snapshot replaces it).
    const fetched = await Promise.all(b.entries.map((e) => this.#obtain(undefined, e.payloadHash, e.payloadSize, [...(peer != null ? [peer] : []), e.peerId, b.proposer], signal, 1)))
    for (const [k, e] of b.entries.entries()) {
      const got = fetched[k]
      if (!got.ok) {
        if (got.reason === 'payload-unavailable') return 'no-payload'
        if (peer != null) this.#syncReject(peer, `sync: round ${round} payload of ${e.peerId}: ${got.detail}`)
        return 'bad'
      }
      const ok = this.#checkDecoded(got.adapter, e)
      if (!ok.ok) {
        if (peer != null) this.#syncReject(peer, `sync: round ${round}: ${ok.detail}`)
        return 'bad'
      }
      updates.push({ id: e.peerId, samples: e.samples, adapter: got.adapter })
    }
    if (this.#head.round !== tip.round) return 'stale'
    const t0 = performance.now()
    const next = await applyRound(this.#head, this.#i.config.strategy, this.#i.config.targets, updates, this.#applyOptions(this.#head.round + 1))
    const mergeMs = performance.now() - t0
    if (this.#head.round !== tip.round) return 'stale'
    if (next.hash !== b.newStateHash) {
      if (peer != null) this.#syncReject(peer, `sync: round ${round} replays to ${next.hash.slice(0, 12)}, its certificate says ${b.newStateHash.slice(0, 12)}`)
      return 'bad'
    }
    const ctx = this.#ctx
    if (ctx != null) {
      this.#closeCtx()
      this.#ctx = undefined
    }
    const record = this.#adopt(next, c.manifest, c.certificate, check.members)
    this.#announceCommit(record, check.view, 'replay', { roundMs: 0, mergeMs, bytesReceived: 0, bytesSent: 0 })
    this.#finishIfDone()
    return 'adopted'
  }

  /**
   * Past the kept payloads: verify the peer's commits up to a round it holds a head
   * snapshot of, fetch that snapshot in chunks (to the state dir when there is one, so a
   * broken transfer resumes), check it hashes to the certified state, adopt. Returns the
   * rounds adopted (0: nothing usable from this peer).
   */
  async #syncSnapshot(peer: string): Promise<number> {
    const net = this.#i.network
    if (net.syncHead == null || net.syncCommits == null || net.syncSnapshotChunk == null) return 0
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(600_000)])
    let head: SyncHead
    try {
      head = await net.syncHead(peer, signal)
    } catch {
      return 0
    }
    const target = Math.max(...head.snapshots.filter((r) => r > this.#head.round), -1)
    if (target < 0) return 0
    // The certificates up to the snapshot's round, each checked against the chain before it.
    const verified: { c: CommitMessage; members: Membership; view: number }[] = []
    let tip = this.#tip()
    while (tip.round < target) {
      let commits: CommitMessage[]
      try {
        commits = await net.syncCommits(peer, tip.round + 1, 64, signal)
      } catch {
        return 0
      }
      if (commits.length === 0) return 0
      for (const c of commits) {
        if (tip.round >= target) break
        const check = await verifyCertifiedCommit(c, tip, this.#policy())
        if (!check.ok) {
          this.#syncReject(peer, `sync: ${check.detail}`)
          return 0
        }
        verified.push({ c, members: check.members, view: check.view })
        tip = { round: c.manifest.body.round, stateHash: c.manifest.body.newStateHash, members: check.members }
      }
    }
    const fetched = await this.#fetchSnapshot(peer, target, signal)
    if (fetched == null) return 0
    const bytes = fetched.bytes
    let state: SwarmState
    try {
      state = parseSnapshot(bytes, this.#i.config.targets, { swarmId: this.#i.swarmId, round: target, stateHash: tip.stateHash })
    } catch (err) {
      // A resumed transfer mixes members' bytes: drop it, blame no one; else the sender lied.
      if (fetched.resumed) this.#log.warn({ round: target, err: (err as Error).message }, 'sync: a resumed snapshot does not verify; starting over')
      else this.#syncReject(peer, `sync: snapshot of round ${target}: ${(err as Error).message}`)
      return 0
    }
    if (this.#head.round >= target) return 0
    if (this.#head.round !== verified[0]?.c.manifest.body.round - 1) return 0 // the head moved meanwhile
    if (this.#ctx != null) {
      this.#closeCtx()
      this.#ctx = undefined
    }
    this.#log.info({ from: this.#head.round, to: target, bytes: bytes.byteLength, peer }, 'adopting a verified head snapshot')
    // Adopt every round first, report them after: listeners then see the snapshot's weights.
    const records = verified.map((v) => {
      const b = v.c.manifest.body
      const s: SwarmState = b.round === target ? state : { round: b.round, weights: this.#head.weights, global: this.#head.global, hash: b.newStateHash }
      return { record: this.#adoptRecordOnly(s, v.c, v.members, b.round === target), view: v.view }
    })
    for (const { record, view } of records) {
      this.#announceCommit(record, view, 'snapshot', { roundMs: 0, bytesReceived: record.round === target ? bytes.byteLength : 0, bytesSent: 0 })
    }
    this.#finishIfDone()
    return verified.length
  }

  /** Adopts a snapshot-synced round: the record always, the head state only at the snapshot's round. */
  #adoptRecordOnly(s: SwarmState, c: CommitMessage, members: Membership, isHead: boolean): RoundRecord {
    if (isHead) return this.#adopt(s, c.manifest, c.certificate, members, 'snapshot')
    const b = c.manifest.body
    this.#update = undefined
    const record: RoundRecord = {
      round: b.round,
      parentStateHash: b.parentStateHash,
      stateHash: b.newStateHash,
      manifest: c.manifest,
      certificate: [...c.certificate].sort((x, y) => (x.body.voter < y.body.voter ? -1 : 1)),
      members,
      contributors: b.entries.map((e) => e.peerId),
      committedAt: Date.now(),
    }
    this.records.append(record)
    // The head's weights are not known for this round; only its hash. The snapshot's round follows at once.
    this.#head = { round: b.round, weights: s.weights, global: s.global, hash: b.newStateHash }
    this.#membership = members
    return record
  }

  /**
   * Fetches a member's head snapshot of `round` in chunks. With a state dir the chunks go
   * to a partial file there, so a transfer broken off (the member left, this peer was
   * killed) resumes where it stopped, from any member: snapshots of one state are
   * byte-identical on every peer. Only the finished file is read back, and verified.
   */
  async #fetchSnapshot(peer: string, round: number, signal: AbortSignal): Promise<{ bytes: Uint8Array; resumed: boolean } | undefined> {
    const net = this.#i.network
    const max = snapshotCap(this.#i.config)
    const CHUNK = 4 << 20
    const partFile = this.#i.stateDir?.partialSnapshotFile(round)
    const parts: Uint8Array[] = []
    let got = partFile != null && existsSync(partFile) ? statSync(partFile).size : 0
    const resumedAt = got
    let total = -1
    const t0 = performance.now()
    let lastReport = t0
    while (total < 0 || got < total) {
      let res: { total: number; bytes: Uint8Array } | undefined
      try {
        res = await (net.syncSnapshotChunk as NonNullable<RoundNetwork['syncSnapshotChunk']>)(peer, { round, offset: got, length: CHUNK }, signal)
      } catch (err) {
        this.#log.warn({ peer, round, got, err: (err as Error).message }, 'sync: snapshot transfer broke off (it resumes from here)')
        return undefined
      }
      if (res == null) {
        if (got > 0 && resumedAt === got && partFile != null) rmSync(partFile, { force: true }) // offset past the member's snapshot: start over
        return undefined
      }
      if (total < 0) {
        if (res.total > max) {
          this.#syncReject(peer, `sync: snapshot of ${res.total} bytes, this swarm's states are at most ${max}`)
          return undefined
        }
        total = res.total
        if (got > total && partFile != null) {
          rmSync(partFile, { force: true })
          return undefined
        }
      } else if (res.total !== total) return undefined
      if (partFile != null) appendFileSync(partFile, res.bytes)
      else parts.push(res.bytes)
      got += res.bytes.byteLength
      const now = performance.now()
      if (now - lastReport > 2000 || got === total) {
        lastReport = now
        this.#log.info({ round, got, total, resumedAt, mbPerS: +((got - resumedAt) / 1e6 / ((now - t0) / 1000)).toFixed(1) }, 'sync: snapshot progress')
      }
    }
    if (partFile == null) return { bytes: Buffer.concat(parts), resumed: false }
    const bytes = new Uint8Array(readFileSync(partFile))
    rmSync(partFile, { force: true })
    return { bytes, resumed: resumedAt > 0 }
  }

  #finishIfDone(): void {
    const max = this.#i.maxRounds
    if (max !== undefined && this.#head.round >= max && this.#status === 'running') {
      this.#status = 'done'
      this.#log.info({ round: this.#head.round, state: this.#head.hash.slice(0, 12) }, 'all rounds done')
      this.safeDispatchEvent('done', { detail: { round: this.#head.round, stateHash: this.#head.hash } })
      this.#resolveDone()
    }
  }

  #advance(): void {
    const max = this.#i.maxRounds
    if (max !== undefined && this.#head.round >= max) {
      this.#status = 'done'
      this.#log.info({ round: this.#head.round, state: this.#head.hash.slice(0, 12) }, 'all rounds done')
      this.safeDispatchEvent('done', { detail: { round: this.#head.round, stateHash: this.#head.hash } })
      this.#resolveDone()
      return
    }
    // The next round starts on a later turn of the event loop, never in the one that
    // committed: a swarm that commits rounds without waiting on I/O (one peer with
    // minPeers 1 and a fast trainer) would otherwise chain rounds through promise
    // callbacks forever, and signals, timers and sockets would never run (SIGTERM ignored).
    const head = this.#head.round
    setImmediate(() => {
      if (this.#status === 'running' && this.#ctx == null && this.#head.round === head) this.#beginRound()
    })
  }

  #prune(committed: number): void {
    const keepFrom = committed - (this.#i.retainRounds ?? 8) + 1
    this.#i.store.prune(keepFrom)
    for (const [h, d] of this.#decoded) if (d.round < keepFrom) this.#decoded.delete(h)
    for (const r of this.#stash.keys()) if (r <= committed) this.#stash.delete(r)
    if (this.#malformed.size > 10_000) this.#malformed.clear()
  }

  async #train(ctx: RoundContext): Promise<void> {
    const { config, self } = this.#i
    const t0 = performance.now()
    let result: TrainResult
    try {
      result = await this.#i.trainer({
        round: ctx.round,
        rank: this.#i.rank,
        alpha: this.#i.alpha,
        rslora: config.rslora,
        seed: trainingSeed(config.seed, self, ctx.round),
        swarmSeed: config.seed,
        signal: ctx.ac.signal,
        weights: ctx.parent.weights,
        shapes: config.targets,
        init: ctx.parent.aggregate?.nextAdapter({
          rank: this.#i.rank,
          alpha: this.#i.alpha,
          scaling: loraScaling(this.#i.alpha, this.#i.rank, { rslora: config.rslora }),
        }),
      })
    } catch (err) {
      if (ctx.ac.signal.aborted) return
      this.#log.error({ round: ctx.round, err: (err as Error).message }, 'local training failed; this round goes on without us')
      ctx.ownDone = true
      this.#feedCollection(ctx)
      return
    }
    if (ctx.ac.signal.aborted) return
    ctx.trainMs = performance.now() - t0
    ctx.trainMetrics = result.metrics
    const diverged = nonFiniteModule(result.adapter)
    if (diverged != null) {
      this.#log.warn({ round: ctx.round, module: diverged }, 'sitting this round out: local training diverged (the adapter is not finite); the swarm goes on without us')
      ctx.ownDone = true
      this.#feedCollection(ctx)
      return
    }
    try {
      const bytes = encodeAdapter(result.adapter, { dtype: config.wireDType, maxBytes: payloadCap(config) })
      // Merge what everyone else will decode, not our in-memory adapter (f16/bf16 wire types round).
      const adapter = this.#decode(bytes)
      const own = this.#checkDecoded(adapter, { rank: this.#i.rank, alpha: this.#i.alpha })
      if (!own.ok) throw new Error(`trainer returned an adapter that does not match this peer: ${own.detail}`)
      const payloadHash = this.#i.store.put(bytes, ctx.round)
      this.#decoded.set(payloadHash, { adapter, round: ctx.round })
      const signed = await signAnnouncement(this.#i.privateKey, {
        swarmId: this.#i.swarmId,
        round: ctx.round,
        parentStateHash: ctx.parent.hash,
        author: self,
        rank: this.#i.rank,
        alpha: this.#i.alpha,
        samples: result.samples,
        payloadHash,
        payloadSize: bytes.byteLength,
      })
      if (ctx.ac.signal.aborted) return
      ctx.anns.set(self, signed)
      ctx.adapters.set(self, { adapter, payloadHash })
      ctx.heldAt.set(self, Date.now())
      ctx.ownDone = true
      this.#log.info({ round: ctx.round, bytes: bytes.byteLength, trainMs: Math.round(ctx.trainMs) }, 'announcing adapter')
      await this.#i.network.publish(signed).catch((err: Error) => {
        this.#log.warn({ round: ctx.round, err: err.message }, 'publishing the announcement failed')
      })
      this.#feedCollection(ctx)
    } catch (err) {
      this.#log.error({ round: ctx.round, err: (err as Error).message }, 'could not encode our adapter; this round goes on without us')
      ctx.ownDone = true
      this.#feedCollection(ctx)
    }
  }

  #decode(bytes: Uint8Array): AdapterSet {
    const { config } = this.#i
    return decodeAdapter(bytes, {
      expectedShapes: config.targets,
      requireAllModules: true,
      maxRank: config.maxRank,
      maxBytes: payloadCap(config),
    })
  }

  #reject(peerId: string, reason: RejectReason, detail: string, round?: number): void {
    this.#rejectLog.note(`${peerId}|${reason}`, (repeats) =>
      this.#log.warn({ offender: peerId, reason, round, repeats }, repeats > 0 ? `rejected ${repeats} more times: ${detail}` : `rejected: ${detail}`),
    )
    this.safeDispatchEvent('peer:rejected', { detail: { peerId, reason, detail, round } })
  }

  async #onAnnouncement(ctx: RoundContext, signed: SignedAnnouncement): Promise<void> {
    const b = signed.body
    if (b.author === this.#i.self || ctx.ac.signal.aborted) return
    if (ctx.behind) return
    if (b.parentStateHash !== ctx.parent.hash) {
      this.#reject(b.author, 'wrong-parent', `announcement for round ${b.round} built on ${b.parentStateHash.slice(0, 12)}, agreed parent is ${ctx.parent.hash.slice(0, 12)}`, b.round)
      return
    }
    // An adapter built on our parent: whatever its author said in its handshake, it is not behind (any more).
    if (this.#reportsBehind(b.author)) this.#i.network.forgetReportedHead?.(b.author)
    const known = ctx.anns.get(b.author)
    if (known != null) {
      if (known.body.payloadHash !== b.payloadHash) {
        this.#reject(b.author, 'equivocation', `second announcement for round ${b.round} with another payload`, b.round)
      }
      return
    }
    ctx.anns.set(b.author, signed)
    this.#noteParticipant(b.round, b.author)
    this.#feedCollection(ctx)
    // Only its author holds a fresh adapter: an author that answers "not found", sends
    // wrong bytes or a wrong size, or stays silent for a grace period in all (attempts
    // waiting 1 s, 2 s, 4 s, ... for its answer) has failed it: rejected, nobody waits for
    // it until the deadline. Grace is how late the protocol lets an honest peer be; a busy
    // one answers late, not never. A broken stream, a slow transfer or an unreachable author
    // may be honest trouble: we keep trying until the round closes.
    const authorFailed = (source: string, err: PayloadTransferError): boolean => source === b.author && AUTHOR_FAILURES.has(err.code)
    const fetchStarted = performance.now()
    const got = await this.#obtain(ctx, b.payloadHash, b.payloadSize, [b.author], ctx.ac.signal, undefined, authorFailed, this.#i.config.round.graceMs)
    if (ctx.ac.signal.aborted) return
    if (!got.ok) {
      ctx.rejected.set(b.author, got.reason)
      this.#reject(b.author, got.reason, got.detail, b.round)
      this.#feedCollection(ctx)
      return
    }
    const check = this.#checkDecoded(got.adapter, b)
    if (!check.ok) {
      ctx.rejected.set(b.author, check.reason)
      this.#reject(b.author, check.reason, check.detail, b.round)
      this.#feedCollection(ctx)
      return
    }
    ctx.adapters.set(b.author, { adapter: got.adapter, payloadHash: b.payloadHash })
    ctx.heldAt.set(b.author, Date.now())
    this.safeDispatchEvent('adapter:received', {
      detail: {
        round: b.round,
        peerId: b.author,
        payloadHash: b.payloadHash,
        bytes: b.payloadSize,
        rank: b.rank,
        alpha: b.alpha,
        samples: b.samples,
        fetchMs: Math.round(performance.now() - fetchStarted),
      },
    })
    this.#feedCollection(ctx)
  }

  /** A peer voted (or announced) in `round`: it is alive, and its proposer turns are not skipped. */
  /**
   * A late vote for the round just committed, by a member whose handshake head went stale
   * (so it counts as behind): it replayed and checked that round's proposal, so it follows
   * the chain at our head whatever its handshake said (forget the stale head) and is about
   * to train the running round: wait for its adapter in it, as for a peer that says it
   * caught up (once per MEMBER_TTL_ROUNDS). Without this, a restarted
   * member whose handshake head went stale, and whose training ends after the others have
   * proposed, never gets an adapter in again: it is not waited for because it did not take
   * part in the previous round, and it did not because it was not waited for.
   */
  #followsAlong(round: number, peer: string): void {
    if (peer === this.#i.self || round !== this.round - 1 || !this.#i.network.members().has(peer)) return
    // Only a member held back by a stale head. An active member that voted but announced no
    // adapter sat the round out by itself (its training diverged, or it had nothing to
    // give): as for any such member, the next round does not wait for it (hostile.test.ts).
    if (!this.#reportsBehind(peer)) return
    this.#i.network.forgetReportedHead?.(peer)
    this.caughtUp(peer)
  }

  #noteHeard(round: number, peer: string): void {
    if (round < this.round - 1) return
    let set = this.#heard.get(round)
    if (set == null) this.#heard.set(round, (set = new Set()))
    if (set.size < 10_000) set.add(peer)
  }

  #noteParticipant(round: number, author: string): void {
    if (round < this.round - 1) return
    this.#noteHeard(round, author)
    let set = this.#participants.get(round)
    if (set == null) this.#participants.set(round, (set = new Set()))
    if (set.size >= 10_000 || set.has(author)) return
    set.add(author)
    // Its announcement for the last round came after ours began: wait for it in this one too.
    const ctx = this.#ctx
    if (ctx != null && round === ctx.round - 1 && !ctx.expected.has(author) && this.#active().has(author)) {
      ctx.expected.add(author)
      this.#feedCollection(ctx)
    }
  }

  #checkDecoded(adapter: AdapterSet, meta: { rank: number; alpha: number }): { ok: true } | { ok: false; reason: RejectReason; detail: string } {
    const scaling = loraScaling(meta.alpha, meta.rank, { rslora: this.#i.config.rslora })
    for (const m of adapter.modules) {
      if (m.rank !== meta.rank || m.alpha !== meta.alpha || m.scaling !== scaling) {
        return { ok: false, reason: 'payload-mismatch', detail: `module ${m.name}: rank ${m.rank} alpha ${m.alpha}, announced rank ${meta.rank} alpha ${meta.alpha}` }
      }
    }
    const { config } = this.#i
    if (this.#equalRanks && meta.rank !== config.maxRank) {
      return { ok: false, reason: 'payload-mismatch', detail: `strategy ${config.strategy} needs rank ${config.maxRank} (the swarm's maxRank) on every peer, got ${meta.rank}` }
    }
    return { ok: true }
  }

  /**
   * The decoded adapter for a payload hash: from cache, or fetched (once, from the given
   * sources first, then any member) and decoded. A payload that does not decode is
   * remembered as malformed under its hash (its bytes are verified, so it never will).
   */
  async #obtain(
    ctx: RoundContext | undefined,
    hash: string,
    size: number,
    sources: readonly string[],
    signal: AbortSignal,
    passes?: number,
    giveUpOn?: (source: string, err: PayloadTransferError) => boolean,
    silenceBudgetMs?: number,
  ): Promise<{ ok: true; adapter: AdapterSet } | { ok: false; reason: RejectReason; detail: string }> {
    const cached = this.#decoded.get(hash)
    if (cached != null) return { ok: true, adapter: cached.adapter }
    const bad = this.#malformed.get(hash)
    if (bad != null) return { ok: false, reason: 'malformed-payload', detail: bad }
    const round = ctx?.round ?? this.round
    const fetcher = this.#i.fetcher
    fetcher.addSources(hash, sources)
    fetcher.addSources(hash, [...this.#i.network.members()].sort(), { dial: false })
    let bytes: Uint8Array
    try {
      bytes = await fetcher.fetch(hash, { size, round, signal, passes, giveUpOn, silenceBudgetMs })
    } catch (err) {
      const code = err instanceof PayloadTransferError ? err.code : undefined
      const reason: RejectReason = code === 'HASH_MISMATCH' || code === 'SIZE_MISMATCH' || code === 'TOO_LARGE' ? 'malformed-payload' : 'payload-unavailable'
      return { ok: false, reason, detail: (err as Error).message }
    }
    const cachedNow = this.#decoded.get(hash)
    if (cachedNow != null) return { ok: true, adapter: cachedNow.adapter }
    let adapter: AdapterSet
    try {
      adapter = this.#decode(bytes)
    } catch (err) {
      const detail = `payload ${hash.slice(0, 12)}: ${(err as Error).message}`
      this.#malformed.set(hash, detail)
      return { ok: false, reason: 'malformed-payload', detail }
    }
    this.#decoded.set(hash, { adapter, round })
    return { ok: true, adapter }
  }

}

/** What the round machine needs to know of a (signature-checked) proposal. */
export function proposalInfo(m: SignedManifest): ProposalInfo<SignedManifest> {
  const b = m.body
  return {
    id: m.sig,
    view: b.view,
    proposer: b.proposer,
    valueHash: manifestValueHash(b),
    newStateHash: b.newStateHash,
    authors: b.entries.map((e) => e.peerId),
    lockView: b.lockView,
    justifyVoters: b.justify.map((v) => v.body.voter),
    ref: m,
  }
}

/** Per peer and round training seed: u32 from sha256(swarm seed, peer id, round). */
/**
 * Rounds behind from which a head snapshot may replace replaying (when it is also the
 * cheaper transfer). Closer than that, rounds are replayed: it keeps this peer's history
 * of merged updates (the exported adapter), which a snapshot cannot give.
 */
const SNAPSHOT_MIN_GAP = 8

/** About the size of a head snapshot: the target weights in float32. */
function snapshotEstimate(config: SwarmConfig): number {
  let floats = 0
  for (const t of config.targets) floats += t.outFeatures * t.inFeatures
  return floats * 4
}

/** The largest head snapshot a member may send: the target weights and a global adapter of maxRank per module, with room for the header. */
function snapshotCap(config: SwarmConfig): number {
  let floats = 0
  for (const t of config.targets) floats += t.outFeatures * t.inFeatures + 4 * config.maxRank * (t.outFeatures + t.inFeatures)
  return floats * 4 + (16 << 20)
}

export function trainingSeed(swarmSeed: number, peerId: string, round: number): number {
  return createHash('sha256').update(`flora-train:${swarmSeed}:${peerId}:${round}`).digest().readUInt32BE(0)
}

/** Fetch failures that settle an announcement when its author is the one failing. */
const AUTHOR_FAILURES: ReadonlySet<PayloadTransferErrorCode> = new Set(['NOT_FOUND', 'HASH_MISMATCH', 'SIZE_MISMATCH', 'TOO_LARGE', 'SILENT'])

/** The first module of an adapter with a NaN or infinite element, if any. */
function nonFiniteModule(adapter: AdapterSet): string | undefined {
  for (const m of adapter.modules) {
    for (const t of [m.loraA, m.loraB]) {
      for (let i = 0; i < t.length; i++) if (!Number.isFinite(t[i])) return m.name
    }
  }
  return undefined
}
