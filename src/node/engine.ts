/**
 * The round state machine (DESIGN decision 3).
 *
 * Round r on a peer, starting from the agreed state S_{r-1} with hash h_{r-1}:
 *  1. train: a fresh LoRA of the peer's own rank (or the strategy's warm start) on S_{r-1};
 *  2. announce: store the encoded adapter under its sha256 and gossip a signed
 *     announcement {round r, parent h_{r-1}, author, rank, alpha, samples, hash, size};
 *  3. collect: fetch every announced payload once (author first), decode it strictly,
 *     check it matches its announcement;
 *  4. agree: members are ordered by sha256(r || peerId). The first proposer publishes a
 *     signed manifest as soon as it holds (or has rejected) the adapter of every expected
 *     member, or when the round deadline passes; proposer k > 0 publishes only if no
 *     valid manifest arrived by deadline + k * grace. Members that disconnect drop out of
 *     the order and of the expected set at once, so a crashed proposer costs at most the
 *     grace it takes its successor to act;
 *  5. apply: every peer replays the manifest (fetching what it lacks), stacks the entries
 *     in their canonical order, merges with the deterministic kernel, and commits only if
 *     the result hashes to the manifest's newStateHash.
 * Competing manifests of one round: the one whose proposer sorts first for that round
 * wins. A peer that committed a losing manifest rolls back (it keeps S_{r-1} until round
 * r+1 commits) and replays the winner; once r+1 is committed, round r is final.
 *
 * The engine is transport-agnostic: messages come in through `handleMessage` (after the
 * gossipsub validator accepted them), go out through `RoundNetwork.publish`, and payloads
 * move through the PayloadFetcher / PayloadStore.
 */
import { TypedEventEmitter, type PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { ClientUpdate } from '../aggregation/types.js'
import { getStrategy } from '../aggregation/index.js'
import type { RejectReason } from '../gossip/errors.js'
import type { PayloadFetcher } from '../gossip/fetcher.js'
import type { GossipMessage, ManifestBody, SignedAnnouncement, SignedManifest } from '../gossip/messages.js'
import type { PayloadStore } from '../gossip/payload.js'
import { entryFromAnnouncement, signAnnouncement, signManifest } from '../gossip/sign.js'
import { decodeAdapter, encodeAdapter } from '../lora/wire.js'
import { loraScaling } from '../lora/scaling.js'
import type { AdapterSet, ModuleShape } from '../lora/types.js'
import type { SwarmConfig } from './config.js'
import { proposerBeats, proposerOrder } from './proposer.js'
import { RoundLog, type RoundRecord } from './round-log.js'
import { applyRound, type SwarmState } from './state.js'
import type { Trainer, TrainResult } from './trainer.js'
import { createHash } from 'node:crypto'

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
  readonly metrics: RoundMetrics
}

export interface RoundSupersededDetail {
  readonly round: number
  readonly previousStateHash: string
  readonly stateHash: string
  readonly proposer: string
  readonly contributors: readonly string[]
}

export interface AdapterReceivedDetail {
  readonly round: number
  readonly peerId: string
  readonly payloadHash: string
  readonly bytes: number
  readonly rank: number
  readonly alpha: number
  readonly samples: number
}

export interface PeerRejectedDetail {
  readonly peerId: string
  readonly reason: RejectReason
  readonly detail: string
  readonly round?: number
}

export interface RoundEngineEvents {
  'round:start': CustomEvent<{ round: number; parentStateHash: string }>
  'round:complete': CustomEvent<RoundCompleteDetail>
  'round:superseded': CustomEvent<RoundSupersededDetail>
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
  /** Payload bytes served so far for a payload hash (for metrics). */
  bytesServed(hash: string): number
  /** Payload bytes fetched for a payload hash (0 if we never fetched it, e.g. our own). */
  bytesFetched(hash: string): number
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
  /** Records file (JSON lines) for the round log. */
  recordsFile?: string
  /** Rounds of payloads kept in the store for others to fetch (default 2). */
  retainRounds?: number
}

