/**
 * Prometheus metrics of a flora peer (see docs/METRICS.md).
 *
 * `PeerMetrics` turns a peer's events (round:start, round:complete, peer:rejected, ...) and
 * its byte counters into `flora_*` metrics on a prom-client Registry; libp2p's own metrics
 * (`libp2p_*`, plus the process's `process_*` / `nodejs_*`) land on the same registry when
 * it is given to createPeer as `metrics` (see host.ts). `startMetricsServer` serves the
 * registry at `GET /metrics` over plain node:http.
 *
 *   const registry = new Registry()
 *   const peer = await createPeer({ ...options, metrics: registry })
 *   const metrics = new PeerMetrics(registry, peer)
 *   const server = await startMetricsServer({ port: 9464, registry })
 *   ...
 *   await peer.stop(); metrics.close(); await server.close()
 *
 * Only values the peer really reports are exposed: a gauge with no value yet (e.g. no
 * train loss before the first round, or a trainer that reports none) is registered on
 * its first value, so it is left out of the scrape rather than shown as 0.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { RejectReason } from '../gossip/errors.js'
import type { FloraPeer } from './peer.js'
import type { FloraEvents } from './service.js'
import { startPeerHttpServer } from './http.js'

/** What PeerMetrics reads from a peer: its events, byte counters and head. */
export type MetricsSource = Pick<FloraPeer, 'addEventListener' | 'removeEventListener' | 'stats' | 'head'>

/**
 * Every rejection reason, so each `flora_rejections_total{reason}` series exists (at 0)
 * from the first scrape. `satisfies` keeps the list in step with RejectReason.
 */
const REJECT_REASONS = Object.keys({
  malformed: true,
  oversized: true,
  'wrong-swarm': true,
  'round-window': true,
  'forged-author': true,
  'bad-signature': true,
  'wrong-parent': true,
  equivocation: true,
  'malformed-payload': true,
  'payload-mismatch': true,
  'payload-unavailable': true,
  'manifest-invalid': true,
  'manifest-hash-mismatch': true,
  'not-your-turn': true,
  censorship: true,
  'bad-certificate': true,
  locked: true,
  'bad-sync': true,
  'not-member': true,
  'rate-limited': true,
  'too-many-entries': true,
  flood: true,
} satisfies Record<RejectReason, true>) as RejectReason[]

/** A gauge registered on its first value (prom-client shows an unlabelled gauge as 0 from its creation). */
class LateGauge {
  #gauge: Gauge | undefined
  constructor(
    private readonly registry: Registry,
    private readonly name: string,
    private readonly help: string,
  ) {}

  set(value: number): void {
    this.#gauge ??= new Gauge({ name: this.name, help: this.help, registers: [this.registry] })
    this.#gauge.set(value)
  }
}

/** Round durations: a few seconds (local swarms) to tens of minutes (real training). */
const ROUND_SECONDS_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600]
/** Payload fetches: milliseconds on a LAN to a minute for a large adapter on a slow link. */
const FETCH_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

/**
 * A flora peer's metrics on a registry (one PeerMetrics per registry: the metric names
 * are fixed). Create it after createPeer: with `metrics: registry`, creating the libp2p
 * host clears prom-client's default registry (@libp2p/prometheus-metrics does).
 */
export class PeerMetrics {
  readonly #roundsCommitted: Counter
  readonly #roundsSynced: Counter<'via'>
  readonly #roundsStalled: Counter
  readonly #roundSeconds: Histogram
  readonly #contributors: LateGauge
  readonly #recordedMembers: LateGauge
  readonly #members: Gauge
  readonly #currentRound: LateGauge
  readonly #headRound: Gauge
  readonly #trainLoss: LateGauge
  readonly #trainSeconds: LateGauge
  readonly #mergeSeconds: LateGauge
  readonly #evalLoss: LateGauge
  readonly #evalAccuracy: LateGauge
  readonly #rejections: Counter<'reason'>
  readonly #adapters: Counter
  readonly #fetchSeconds: Histogram
  readonly #done: Gauge
  readonly #connected = new Set<string>()
  readonly #peer: MetricsSource
  readonly #detach: Array<() => void> = []
  #evalRound = -1

