/**
 * flora as a libp2p service: `services: { pubsub: gossipsub(), identify: identify(),
 * flora: flora({...}) }` on an app's own libp2p node. `createPeer` builds exactly such a
 * node; embedding apps get the same behaviour on theirs.
 *
 * The service wires the round engine to the node: the swarm topic and its validator,
 * the payload and hello protocols, membership (peers that passed the handshake and are
 * connected), and byte accounting.
 */
import {
  KEEP_ALIVE,
  serviceCapabilities,
  serviceDependencies,
  TypedEventEmitter,
  type ComponentLogger,
  type Libp2pEvents,
  type PeerId,
  type PeerStore,
  type PrivateKey,
  type Startable,
  type TypedEventTarget,
} from '@libp2p/interface'
import type { ConnectionManager, Registrar, AddressManager } from '@libp2p/interface-internal'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import { createTopicScoreParams, type PeerScoreParams } from '@libp2p/gossipsub/score'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import type { CanonicalValue } from '../gossip/canonical.js'
import { decodeGossipMessage, encodeGossipMessage, LENGTH_PREFIX_ERRORS, MAX_GOSSIP_RPC_BYTES } from '../gossip/codec.js'
import { PayloadFetcher } from '../gossip/fetcher.js'
import { configDiff, HELLO_PROTOCOL, helloHandler, MAX_HELLO_PEERS, sayHello, type Hello } from '../gossip/hello.js'
import { messageRound, type GossipMessage } from '../gossip/messages.js'
import { PAYLOAD_PROTOCOL, payloadHandler, PayloadStore, type StreamOpener } from '../gossip/payload.js'
import { swarmTopic } from '../gossip/topics.js'
import { requestCommits, requestHead, requestSnapshotChunk, SYNC_PROTOCOL, syncHandler, type SnapshotReader, type SyncSource } from '../gossip/sync.js'
import { createTopicValidator, type RejectInfo } from '../gossip/validator.js'
import { payloadCap, SwarmConfigError, swarmIdOf, type SwarmConfig } from './config.js'
import {
  RoundEngine,
  type AdapterReceivedDetail,
  type PeerRejectedDetail,
  type RoundCompleteDetail,
  type RoundStalledDetail,
} from './engine.js'
import { silentLogger } from './logger.js'
import { RepeatLog } from './repeat-log.js'
import type { RoundLog } from './round-log.js'
import { genesisState, type SwarmState } from './state.js'
import { StateDir } from './state-dir.js'
import { serializeSnapshot } from './snapshot.js'
import { CumulativeUpdate } from './export.js'
import { open as openFile } from 'node:fs/promises'
import type { Trainer } from './trainer.js'
import { VERSION } from '../version.js'

export const FLORA_AGENT = `flora/${VERSION}`

/** Addresses dialled per member we were told about (the rest of a hello's list is ignored). */
export const MAX_LEARNED_ADDRS = 4
/** Members we were told about and remember (to dial); more are ignored until some connect. */
export const MAX_KNOWN_PEERS = 1024
/** A peer that delivers this many rejected gossip messages within REJECT_WINDOW_MS is disconnected and refused for a while. */
export const MAX_REJECTED_IN_WINDOW = 8
export const REJECT_WINDOW_MS = 10_000

/** Concurrent dials to members we were told about. */
export const MAX_CONCURRENT_MEETS = 8
/** A member we were told about that we failed to reach this many times is forgotten. */
export const MAX_MEET_FAILURES = 3

/**
 * gossipsub scoring for the swarm topic: every message our validator rejects (not ignores)
 * costs the peer that delivered it 10 x (invalid count)^2 points, decaying 1% a second,
 * so three rejected messages graylist a peer (score < -80: nothing it sends is processed)
 * for a few seconds, and a flood graylists it for minutes. The delivery-rate penalties are
 * off: a swarm is quiet between rounds.
 */
export function swarmTopicScoreParams() {
  return createTopicScoreParams({
    topicWeight: 1,
    timeInMeshWeight: 0.01,
    timeInMeshQuantum: 1000,
    timeInMeshCap: 100,
    firstMessageDeliveriesWeight: 0.1,
    firstMessageDeliveriesDecay: 0.99,
    firstMessageDeliveriesCap: 100,
    meshMessageDeliveriesWeight: 0,
    meshFailurePenaltyWeight: 0,
    invalidMessageDeliveriesWeight: -10,
    invalidMessageDeliveriesDecay: 0.99,
  })
}

export interface FloraEvents {
  'round:start': CustomEvent<{ round: number; parentStateHash: string }>
  'round:complete': CustomEvent<RoundCompleteDetail>
  'round:stalled': CustomEvent<RoundStalledDetail>
  'adapter:received': CustomEvent<AdapterReceivedDetail>
  'peer:rejected': CustomEvent<PeerRejectedDetail>
  'member:join': CustomEvent<{ peerId: string }>
  'member:leave': CustomEvent<{ peerId: string }>
  done: CustomEvent<{ round: number; stateHash: string }>
}