interface Contribution {
  readonly adapter: AdapterSet
  readonly payloadHash: string
}

/** Everything about the round in progress; replaced wholesale on commit or rollback. */
interface RoundContext {
  readonly round: number
  readonly parent: SwarmState
  readonly startedAt: number
  readonly ac: AbortController
  readonly anns: Map<string, SignedAnnouncement>
  readonly adapters: Map<string, Contribution>
  readonly rejected: Map<string, RejectReason>
  /** Members whose adapter the first proposer waits for. */
  readonly expected: Set<string>
  /** Active members at round start (self included) still connected: the proposer order. */
  readonly participants: Set<string>
  ownDone: boolean
  proposed: boolean
  trainMs?: number
  trainMetrics?: Readonly<Record<string, number>>
  timer?: NodeJS.Timeout
  /** Re-publication of our announcement while the round stays open. */
  reannounce?: NodeJS.Timeout
}

type Status = 'idle' | 'waiting' | 'running' | 'done' | 'stopped'

export class RoundEngine extends TypedEventEmitter<RoundEngineEvents> {
  readonly #i: RoundEngineInit
  readonly #log: Logger
  readonly records: RoundLog
  #head: SwarmState
  /** S_{head-1}: kept until round head+1 commits, for a one-round rollback. */
  #prev: SwarmState | undefined
  #ctx: RoundContext | undefined
  #status: Status = 'idle'
  #firstRound = true
  readonly #stop = new AbortController()
  /** Validated messages for the current and next round, kept for re-evaluation after a rollback. */
  readonly #stash = new Map<number, GossipMessage[]>()
  /** Decoded adapters by payload hash (with their round, for pruning). */
  readonly #decoded = new Map<string, { adapter: AdapterSet; round: number }>()
  readonly #seenManifests = new Set<string>()
  readonly #malformed = new Map<string, string>()
  /** Authors announced in the last committed round (kept so `expected` can include them). */
  #announcedLast = new Set<string>()
  readonly #equalRanks: boolean
  readonly #timers = new Set<NodeJS.Timeout>()
  /** Time the merge + state hash of a replayed state took, by its hash (for metrics). */
  readonly #mergeMs = new Map<string, number>()
  #wakeWaiting: (() => void) | undefined
  readonly #done: Promise<void>
  #resolveDone!: () => void