  constructor(registry: Registry, peer: MetricsSource) {
    this.#peer = peer
    const registers = [registry]
    this.#roundsCommitted = new Counter({
      name: 'flora_rounds_committed_total',
      help: 'Rounds this peer appended to its certified chain (taken part in, or caught up by state sync)',
      registers,
    })
    this.#roundsSynced = new Counter({
      name: 'flora_rounds_synced_total',
      help: 'Committed rounds this peer did not take part in but caught up with, by how (replay of the certified manifest, or a head snapshot)',
      labelNames: ['via'],
      registers,
    })
    this.#roundsStalled = new Counter({
      name: 'flora_rounds_stalled_total',
      help: 'Rounds not certified within the stall timeout after they started on this peer',
      registers,
    })
    this.#roundSeconds = new Histogram({
      name: 'flora_round_duration_seconds',
      help: 'Wall time of a round this peer took part in, from its round:start to its commit (caught-up rounds are not observed)',
      buckets: ROUND_SECONDS_BUCKETS,
      registers,
    })
    this.#contributors = new LateGauge(registry, 'flora_round_contributors', 'Peers whose adapters were merged in the last committed round')
    this.#recordedMembers = new LateGauge(registry, 'flora_round_members', 'Members recorded in the chain after the last committed round (this peer included)')
    this.#members = new Gauge({
      name: 'flora_members',
      help: 'Connected peers that passed the swarm handshake (this peer excluded)',
      registers,
    })
    this.#currentRound = new LateGauge(registry, 'flora_current_round', 'The round this peer started last (round:start)')
    this.#headRound = new Gauge({
      name: 'flora_head_round',
      help: "The last committed round (this peer's head; 0: genesis)",
      registers,
    })
    this.#trainLoss = new LateGauge(registry, 'flora_train_loss', "Local training loss the trainer reported for the last committed round it trained in (absent when the trainer reports none)")
    this.#trainSeconds = new LateGauge(registry, 'flora_train_seconds', 'Local training time of the last committed round whose training finished in time')
    this.#mergeSeconds = new LateGauge(registry, 'flora_merge_seconds', "Time this peer spent merging the last committed round's adapters and hashing the new state")
    this.#evalLoss = new LateGauge(registry, 'flora_eval_loss', 'Held-out loss of the agreed weights at the newest evaluated round (flora-peer evaluates them; absent when nothing is evaluated)')
    this.#evalAccuracy = new LateGauge(registry, 'flora_eval_accuracy', "Held-out token accuracy (greedy next-token prediction) of the agreed weights at the newest evaluated round (model trainer; absent otherwise)")
    this.#rejections = new Counter({
      name: 'flora_rejections_total',
      help: 'Messages, payloads or peers this peer refused, by reason (see RejectReason in src/gossip/errors.ts)',
      labelNames: ['reason'],
      registers,
    })
    this.#adapters = new Counter({
      name: 'flora_adapters_received_total',
      help: "Other members' adapters this peer fetched, decoded and checked against their announcements",
      registers,
    })
    this.#fetchSeconds = new Histogram({
      name: 'flora_payload_fetch_seconds',
      help: "From a member's announcement to its adapter fetched, decoded and checked (the latency a round waits on per adapter)",
      buckets: FETCH_SECONDS_BUCKETS,
      registers,
    })
    this.#done = new Gauge({
      name: 'flora_done',
      help: '1 once this peer committed all the rounds it was asked to run, else 0',
      registers,
    })
    // Cumulative byte counters the peer keeps; read at scrape time.
    const fromStats = (name: string, help: string, key: keyof ReturnType<MetricsSource['stats']>): void => {
      let last = 0
      new Counter({
        name,
        help,
        registers,
        collect() {
          const now = peer.stats()[key]
          if (now > last) this.inc(now - last)
          last = now
        },
      })
    }
    fromStats('flora_payload_received_bytes_total', 'Adapter payload bytes this peer fetched from other peers', 'payloadBytesReceived')
    fromStats('flora_payload_sent_bytes_total', 'Adapter payload bytes this peer served to other peers', 'payloadBytesSent')
    fromStats('flora_gossip_received_bytes_total', 'Gossip message bytes this peer received on the swarm topic', 'gossipBytesReceived')

    for (const via of ['replay', 'snapshot']) this.#roundsSynced.inc({ via }, 0)
    for (const reason of REJECT_REASONS) this.#rejections.inc({ reason }, 0)
    this.#members.set(0)
    this.#headRound.set(peer.head.round)
    this.#done.set(0)

    this.#on('round:start', (d) => this.#currentRound.set(d.round))
    this.#on('round:complete', (d) => {
      this.#roundsCommitted.inc()
      if (d.synced != null) this.#roundsSynced.inc({ via: d.synced })
      else this.#roundSeconds.observe(d.metrics.roundMs / 1000)
      this.#headRound.set(d.round)
      this.#contributors.set(d.contributors.length)
      this.#recordedMembers.set(d.members.length)
      const loss = d.metrics.train?.loss
      if (loss != null && Number.isFinite(loss)) this.#trainLoss.set(loss)
      if (d.metrics.trainMs != null) this.#trainSeconds.set(d.metrics.trainMs / 1000)
      if (d.metrics.mergeMs != null) this.#mergeSeconds.set(d.metrics.mergeMs / 1000)
    })
    this.#on('round:stalled', () => this.#roundsStalled.inc())
    this.#on('peer:rejected', (d) => this.#rejections.inc({ reason: d.reason }))
    this.#on('adapter:received', (d) => {
      this.#adapters.inc()
      this.#fetchSeconds.observe(d.fetchMs / 1000)
    })
    this.#on('member:join', (d) => {
      this.#connected.add(d.peerId)
      this.#members.set(this.#connected.size)
    })
    this.#on('member:leave', (d) => {
      this.#connected.delete(d.peerId)
      this.#members.set(this.#connected.size)
    })
    this.#on('done', (d) => {
      this.#headRound.set(d.round)
      this.#done.set(1)
    })
  }

  /**
   * The held-out loss (and token accuracy, if measured) of the agreed weights after `round` (0: the base model). Evaluation
   * runs outside the peer (flora-peer does it); a result older than one already recorded
   * is ignored.
   */
  recordEval(round: number, loss: number, accuracy?: number): void {
    if (round < this.#evalRound || !Number.isFinite(loss)) return
    this.#evalRound = round
    this.#evalLoss.set(loss)
    if (accuracy !== undefined && Number.isFinite(accuracy)) this.#evalAccuracy.set(accuracy)
  }

  /** Stops following the peer's events (the metrics stay on the registry, frozen). */
  close(): void {
    for (const off of this.#detach.splice(0)) off()
  }

  #on<K extends keyof FloraEvents>(type: K, handle: (detail: FloraEvents[K]['detail']) => void): void {
    const listener = (evt: FloraEvents[K]): void => handle(evt.detail)
    this.#peer.addEventListener(type, listener)
    this.#detach.push(() => this.#peer.removeEventListener(type, listener))
  }
}