export interface FloraInit {
  /** The swarm definition every member shares (see config.ts). */
  config: SwarmConfig
  /** The base model's target weights at round 0; must hash to config.genesisStateHash. */
  weights: ReadonlyMap<string, Float32Array>
  /** This peer's LoRA rank. */
  rank: number
  /** LoRA alpha (default 2 * rank, the FLoRA paper's choice). */
  alpha?: number
  /** The local training step. */
  trainer: Trainer
  /** Rounds to run before `done` (default: until stopped). */
  rounds?: number
  logger?: Logger
  /** Name of the gossipsub service on the node (default 'pubsub'). */
  pubsubService?: string
  /** Begin rounds as soon as the node starts and enough members are ready (default true). */
  autoStart?: boolean
  /** Merge worker threads (default 0: merge on the event loop thread). */
  mergeWorkers?: number
  /** Append every committed round record to this JSON-lines file. */
  recordsFile?: string
  /** Per-source payload transfer timeout (default 120 s). */
  fetchTimeoutMs?: number
  /** Rounds of payloads kept and served (default 2). */
  retainRounds?: number
  /** How long a refused (other-swarm) peer stays blocked (default 60 s). */
  refuseMs?: number
  /** A round not certified this long after it started is reported as `round:stalled` (default deadline + 10 grace). */
  stallMs?: number
  /** Rounds this peer had committed before a restart (e.g. from its records file): it must not found a new chain. */
  priorHead?: number
  /**
   * Persistent state directory: head snapshots, the certified records and recent payloads,
   * written after every commit. A peer restarted on the same directory resumes from its
   * last committed round (and catches up with the swarm by state sync).
   */
  stateDir?: string
  /** Rounds of payloads the state dir keeps (default 8). */
  keepRounds?: number
}

export interface FloraComponents {
  peerId: PeerId
  privateKey: PrivateKey
  registrar: Registrar
  connectionManager: ConnectionManager
  peerStore: PeerStore
  addressManager: AddressManager
  events: TypedEventTarget<Libp2pEvents>
  logger: ComponentLogger
}

export interface FloraStats {
  /** Payload bytes fetched from other peers, all rounds. */
  payloadBytesReceived: number
  /** Payload bytes served to other peers, all rounds. */
  payloadBytesSent: number
  /** Gossip message bytes delivered to us (after de-duplication). */
  gossipBytesReceived: number
}

export class FloraService extends TypedEventEmitter<FloraEvents> implements Startable {
  readonly [serviceCapabilities]: string[] = ['@flora/federation']
  readonly [serviceDependencies]: string[] = ['@libp2p/pubsub', '@libp2p/identify']
  readonly [Symbol.toStringTag] = '@flora/service'

  readonly config: SwarmConfig
  readonly swarmId: string
  readonly topic: string
  readonly engine: RoundEngine
  readonly store = new PayloadStore()
  /** The persistent state directory, when the peer has one. */
  readonly stateDir: StateDir | undefined
  /** The last head serialized for a sync client (round -> bytes), when there is no state dir. */
  #snapshotCache: { round: number; bytes: Uint8Array } | undefined
  readonly #c: FloraComponents & Record<string, unknown>
  readonly #init: FloraInit
  readonly #log: Logger
  readonly #fetcher: PayloadFetcher
  readonly #self: string
  readonly #members = new Set<string>()
  readonly #helloInFlight = new Set<string>()
  /** Members we were told about (id -> listen addresses, failed dials): dialled until connected. */
  readonly #known = new Map<string, { addrs: readonly string[]; failures: number }>()
  /** Rejections logged once per (peer, reason) and window, then counted. */
  readonly #rejectLog = new RepeatLog()
  /** Recent rejected deliveries per propagation source (timestamps), for disconnecting flooders. */
  readonly #rejectedFrom = new Map<string, number[]>()
  /** A closed swarm's members (the config's allowlist). */
  readonly #allowed: ReadonlySet<string> | undefined
  readonly #dialing = new Set<string>()
  /** Failed handshakes per connected peer (a peer that is not a flora peer is left alone after 10). */
  readonly #helloFailures = new Map<string, number>()
  #sweep: NodeJS.Timeout | undefined
  readonly #refused = new Map<string, number>()
  #unwatchGossipStreams: (() => void) | undefined
  /** Head rounds members reported in their handshake. */
  readonly #heads = new Map<string, number>()
  readonly #served = new Map<string, number>()
  readonly #fetched = new Map<string, number>()
  readonly #stats: FloraStats = { payloadBytesReceived: 0, payloadBytesSent: 0, gossipBytesReceived: 0 }
  #pubsub: GossipSub | undefined
  #topologyId: string | undefined
  #started = false
  readonly #stopController = new AbortController()