  constructor(init: RoundEngineInit) {
    super()
    this.#i = init
    this.#log = init.log
    this.#head = init.genesis
    this.records = new RoundLog({ file: init.recordsFile })
    this.#equalRanks = getStrategy(init.config.strategy).requiresEqualRanks
    this.#done = new Promise((resolve) => {
      this.#resolveDone = resolve
    })
  }

  /** The last committed state. */
  get head(): SwarmState {
    return this.#head
  }

  /** The round in progress (head + 1). */
  get round(): number {
    return this.#head.round + 1
  }

  get status(): Status {
    return this.#status
  }

  /** Resolves when `maxRounds` rounds are committed, or the engine stops. */
  whenDone(): Promise<void> {
    return this.#done
  }

  /** Waits for `minPeers` ready members, then runs rounds. Resolves once round 1 has started. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.#status !== 'idle') return
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
        if (this.#active().size + 1 >= minPeers) break
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
    if (ctx == null) return
    const active = this.#active()
    const connected = this.#i.network.members()
    for (const p of [...ctx.expected]) if (p !== this.#i.self && !active.has(p)) ctx.expected.delete(p)
    // Only a disconnect (a crash, or leaving) moves the proposer order on; a member that
    // merely unsubscribed (done with its rounds) may have a manifest in flight.
    for (const p of [...ctx.participants]) if (p !== this.#i.self && !connected.has(p)) ctx.participants.delete(p)
    this.#maybePropose(ctx)
  }

  /**
   * Members that take part in rounds: connected, past the handshake, and subscribed to the
   * swarm topic with gossip flowing both ways. A peer that finished its rounds unsubscribes,
   * so it is not expected (nor ordered) in the rounds that start after that.
   */
  #active(): Set<string> {
    const net = this.#i.network
    return new Set([...net.members()].filter((p) => net.isReady(p)))
  }

  /**
   * Round-context check for the gossip validator: is this message's round in the window
   * we accept? (current round, the next one, and for manifests the previous one too.)
   */
  checkContext(msg: GossipMessage): { action: 'ignore'; reason: RejectReason; detail: string } | undefined {
    const cur = this.round
    const r = msg.body.round
    const lo = msg.kind === 'manifest' ? cur - 1 : cur
    if (r < lo || r > cur + 1) {
      return { action: 'ignore', reason: 'round-window', detail: `${msg.kind} for round ${r}, we accept ${lo}..${cur + 1}` }
    }
    return undefined
  }

  /** A message accepted by the gossip validator. */
  handleMessage(msg: GossipMessage): void {
    if (this.#status === 'stopped') return
    const r = msg.body.round
    if (r >= this.round) {
      let list = this.#stash.get(r)
      if (list == null) this.#stash.set(r, (list = []))
      if (list.length < 10_000) list.push(msg)
    }
    const ctx = this.#ctx
    if (msg.kind === 'announce') {
      if (ctx != null && r === ctx.round) void this.#onAnnouncement(ctx, msg)
    } else if (this.#status === 'running' || this.#status === 'done') {
      if (r <= this.round) void this.#onManifest(msg)
    }
  }

  // ---------------------------------------------------------------------------------
  // Round lifecycle

  #beginRound(): void {
    const round = this.round
    const parent = this.#head
    const expected = new Set<string>([this.#i.self])
    const active = this.#active()
    const last = this.records.last
    for (const p of active) {
      // After the first round, expect only peers that took part in the last one: a peer
      // that is connected but behind (joining late) must not hold every round to its deadline.
      if (this.#firstRound || last == null || last.contributors.includes(p) || this.#announcedLast.has(p)) expected.add(p)
    }
    this.#firstRound = false
    const ctx: RoundContext = {
      round,
      parent,
      startedAt: Date.now(),
      ac: new AbortController(),
      anns: new Map(),
      adapters: new Map(),
      rejected: new Map(),
      expected,
      participants: new Set([this.#i.self, ...active]),
      ownDone: false,
      proposed: false,
    }
    this.#ctx = ctx
    this.#log.info({ round, parent: parent.hash.slice(0, 12), expected: expected.size }, 'round start')
    this.safeDispatchEvent('round:start', { detail: { round, parentStateHash: parent.hash } })
    void this.#train(ctx)
    // Messages that arrived early (or before a rollback): best manifest first.
    const stashed = [...(this.#stash.get(round) ?? [])]
    for (const m of stashed) if (m.kind === 'announce') void this.#onAnnouncement(ctx, m)
    const manifests = stashed.filter((m): m is SignedManifest => m.kind === 'manifest')
    manifests.sort((a, b) => (proposerBeats(round, a.body.proposer, b.body.proposer) ? -1 : 1))
    for (const m of manifests) void this.#onManifest(m)
    this.#maybePropose(ctx)
  }

  #closeCtx(): void {
    const ctx = this.#ctx
    if (ctx == null) return
    ctx.ac.abort(new Error(`round ${ctx.round} closed`))
    if (ctx.timer != null) clearTimeout(ctx.timer)
    if (ctx.reannounce != null) clearInterval(ctx.reannounce)
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
      this.#maybePropose(ctx)
      return
    }
    if (ctx.ac.signal.aborted) return
    ctx.trainMs = performance.now() - t0
    ctx.trainMetrics = result.metrics
    try {
      const bytes = encodeAdapter(result.adapter, { dtype: config.wireDType, maxBytes: config.maxPayloadBytes })
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
      ctx.ownDone = true
      this.#log.info({ round: ctx.round, bytes: bytes.byteLength, trainMs: Math.round(ctx.trainMs) }, 'announcing adapter')
      this.#maybePropose(ctx)
      await this.#i.network.publish(signed).catch((err: Error) => {
        this.#log.warn({ round: ctx.round, err: err.message }, 'publishing the announcement failed')
      })
      // gossipsub is best effort: while the round stays open, say it again every grace
      // period (a few times). Peers that have it drop the copy silently.
      let repeats = 0
      ctx.reannounce = setInterval(() => {
        if (ctx.ac.signal.aborted || ++repeats > 3) {
          clearInterval(ctx.reannounce)
          return
        }
        void this.#i.network.publish(signed).catch(() => {})
      }, config.round.graceMs)
      ctx.reannounce.unref()
    } catch (err) {
      this.#log.error({ round: ctx.round, err: (err as Error).message }, 'could not encode our adapter; this round goes on without us')
      ctx.ownDone = true
      this.#maybePropose(ctx)
    }
  }

  #decode(bytes: Uint8Array): AdapterSet {
    const { config } = this.#i
    return decodeAdapter(bytes, {
      expectedShapes: config.targets,
      requireAllModules: true,
      maxRank: config.maxRank,
      maxBytes: config.maxPayloadBytes,
    })
  }

  #reject(peerId: string, reason: RejectReason, detail: string, round?: number): void {
    this.#log.warn({ peer: peerId, reason, round }, `rejected: ${detail}`)
    this.safeDispatchEvent('peer:rejected', { detail: { peerId, reason, detail, round } })
  }

  async #onAnnouncement(ctx: RoundContext, signed: SignedAnnouncement): Promise<void> {
    const b = signed.body
    if (b.author === this.#i.self || ctx.ac.signal.aborted) return
    if (b.parentStateHash !== ctx.parent.hash) {
      this.#reject(b.author, 'wrong-parent', `announcement for round ${b.round} built on ${b.parentStateHash.slice(0, 12)}, agreed parent is ${ctx.parent.hash.slice(0, 12)}`, b.round)
      return
    }
    const known = ctx.anns.get(b.author)
    if (known != null) {
      if (known.body.payloadHash !== b.payloadHash) {
        this.#reject(b.author, 'equivocation', `second announcement for round ${b.round} with another payload`, b.round)
      }
      return
    }
    ctx.anns.set(b.author, signed)
    const got = await this.#obtain(ctx, b.payloadHash, b.payloadSize, [b.author], ctx.ac.signal)
    if (ctx.ac.signal.aborted) return
    if (!got.ok) {
      if (got.reason !== 'payload-unavailable') {
        ctx.rejected.set(b.author, got.reason)
        this.#reject(b.author, got.reason, got.detail, b.round)
      }
      this.#maybePropose(ctx)
      return
    }
    const check = this.#checkDecoded(got.adapter, b)
    if (!check.ok) {
      ctx.rejected.set(b.author, check.reason)
      this.#reject(b.author, check.reason, check.detail, b.round)
      this.#maybePropose(ctx)
      return
    }
    ctx.adapters.set(b.author, { adapter: got.adapter, payloadHash: b.payloadHash })
    this.safeDispatchEvent('adapter:received', {
      detail: { round: b.round, peerId: b.author, payloadHash: b.payloadHash, bytes: b.payloadSize, rank: b.rank, alpha: b.alpha, samples: b.samples },
    })
    this.#maybePropose(ctx)
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
  ): Promise<{ ok: true; adapter: AdapterSet } | { ok: false; reason: RejectReason; detail: string }> {
    const cached = this.#decoded.get(hash)
    if (cached != null) return { ok: true, adapter: cached.adapter }
    const bad = this.#malformed.get(hash)
    if (bad != null) return { ok: false, reason: 'malformed-payload', detail: bad }
    const round = ctx?.round ?? this.round
    const fetcher = this.#i.fetcher
    fetcher.addSources(hash, sources)
    fetcher.addSources(hash, [...this.#i.network.members()].sort())
    let bytes: Uint8Array
    try {
      bytes = await fetcher.fetch(hash, { size, round, signal })
    } catch (err) {
      return { ok: false, reason: 'payload-unavailable', detail: (err as Error).message }
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

  // ---------------------------------------------------------------------------------
  // Proposing

  #maybePropose(ctx: RoundContext): void {
    if (ctx !== this.#ctx || ctx.proposed || ctx.ac.signal.aborted || this.#status !== 'running') return
    const { self, config } = this.#i
    const order = proposerOrder(ctx.round, ctx.participants)
    const k = order.indexOf(self)
    const waiting = new Set<string>([...ctx.expected, ...ctx.anns.keys()])
    let complete = ctx.ownDone
    for (const p of waiting) {
      if (p === self) continue
      if (!ctx.adapters.has(p) && !ctx.rejected.has(p)) complete = false
    }
    const now = Date.now()
    const due = ctx.startedAt + config.round.deadlineMs + k * config.round.graceMs
    if ((k === 0 && complete) || now >= due) {
      if (ctx.timer != null) clearTimeout(ctx.timer)
      void this.#propose(ctx, k, complete)
      return
    }
    if (ctx.timer != null) clearTimeout(ctx.timer)
    ctx.timer = setTimeout(() => this.#maybePropose(ctx), Math.max(0, due - now))
  }

  async #propose(ctx: RoundContext, position: number, complete: boolean): Promise<void> {
    ctx.proposed = true
    const { self } = this.#i
    const authors = [...ctx.adapters.keys()].filter((a) => ctx.anns.has(a)).sort()
    const entries = authors.map((a) => entryFromAnnouncement(ctx.anns.get(a) as SignedAnnouncement))
    const updates: ClientUpdate[] = authors.map((a) => ({
      id: a,
      samples: (ctx.anns.get(a) as SignedAnnouncement).body.samples,
      adapter: (ctx.adapters.get(a) as Contribution).adapter,
    }))
    this.#log.info(
      { round: ctx.round, position, entries: entries.length, complete, waitedMs: Date.now() - ctx.startedAt },
      position === 0 ? 'proposing round manifest' : 'proposing fallback manifest',
    )
    let next: SwarmState
    try {
      const t0 = performance.now()
      next = await applyRound(ctx.parent, this.#i.config.strategy, this.#i.config.targets, updates, { workers: this.#i.mergeWorkers })
      this.#mergeMs.set(next.hash, performance.now() - t0)
    } catch (err) {
      this.#log.error({ round: ctx.round, err: (err as Error).message }, 'could not compute our manifest')
      return
    }
    const body: ManifestBody = {
      swarmId: this.#i.swarmId,
      round: ctx.round,
      parentStateHash: ctx.parent.hash,
      proposer: self,
      entries,
      newStateHash: next.hash,
    }
    const signed = await signManifest(this.#i.privateKey, body)
    this.#seenManifests.add(signed.sig)
    const outcome = this.#decide(signed, ctx.parent.hash, next)
    if (outcome === 'lost' || outcome === 'stale') return
    await this.#i.network.publish(signed).catch((err: Error) => {
      this.#log.warn({ round: ctx.round, err: err.message }, 'publishing the manifest failed')
    })
    // Once more after half a grace period, for a peer whose copy got lost (duplicates are
    // dropped by signature); still well before any fallback proposer would act.
    const again = setTimeout(() => {
      this.#timers.delete(again)
      if (this.#status !== 'stopped' && this.records.get(ctx.round)?.manifest.sig === signed.sig) {
        void this.#i.network.publish(signed).catch(() => {})
      }
    }, this.#i.config.round.graceMs / 2)
    again.unref()
    this.#timers.add(again)
  }

  // ---------------------------------------------------------------------------------
  // Manifests

  async #onManifest(m: SignedManifest): Promise<void> {
    if (this.#seenManifests.has(m.sig)) return
    const r = m.body.round
    // Which state does it build on? Our current round's parent, or (rollback) the head's parent.
    let parent: SwarmState | undefined
    if (r === this.round && this.#status === 'running') parent = this.#ctx?.parent
    else if (r === this.#head.round) {
      const last = this.records.last
      if (last == null || !proposerBeats(r, m.body.proposer, last.manifest.body.proposer)) {
        if (last != null && last.manifest.sig !== m.sig && last.manifest.body.proposer !== m.body.proposer) {
          this.#seenManifests.add(m.sig)
          this.#log.info(
            { round: r, proposer: m.body.proposer, winner: last.manifest.body.proposer },
            'competing manifest loses to the committed one (earlier proposer wins)',
          )
        }
        return
      }
      parent = this.#prev
    } else return
    this.#seenManifests.add(m.sig)
    if (parent == null) return
    if (m.body.parentStateHash !== parent.hash) {
      this.#reject(m.body.proposer, 'wrong-parent', `manifest for round ${r} builds on ${m.body.parentStateHash.slice(0, 12)}, agreed parent is ${parent.hash.slice(0, 12)}`, r)
      return
    }
    const ctx = this.#ctx
    const signal = r === ctx?.round ? ctx.ac.signal : this.#stop.signal
    const updates: ClientUpdate[] = []
    const results = await Promise.all(
      m.body.entries.map(async (e) => {
        const own = ctx != null && ctx.round === r ? ctx.adapters.get(e.peerId) : undefined
        if (own != null && own.payloadHash === e.payloadHash) return { ok: true as const, adapter: own.adapter }
        const got = await this.#obtain(r === ctx?.round ? ctx : undefined, e.payloadHash, e.payloadSize, [e.peerId, m.body.proposer], signal)
        if (!got.ok) return got
        const check = this.#checkDecoded(got.adapter, e)
        return check.ok ? got : check
      }),
    )
    for (let i = 0; i < results.length; i++) {
      const res = results[i]
      const e = m.body.entries[i]
      if (!res.ok) {
        if (res.reason === 'payload-unavailable') {
          this.#log.warn({ round: r, proposer: m.body.proposer, author: e.peerId }, `manifest not applicable: ${res.detail}`)
          this.#seenManifests.delete(m.sig)
          return
        }
        this.#reject(m.body.proposer, res.reason, `manifest for round ${r} includes the bad payload of ${e.peerId}: ${res.detail}`, r)
        return
      }
      updates.push({ id: e.peerId, samples: e.samples, adapter: res.adapter })
    }
    let next: SwarmState
    try {
      const t0 = performance.now()
      next = await applyRound(parent, this.#i.config.strategy, this.#i.config.targets, updates, { workers: this.#i.mergeWorkers })
      this.#mergeMs.set(next.hash, performance.now() - t0)
    } catch (err) {
      this.#reject(m.body.proposer, 'manifest-invalid', `manifest for round ${r} cannot be aggregated: ${(err as Error).message}`, r)
      return
    }
    if (next.hash !== m.body.newStateHash) {
      this.#reject(
        m.body.proposer,
        'manifest-hash-mismatch',
        `manifest for round ${r} claims state ${m.body.newStateHash.slice(0, 12)}, replay gives ${next.hash.slice(0, 12)}`,
        r,
      )
      return
    }
    this.#decide(m, parent.hash, next)
  }

  /**
   * Synchronous decision on a verified manifest (replayed on `parentHash` to `next`):
   * commit it, roll back to it, or drop it. Being synchronous, no other manifest can
   * interleave between the check and the state change.
   */
  #decide(m: SignedManifest, parentHash: string, next: SwarmState): 'committed' | 'rolled-back' | 'lost' | 'stale' {
    const r = m.body.round
    const ctx = this.#ctx
    if (this.#status === 'running' && ctx != null && r === ctx.round && parentHash === ctx.parent.hash) {
      this.#commit(ctx, m, next)
      return 'committed'
    }
    const last = this.records.last
    if (r === this.#head.round && last != null && this.#prev != null && parentHash === this.#prev.hash) {
      if (last.manifest.sig === m.sig) return 'stale'
      if (!proposerBeats(r, m.body.proposer, last.manifest.body.proposer)) {
        this.#log.info({ round: r, proposer: m.body.proposer, winner: last.manifest.body.proposer }, 'competing manifest loses (earlier proposer wins)')
        return 'lost'
      }
      this.#rollback(m, next)
      return 'rolled-back'
    }
    return 'stale'
  }

  #record(m: SignedManifest, next: SwarmState): RoundRecord {
    return {
      round: m.body.round,
      parentStateHash: m.body.parentStateHash,
      stateHash: next.hash,
      manifest: m,
      contributors: m.body.entries.map((e) => e.peerId),
      committedAt: Date.now(),
    }
  }

  #commit(ctx: RoundContext, m: SignedManifest, next: SwarmState): void {
    this.#closeCtx()
    this.#ctx = undefined
    this.#prev = ctx.parent
    this.#head = next
    this.#announcedLast = new Set(ctx.anns.keys())
    const record = this.#record(m, next)
    this.records.append(record)
    const mergeMs = this.#mergeMs.get(next.hash)
    this.#mergeMs.clear()
    this.#prune(ctx.round)
    const hashes = new Set([...m.body.entries.map((e) => e.payloadHash), ...[...ctx.anns.values()].map((a) => a.body.payloadHash)])
    let bytesSent = 0
    let bytesReceived = 0
    for (const h of hashes) {
      bytesSent += this.#i.network.bytesServed(h)
      bytesReceived += this.#i.network.bytesFetched(h)
    }
    const detail: RoundCompleteDetail = {
      round: ctx.round,
      stateHash: next.hash,
      parentStateHash: ctx.parent.hash,
      proposer: m.body.proposer,
      contributors: record.contributors,
      metrics: {
        roundMs: Date.now() - ctx.startedAt,
        trainMs: ctx.trainMs,
        mergeMs,
        bytesReceived,
        bytesSent,
        train: ctx.trainMetrics,
      },
    }
    this.#log.info(
      { round: ctx.round, state: next.hash.slice(0, 12), proposer: m.body.proposer, contributors: record.contributors.length, roundMs: detail.metrics.roundMs },
      'round complete',
    )
    this.safeDispatchEvent('round:complete', { detail })
    this.#advance()
  }

  #rollback(m: SignedManifest, next: SwarmState): void {
    const previous = this.#head
    this.#closeCtx()
    this.#ctx = undefined
    this.#head = next
    const record = this.#record(m, next)
    this.records.replaceLast(record)
    this.#log.warn(
      { round: m.body.round, from: previous.hash.slice(0, 12), to: next.hash.slice(0, 12), proposer: m.body.proposer },
      'round superseded by an earlier proposer\'s manifest; rolled back and replayed',
    )
    this.safeDispatchEvent('round:superseded', {
      detail: { round: m.body.round, previousStateHash: previous.hash, stateHash: next.hash, proposer: m.body.proposer, contributors: record.contributors },
    })
    if (this.#status === 'done') return
    this.#beginRound()
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
    if (this.#status === 'running') this.#beginRound()
  }

  #prune(committed: number): void {
    const keepFrom = committed - (this.#i.retainRounds ?? 2) + 1
    this.#i.store.prune(keepFrom)
    for (const [h, d] of this.#decoded) if (d.round < keepFrom) this.#decoded.delete(h)
    for (const r of this.#stash.keys()) if (r <= committed) this.#stash.delete(r)
    if (this.#seenManifests.size > 10_000) this.#seenManifests.clear()
    if (this.#malformed.size > 10_000) this.#malformed.clear()
  }
}

/** Per peer and round training seed: u32 from sha256(swarm seed, peer id, round). */
export function trainingSeed(swarmSeed: number, peerId: string, round: number): number {
  return createHash('sha256').update(`flora-train:${swarmSeed}:${peerId}:${round}`).digest().readUInt32BE(0)
}