export interface MetricsServerOptions {
  /** Interface to listen on (default 127.0.0.1: only this machine can scrape). */
  host?: string
  /** TCP port; 0 picks a free one (see `url`). */
  port: number
  registry: Registry
}

export interface MetricsServer {
  /** Where the metrics are served, e.g. http://127.0.0.1:9464/metrics (the real port when 0 was asked). */
  readonly url: string
  /** Stops listening and drops open (keep-alive) connections. Idempotent. */
  close(): Promise<void>
}

export const DEFAULT_METRICS_HOST = '127.0.0.1'

/** Serves `registry` at `GET /metrics` (HEAD too); 404 for any other path. */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const server = await startPeerHttpServer({ host: options.host, port: options.port, registry: options.registry })
  return { url: `${server.url}/metrics`, close: () => server.close() }
}

export interface MetricsAddress {
  host: string
  port: number
}

export class MetricsAddressError extends Error {
  override readonly name = 'MetricsAddressError'
  /** What is wrong with the value, without the value's restatement. */
  readonly reason: string
  constructor(value: string, reason: string) {
    super(`${JSON.stringify(value)} is not ${METRICS_ADDRESS_FORMAT}: ${reason}`)
    this.reason = reason
  }
}

/** The accepted form, with examples (for error messages). */
export const METRICS_ADDRESS_FORMAT = '[HOST:]PORT (e.g. 9464, 0.0.0.0:9464 or [::1]:9464)'

/**
 * Parses `[HOST:]PORT` (`9464`, `0.0.0.0:9464`, `localhost:0`, `[::1]:9464`); a bare port
 * listens on `defaultHost`. Throws MetricsAddressError with what is wrong.
 */
export function parseMetricsAddress(value: string, defaultHost = DEFAULT_METRICS_HOST): MetricsAddress {
  const v = value.trim()
  const fail = (why: string): never => {
    throw new MetricsAddressError(value, why)
  }
  if (/^[a-z][a-z\d+.-]*:\/\//i.test(v)) fail('give HOST:PORT, not a URL (the path is always /metrics)')
  let host = defaultHost
  let port = v
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(v)
  if (bracketed != null) {
    host = bracketed[1]
    port = bracketed[2]
    if (host === '') fail('the brackets hold no IPv6 address')
  } else if (v.startsWith('[')) {
    fail('an IPv6 host in brackets needs a port after it, e.g. [::1]:9464')
  } else {
    const colon = v.lastIndexOf(':')
    if (colon >= 0) {
      host = v.slice(0, colon)
      port = v.slice(colon + 1)
      if (host === '') fail(`no host before ':' (give the port alone to listen on ${defaultHost}, or 0.0.0.0:PORT for every interface)`)
      if (host.includes(':')) fail('put an IPv6 host in brackets, e.g. [::1]:9464')
    }
  }
  if (/[\s/?#@[\]]/.test(host)) fail(`${JSON.stringify(host)} is not a host name or IP address`)
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) fail(`the port must be an integer from 0 to 65535 (0: any free port), got ${JSON.stringify(port)}`)
  return { host, port: Number(port) }
}