  constructor(components: FloraComponents, init: FloraInit) {
    super()
    this.#c = components as FloraComponents & Record<string, unknown>
    this.#init = init
    this.config = init.config
    this.swarmId = swarmIdOf(init.config)
    this.topic = swarmTopic(this.swarmId)
    this.#self = components.peerId.toString()
    this.#log = (init.logger ?? silentLogger()).child({ peer: shortId(this.#self) })
    this.#allowed = init.config.members != null ? new Set(init.config.members) : undefined
    const genesis = genesisState(checkedWeights(init.weights, init.config), init.config.targets)
    if (genesis.hash !== init.config.genesisStateHash) {
      throw new SwarmConfigError(
        `the base weights hash to ${genesis.hash.slice(0, 16)}, but the swarm config's genesisStateHash is ${init.config.genesisStateHash.slice(0, 16)}: this is not the swarm's base model`,
      )
    }
    const open: StreamOpener = (peer, protocol, options) =>
      this.#c.connectionManager.openStream(peer, protocol, { signal: options.signal })
    let restored: ConstructorParameters<typeof RoundEngine>[0]['restored']
    if (init.stateDir != null) {
      this.stateDir = StateDir.open(init.stateDir, { swarmId: this.swarmId, genesisStateHash: genesis.hash, peerId: this.#self }, { keepRounds: init.keepRounds, swarm: { strategy: init.config.strategy, targets: init.config.targets } })
      let loaded
      try {
        loaded = this.stateDir.load(init.config.targets)
      } catch (err) {
        this.stateDir.close()
        throw err
      }
      for (const [hash, p] of loaded.payloads) this.store.putVerified(hash, p.bytes, p.round)
      const head = loaded.head ?? genesis
      let update: CumulativeUpdate | undefined
      const bytes = this.stateDir.loadUpdate()
      if (bytes != null) {
        try {
          const u = CumulativeUpdate.deserialize(bytes, init.config.targets)
          if (u.round === head.round) update = u
        } catch (err) {
          this.#log.warn({ err: (err as Error).message }, 'the state dir\'s cumulative update does not load; export will write the model only')
        }
      }
      restored = { head, records: loaded.records, pending: loaded.pending, update }
      if (head.round > 0 || loaded.pending.length > 0) {
        this.#log.info({ dir: init.stateDir, round: head.round, pending: loaded.pending.length }, 'resuming from the state dir')
      }
    }
    this.#fetcher = new PayloadFetcher({
      open,
      store: this.store,
      self: this.#self,
      maxBytes: payloadCap(init.config),
      attemptTimeoutMs: init.fetchTimeoutMs ?? 120_000,
      isConnected: (peer) => this.#c.connectionManager.getConnections(peerIdFromString(peer)).length > 0,
      onReceived: (_from, hash, bytes) => {
        this.#fetched.set(hash, (this.#fetched.get(hash) ?? 0) + bytes)
        this.#stats.payloadBytesReceived += bytes
      },
      onAttemptFailed: (from, hash, err) => {
        this.#log.debug({ from: shortId(from), hash: hash.slice(0, 12), code: err.code, err: err.message.slice(0, 200) }, 'payload fetch attempt failed')
      },
    })
    this.engine = new RoundEngine({
      self: this.#self,
      privateKey: components.privateKey,
      config: init.config,
      swarmId: this.swarmId,
      genesis,
      rank: init.rank,
      alpha: init.alpha ?? 2 * init.rank,
      trainer: init.trainer,
      store: this.store,
      fetcher: this.#fetcher,
      log: this.#log,
      maxRounds: init.rounds,
      mergeWorkers: init.mergeWorkers ?? 0,
      recordsFile: init.recordsFile,
      stateDir: this.stateDir,
      restored,
      trackUpdate: this.stateDir != null,
      retainRounds: init.retainRounds,
      stallMs: init.stallMs,
      priorHead: init.priorHead,
      network: {
        publish: async (msg) => this.#publish(msg),
        members: () => this.#members,
        isReady: (peer) => this.#isSubscribed(peer),
        reportedHead: (peer) => this.#heads.get(peer),
        forgetReportedHead: (peer) => void this.#heads.delete(peer),
        // Caught up: tell the members our new head (they wait for us in the running round).
        caughtUp: () => {
          for (const id of this.#members) void this.#greet(peerIdFromString(id), true)
        },
        bytesServed: (hash) => this.#served.get(hash) ?? 0,
        bytesFetched: (hash) => this.#fetched.get(hash) ?? 0,
        syncHead: (peer, signal) => requestHead(open, peerIdFromString(peer), signal),
        syncCommits: (peer, from, limit, signal) => requestCommits(open, peerIdFromString(peer), from, limit, signal),
        syncSnapshotChunk: (peer, req, signal) => requestSnapshotChunk(open, peerIdFromString(peer), req, signal),
      },
    })
    for (const type of ['round:start', 'round:complete', 'round:stalled', 'adapter:received', 'peer:rejected', 'done'] as const) {
      this.engine.addEventListener(type, (evt) => {
        this.safeDispatchEvent(type, { detail: (evt as CustomEvent).detail })
      })
    }
    this.engine.addEventListener('round:complete', (e) => {
      this.#pruneCounters()
      // A member that reported itself behind has now fallen further behind; one that
      // reported a head we have reached no longer tells us anything.
      for (const [id, head] of this.#heads) if (head <= e.detail.round) this.#heads.delete(id)
    })
    // A peer done with its rounds leaves the topic: the others stop expecting its adapters
    // and drop it from the proposer order. It keeps serving payloads until it stops.
    this.engine.addEventListener('done', () => {
      try {
        this.#pubsub?.unsubscribe(this.topic)
      } catch {
        // stopping
      }
      // Tell the members our final head: one that fell behind learns it should catch up
      // (from us, while we linger) instead of waiting for a round nobody else runs any more.
      for (const id of this.#members) void this.#greet(peerIdFromString(id), true)
    })
  }

  /** The last committed state (weights, hash, round). */
  get head(): SwarmState {
    return this.engine.head
  }

  /** The committed round records (manifest chain). */
  get records(): RoundLog {
    return this.engine.records
  }

  /** Members still running rounds (subscribed to the swarm topic): a peer done with its rounds lingers for them. */
  runningMembers(): string[] {
    return [...this.#members].filter((id) => this.#isSubscribed(id)).sort()
  }

  /** Connected peers that passed the swarm handshake. */
  get members(): readonly string[] {
    return [...this.#members].sort()
  }

  stats(): Readonly<FloraStats> {
    return { ...this.#stats }
  }

  /** True while a peer is refused (other swarm); the node's connection gater consults this. */
  isRefused(peerId: string): boolean {
    const until = this.#refused.get(peerId)
    if (until == null) return false
    if (until < Date.now()) {
      this.#refused.delete(peerId)
      return false
    }
    return true
  }

  /** Begins rounds (once enough members are ready); resolves when round 1 has started. */
  async startRounds(signal?: AbortSignal): Promise<void> {
    await this.engine.start(signal)
  }

  /** Resolves when the configured number of rounds is done, or the service stops. */
  whenDone(): Promise<void> {
    return this.engine.whenDone()
  }

  async start(): Promise<void> {
    const reg = this.#c.registrar
    await reg.handle(
      PAYLOAD_PROTOCOL,
      payloadHandler(this.store, {
        onServed: (_peer, hash, bytes) => {
          this.#served.set(hash, (this.#served.get(hash) ?? 0) + bytes)
          this.#stats.payloadBytesSent += bytes
        },
      }),
      { maxInboundStreams: 1024, maxOutboundStreams: 1024 },
    )
    await reg.handle(SYNC_PROTOCOL, syncHandler(this.#syncSource()), { maxInboundStreams: 32, maxOutboundStreams: 32 })
    await reg.handle(
      HELLO_PROTOCOL,
      helloHandler(
        async (peer, theirs) => this.#hello(theirs != null && this.#helloProblem(peer.toString(), theirs) == null),
        (peer, hello) => this.#onHello(peer, hello),
      ),
      { maxInboundStreams: 64, maxOutboundStreams: 64 },
    )
    this.#topologyId = await reg.register(HELLO_PROTOCOL, {
      onConnect: (peer) => {
        void this.#greet(peer)
      },
    })
    this.#started = true
    // Every few seconds, dial the members we were told about and are not connected to: on a
    // loaded machine (or a busy peer) dials fail and time out, and a swarm must still end
    // up fully connected.
    this.#sweep = setInterval(() => this.#meetKnown(), 3000)
    this.#sweep.unref()
  }

  async afterStart(): Promise<void> {
    const name = this.#init.pubsubService ?? 'pubsub'
    const pubsub = this.#c[name] as GossipSub | undefined
    if (pubsub == null || typeof pubsub.subscribe !== 'function') {
      throw new Error(`flora needs a gossipsub service named '${name}' on the libp2p node (services: { ${name}: gossipsub() })`)
    }
    this.#pubsub = pubsub
    // Rejected gossip lowers the sender's score until it is graylisted (see swarmTopicScoreParams).
    const score = (pubsub as unknown as { score?: { params?: PeerScoreParams } }).score
    if (score?.params?.topics != null) score.params.topics[this.topic] = swarmTopicScoreParams()
    else this.#log.warn('this gossipsub has no peer score: rejected gossip will not lower its sender\'s score')
    pubsub.topicValidators.set(
      this.topic,
      createTopicValidator({
        swarmId: this.swarmId,
        maxPayloadBytes: payloadCap(this.config),
        maxRank: this.config.maxRank,
        allowed: this.#allowed,
        maxMessageBytes: () => this.engine.maxMessageBytes(),
        checkContext: (msg) => this.engine.checkContext(msg),
        onRefused: (info) => this.#onRefused(info),
      }),
    )
    this.#watchGossipStreams(pubsub)
    pubsub.addEventListener('message', this.#onMessage)
    pubsub.addEventListener('subscription-change', this.#onSubscriptionChange)
    pubsub.addEventListener('gossipsub:heartbeat', this.#onHeartbeat)
    pubsub.subscribe(this.topic)
    this.#c.events.addEventListener('peer:disconnect', this.#onDisconnect)
    this.#log.info({ swarm: this.swarmId.slice(0, 16), topic: this.topic, rank: this.#init.rank, strategy: this.config.strategy }, 'flora started')
    if (this.#init.autoStart !== false) this.beginRounds()
  }

  /**
   * `startRounds` without waiting: begins the rounds (once; later calls do nothing) and logs
   * a failure. The service calls it when it starts unless `autoStart: false`; `createPeer`
   * calls it once the host is listening.
   */
  beginRounds(): void {
    // (engine.start does nothing once the engine left 'idle')
    if (!this.#started) return
    this.engine.start(this.#stopController.signal).catch((err: Error) => {
      if (!this.#stopController.signal.aborted) this.#log.error({ err: err.message }, 'could not start rounds')
    })
  }

  async beforeStop(): Promise<void> {
    this.#stopController.abort(new Error('flora stopping'))
    if (this.#sweep != null) clearInterval(this.#sweep)
    this.engine.stop()
    await this.engine.records.flush()
    const pubsub = this.#pubsub
    if (pubsub != null) {
      pubsub.removeEventListener('message', this.#onMessage)
      pubsub.removeEventListener('subscription-change', this.#onSubscriptionChange)
      pubsub.removeEventListener('gossipsub:heartbeat', this.#onHeartbeat)
      pubsub.topicValidators.delete(this.topic)
      this.#unwatchGossipStreams?.()
      const score = (pubsub as unknown as { score?: { params?: PeerScoreParams } }).score
      if (score?.params?.topics != null) delete score.params.topics[this.topic]
      try {
        pubsub.unsubscribe(this.topic)
      } catch {
        // gossipsub may already be stopping
      }
    }
    this.#c.events.removeEventListener('peer:disconnect', this.#onDisconnect)
    this.#rejectLog.flush()
  }

  async stop(): Promise<void> {
    this.stateDir?.close()
    if (!this.#started) return
    this.#started = false
    if (this.#topologyId != null) this.#c.registrar.unregister(this.#topologyId)
    await this.#c.registrar.unhandle(PAYLOAD_PROTOCOL).catch(() => {})
    await this.#c.registrar.unhandle(HELLO_PROTOCOL).catch(() => {})
    await this.#c.registrar.unhandle(SYNC_PROTOCOL).catch(() => {})
  }

  // ---------------------------------------------------------------------------------

  /** What this peer serves to members that sync: its certified chain and head snapshots. */
  #syncSource(): SyncSource {
    return {
      head: () => {
        const head = this.engine.head
        const snapshots = this.stateDir != null ? this.stateDir.headRounds() : [head.round]
        return { round: head.round, stateHash: head.hash, snapshots: snapshots.filter((r) => r > 0).slice(-16) }
      },
      commits: (from, limit) => {
        const out = []
        for (let r = from; r < from + limit; r++) {
          const rec = this.engine.records.get(r)
          if (rec == null) break
          out.push({ kind: 'commit' as const, manifest: rec.manifest, certificate: [...rec.certificate] })
        }
        return out
      },
      snapshot: async (round): Promise<SnapshotReader | undefined> => {
        const file = this.stateDir?.headFile(round)
        if (file != null) {
          return {
            total: file.size,
            read: async (offset, length) => {
              const fh = await openFile(file.path, 'r')
              try {
                const buf = Buffer.alloc(length)
                const { bytesRead } = await fh.read(buf, 0, length, offset)
                return new Uint8Array(buf.buffer, buf.byteOffset, bytesRead)
              } finally {
                await fh.close()
              }
            },
          }
        }
        const head = this.engine.head
        if (this.stateDir != null || round !== head.round || round === 0) return undefined
        if (this.#snapshotCache?.round !== round) this.#snapshotCache = { round, bytes: serializeSnapshot(head, this.swarmId) }
        const bytes = this.#snapshotCache.bytes
        return { total: bytes.byteLength, read: async (offset, length) => bytes.subarray(offset, offset + length) }
      },
    }
  }

  async #publish(msg: GossipMessage): Promise<void> {
    const pubsub = this.#pubsub
    if (pubsub == null) throw new Error('flora is not started')
    // The GossipSub class takes publish options its interface does not declare; a lone
    // peer (minPeers 1) must still be able to publish its own round.
    const publish = pubsub.publish as (topic: string, data: Uint8Array, opts?: { allowPublishToZeroTopicPeers?: boolean }) => Promise<unknown>
    await publish.call(pubsub, this.topic, encodeGossipMessage(msg), { allowPublishToZeroTopicPeers: true })
  }

  /**
   * A member is ready when gossip flows both ways: it is subscribed to the swarm topic
   * (we got its subscription over its stream to us) and our own outbound gossipsub stream
   * to it is open. Without the second check a message published right after the member
   * subscribed can be dropped. The outbound stream table is internal to @libp2p/gossipsub
   * (pinned major); if it ever disappears we fall back to the subscription alone.
   */
  #isSubscribed(peer: string): boolean {
    const pubsub = this.#pubsub
    if (pubsub == null) return false
    if (!pubsub.getSubscribers(this.topic).some((p) => p.toString() === peer)) return false
    const outbound = (pubsub as unknown as { streamsOutbound?: unknown }).streamsOutbound
    return outbound instanceof Map ? outbound.has(peer) : true
  }

  readonly #onMessage = (evt: CustomEvent<Message>): void => {
    const m = evt.detail
    if (m.topic !== this.topic) return
    this.#stats.gossipBytesReceived += m.data.byteLength
    const decoded = decodeGossipMessage(m.data)
    if (decoded.ok) this.engine.handleMessage(decoded.msg)
  }

  readonly #onSubscriptionChange = (): void => {
    this.engine.membersChanged()
  }

  // Outbound gossip streams open without an event; the heartbeat (1 s) re-checks readiness
  // while the engine waits for its first round.
  readonly #onHeartbeat = (): void => {
    if (this.engine.status === 'waiting') this.engine.membersChanged()
  }

  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail.toString()
    this.#helloFailures.delete(id)
    if (this.#members.delete(id)) {
      this.#log.info({ member: shortId(id), members: this.#members.size }, 'member left')
      this.safeDispatchEvent('member:leave', { detail: { peerId: id } })
      this.engine.membersChanged()
    }
  }

  #onRefused(info: RejectInfo): void {
    const peerId = info.publisher ?? info.from
    if (info.action === 'reject') this.#countRejected(info.from)
    const round = info.msg != null ? messageRound(info.msg) : undefined
    const fields = { from: shortId(info.from), publisher: info.publisher && shortId(info.publisher), reason: info.reason, round }
    // Votes and certificates of the round we just committed keep arriving for a moment: normal, not a fault.
    // Messages of rounds ahead of ours mean *we* are behind (we catch up by state sync), and
    // old certificates are repairs for peers that are behind: neither is the sender's fault.
    const quiet =
      info.reason === 'round-window' &&
      round !== undefined &&
      ((round >= this.engine.head.round - 1 && round <= this.engine.head.round) || (round > this.engine.round && this.engine.behind) || info.msg?.kind === 'commit')
    if (quiet) {
      this.#log.debug(fields, `gossip ignored: ${info.detail}`)
      return
    }
    this.#rejectLog.note(`gossip|${peerId}|${info.reason}|${info.action}`, (repeats) => {
      const line = repeats > 0 ? `gossip ${info.action === 'reject' ? 'rejected' : 'ignored'} ${repeats} more times: ${info.detail}` : `gossip ${info.action === 'reject' ? 'rejected' : 'ignored'}: ${info.detail}`
      if (info.action === 'reject') this.#log.warn({ ...fields, repeats }, line)
      else this.#log.info({ ...fields, repeats }, line)
    })
    this.safeDispatchEvent('peer:rejected', { detail: { peerId, reason: info.reason, detail: info.detail, round } })
  }

  /**
   * gossipsub's score stops processing a peer's messages after three rejections, but its
   * bytes still arrive and are decoded; a peer that keeps delivering rejected messages (no
   * honest peer relays what it rejected) is disconnected and refused for `refuseMs`.
   */
  #countRejected(from: string): void {
    if (from === this.#self) return
    const now = Date.now()
    const recent = (this.#rejectedFrom.get(from) ?? []).filter((t) => t > now - REJECT_WINDOW_MS)
    recent.push(now)
    this.#rejectedFrom.set(from, recent)
    if (this.#rejectedFrom.size > 4096) this.#rejectedFrom.clear()
    if (recent.length < MAX_REJECTED_IN_WINDOW || this.isRefused(from)) return
    this.#rejectedFrom.delete(from)
    this.#refuseFlooder(from, `${recent.length} rejected gossip messages in ${REJECT_WINDOW_MS / 1000} s`)
  }

  /** Disconnects a peer at once (its connections aborted: what it has in flight is dropped) and refuses it for `refuseMs`. */
  #refuseFlooder(from: string, why: string): void {
    const refuseMs = this.#init.refuseMs ?? 60_000
    this.#refused.set(from, Date.now() + refuseMs)
    const detail = `${why}: disconnected and refused for ${Math.round(refuseMs / 1000)} s`
    this.#log.warn({ peer: from, reason: 'flood' }, `refusing peer: ${detail}`)
    this.safeDispatchEvent('peer:rejected', { detail: { peerId: from, reason: 'flood', detail } })
    if (this.#members.delete(from)) {
      this.safeDispatchEvent('member:leave', { detail: { peerId: from } })
      this.engine.membersChanged()
    }
    const err = new Error(`flora refused ${from}: ${why}`)
    for (const conn of this.#c.connectionManager.getConnections(peerIdFromString(from))) conn.abort(err)
  }

  /**
   * gossipsub refuses an RPC above its `maxInboundDataLength` (flora hosts: MAX_GOSSIP_RPC_BYTES; or with a malformed length prefix)
   * when its prefix arrives, inside gossipsub, before flora's validator sees anything, and
   * then only stops reading that stream: the sender's bytes already in flight (tens of MB
   * for a flood of oversized manifests) are still received and buffered. No honest flora
   * peer sends such an RPC, so the sender is refused at once and its connections aborted.
   * gossipsub reports read errors through its `handlePeerReadStreamError` method (its
   * documented hook for spying on them); it is wrapped here and restored on stop.
   */
  #watchGossipStreams(pubsub: GossipSub): void {
    const target = pubsub as unknown as { handlePeerReadStreamError?: (err: unknown, peerId: PeerId) => void }
    const original = target.handlePeerReadStreamError
    if (typeof original !== 'function') {
      this.#log.warn('this gossipsub does not report stream read errors: senders of oversized gossip RPCs are not refused')
      return
    }
    const cap = (pubsub as unknown as { opts?: { maxInboundDataLength?: number } }).opts?.maxInboundDataLength ?? MAX_GOSSIP_RPC_BYTES
    target.handlePeerReadStreamError = (err: unknown, peerId: PeerId) => {
      const name = (err as { name?: unknown } | null)?.name
      if (typeof name === 'string' && LENGTH_PREFIX_ERRORS.has(name) && !this.isRefused(peerId.toString())) {
        this.#refuseFlooder(peerId.toString(), `a gossip RPC over the ${cap} byte cap or with a malformed length prefix (${(err as Error).message})`)
      }
      original.call(pubsub, err, peerId)
    }
    this.#unwatchGossipStreams = () => {
      target.handlePeerReadStreamError = original
      this.#unwatchGossipStreams = undefined
    }
  }

  /** Our hello; the member list only for a peer whose own hello checked out (`share`). */
  async #hello(share: boolean): Promise<Hello> {
    const peers: { id: string; addrs: string[] }[] = []
    for (const id of share ? [...this.#members].slice(0, MAX_HELLO_PEERS) : []) {
      try {
        const p = await this.#c.peerStore.get(peerIdFromString(id))
        const addrs = p.addresses.map((a) => a.multiaddr.toString()).slice(0, 16)
        if (addrs.length > 0) peers.push({ id, addrs })
      } catch {
        // not in the peer store (yet): skip
      }
    }
    return {
      v: 1,
      swarmId: this.swarmId,
      config: this.config as unknown as CanonicalValue,
      agent: FLORA_AGENT,
      peers,
      head: { round: this.engine.head.round, stateHash: this.engine.head.hash },
    }
  }

  /**
   * Runs the hello handshake on a connection. A failed attempt (a slow or busy peer, a
   * stream reset, an identify that timed out so the topology never fired) is not a
   * refusal: the sweep (#meetKnown) greets connected non-members again every few seconds.
   */
  async #greet(peer: PeerId, again = false): Promise<void> {
    const id = peer.toString()
    if ((this.#members.has(id) && !again) || this.#helloInFlight.has(id) || !this.#started) return
    if (this.isRefused(id)) {
      await this.#c.connectionManager.closeConnections(peer).catch(() => {})
      return
    }
    this.#helloInFlight.add(id)
    // The dialer speaks first: members we already checked get our member list, strangers not.
    const share = this.#members.has(id)
    try {
      const signal = AbortSignal.any([AbortSignal.timeout(15_000), this.#stopController.signal])
      const theirs = await sayHello(
        (p, protocol, options) => this.#c.connectionManager.openStream(p, protocol, { signal: options.signal }),
        peer,
        await this.#hello(share),
        signal,
      )
      const joined = this.#onHello(peer, theirs)
      // It checked out and is new: now it gets our member list (a second, short hello).
      if (joined && !share && this.#members.size > 1) {
        this.#helloInFlight.delete(id)
        void this.#greet(peer, true)
      }
    } catch (err) {
      if (!this.#stopController.signal.aborted) this.#log.debug({ peer: shortId(id), err: (err as Error).message }, 'hello failed')
      this.#helloFailures.set(id, (this.#helloFailures.get(id) ?? 0) + 1)
    } finally {
      this.#helloInFlight.delete(id)
    }
  }

  /** Why a peer's hello does not check out (undefined: it does). */
  #helloProblem(id: string, hello: Hello | null): { reason: 'wrong-swarm' | 'not-member'; detail: string } | undefined {
    if (hello == null) return { reason: 'wrong-swarm', detail: 'malformed swarm handshake' }
    if (hello.swarmId !== this.swarmId) {
      return {
        reason: 'wrong-swarm',
        detail: `peer is in swarm ${hello.swarmId.slice(0, 16)}, we are in ${this.swarmId.slice(0, 16)}; config differs in: ${configDiff(this.config as unknown as CanonicalValue, hello.config).join(', ') || '(unknown)'}`,
      }
    }
    if (this.#allowed != null && !this.#allowed.has(id)) return { reason: 'not-member', detail: 'peer is not on this closed swarm\'s member list' }
    return undefined
  }

  /** Handles a peer's hello; true when it made the peer a new member. */
  #onHello(peer: PeerId, hello: Hello | null): boolean {
    const id = peer.toString()
    if (this.#stopController.signal.aborted) return false
    const problem = this.#helloProblem(id, hello)
    if (problem != null || hello == null) {
      if (this.isRefused(id) || problem == null) return false
      this.#refused.set(id, Date.now() + (this.#init.refuseMs ?? 60_000))
      this.#log.warn({ peer: id, reason: problem.reason }, `refusing peer: ${problem.detail}`)
      this.safeDispatchEvent('peer:rejected', { detail: { peerId: id, reason: problem.reason, detail: problem.detail } })
      void this.#c.connectionManager.closeConnections(peer).catch(() => {})
      return false
    }
    const wasBehind = this.#heads.has(id)
    if (hello.head != null && hello.head.round !== this.engine.head.round) this.#heads.set(id, hello.head.round)
    else this.#heads.delete(id)
    if (hello.head != null && this.#members.has(id)) this.engine.aheadReported(id, hello.head.round)
    // A member that caught up says hello again: it takes part in the round running now.
    // A member says hello again once it caught up: it takes part in the round running now.
    if (this.#members.has(id) && (wasBehind || hello.head?.round === this.engine.head.round)) {
      this.engine.membersChanged()
      if (hello.head?.round === this.engine.head.round) this.engine.caughtUp(id)
    }
    const joined = !this.#members.has(id)
    if (joined) {
      // Lost connections to members are redialled by libp2p's reconnect queue.
      void this.#c.peerStore.merge(peer, { tags: { [`${KEEP_ALIVE}-flora`]: { value: 1 } } }).catch(() => {})
      this.#members.add(id)
      this.#log.info({ member: shortId(id), members: this.#members.size }, 'member joined')
      this.safeDispatchEvent('member:join', { detail: { peerId: id } })
      this.engine.membersChanged()
    }
    // Remember the members it knows that we do not; the sweep dials them a few at a time
    // (a hello cannot make us open more than MAX_CONCURRENT_MEETS dials at once).
    for (const p of hello.peers) {
      if (p.id === this.#self || this.#members.has(p.id) || this.isRefused(p.id) || this.#known.has(p.id)) continue
      if (this.#allowed != null && !this.#allowed.has(p.id)) continue
      if (this.#known.size >= MAX_KNOWN_PEERS) break
      const addrs = p.addrs.filter(isDialableAddr).slice(0, MAX_LEARNED_ADDRS)
      if (addrs.length > 0) this.#known.set(p.id, { addrs, failures: 0 })
    }
    this.#meetKnown(false)
    return joined
  }

  /** Greets connected peers that are not members yet; dials members we know of and are not connected to (a few at a time). */
  #meetKnown(greet = true): void {
    if (!this.#started || this.#stopController.signal.aborted) return
    if (greet) {
      for (const conn of this.#c.connectionManager.getConnections()) {
        const id = conn.remotePeer.toString()
        if (this.#members.has(id) || this.#helloInFlight.has(id) || this.isRefused(id) || (this.#helloFailures.get(id) ?? 0) >= 10) continue
        void this.#greet(conn.remotePeer)
      }
    }
    for (const [id, known] of this.#known) {
      if (this.#dialing.size >= MAX_CONCURRENT_MEETS) return
      if (this.#members.has(id)) {
        this.#known.delete(id)
        continue
      }
      if (this.#dialing.has(id) || this.#c.connectionManager.getConnections(peerIdFromString(id)).length > 0) continue
      void this.#meet(id, known)
    }
  }

  /** Connects to a member we were told about (once at a time; the sweep tries again later). */
  async #meet(id: string, known: { addrs: readonly string[]; failures: number }): Promise<void> {
    if (this.#dialing.has(id) || this.isRefused(id) || this.#stopController.signal.aborted) return
    this.#dialing.add(id)
    try {
      const peer = peerIdFromString(id)
      if (this.#c.connectionManager.getConnections(peer).length > 0) return
      const mas = known.addrs.flatMap((a) => {
        try {
          return [multiaddr(a)]
        } catch {
          return []
        }
      })
      await this.#c.peerStore.merge(peer, { multiaddrs: mas })
      await this.#c.connectionManager.openConnection(peer, { signal: AbortSignal.any([AbortSignal.timeout(15_000), this.#stopController.signal]) })
    } catch (err) {
      if (!this.#stopController.signal.aborted) this.#log.debug({ peer: shortId(id), err: (err as Error).message }, 'could not connect to a member we were told about')
      // Someone told us about a peer we cannot reach (gone, or made up): stop trying after a few attempts.
      if (++known.failures >= MAX_MEET_FAILURES) this.#known.delete(id)
    } finally {
      this.#dialing.delete(id)
    }
  }

  #pruneCounters(): void {
    for (const h of this.#served.keys()) if (!this.store.has(h)) this.#served.delete(h)
    for (const h of this.#fetched.keys()) if (!this.store.has(h)) this.#fetched.delete(h)
  }
}

function checkedWeights(weights: ReadonlyMap<string, Float32Array>, config: SwarmConfig): ReadonlyMap<string, Float32Array> {
  for (const t of config.targets) {
    const w = weights.get(t.name)
    if (w == null) throw new SwarmConfigError(`no base weight for target module ${t.name}`)
    if (w.length !== t.inFeatures * t.outFeatures) {
      throw new SwarmConfigError(`base weight ${t.name} has ${w.length} elements, target shape is [${t.outFeatures}, ${t.inFeatures}]`)
    }
  }
  const out = new Map<string, Float32Array>()
  for (const t of config.targets) out.set(t.name, weights.get(t.name) as Float32Array)
  return out
}

/** A learned address we would dial: a parseable multiaddr over TCP (ip4, ip6 or dns). */
function isDialableAddr(a: string): boolean {
  try {
    const protos = multiaddr(a).getComponents().map((c) => c.name)
    return protos.includes('tcp') && ['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(protos[0] ?? '')
  } catch {
    return false
  }
}

export function shortId(peerId: string): string {
  return peerId.length > 12 ? `…${peerId.slice(-8)}` : peerId
}

/** The libp2p service factory: `services: { flora: flora({...}) }`. */
export function flora(init: FloraInit): (components: FloraComponents) => FloraService {
  return (components) => new FloraService(components, init)
}
