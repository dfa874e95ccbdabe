/**
 * `createPeer(options)`: a complete flora peer (its own libp2p host with the flora
 * service) in one call.
 *
 *   const peer = await createPeer({ config, weights, rank: 8, trainer, bootstrap: [addr] })
 *   peer.addEventListener('round:complete', (e) => console.log(e.detail.round, e.detail.stateHash))
 *   await peer.start()
 *   await peer.whenDone()
 *   await peer.stop()
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { TypedEventEmitter, type PeerId, type PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost, memberFilter, type FloraLibp2p, type HostOptions } from './host.js'
import { loadOrCreateIdentity } from './identity.js'
import { acquirePidLock, PidLockBusy } from './pid-lock.js'
import type { FloraEvents, FloraInit, FloraService, FloraStats } from './service.js'
import { BootstrapDialer, type BootstrapFailure } from './bootstrap-dialer.js'
import type { RoundLog } from './round-log.js'
import type { SwarmState } from './state.js'
import type { WireCounter } from './wire-metrics.js'

export interface PeerOptions extends FloraInit {
  /** The peer's key; otherwise loaded from (or created in) `identityFile`, else ephemeral. */
  privateKey?: PrivateKey
  /** Key file that keeps the peer id across restarts. */
  identityFile?: string
  /** Listen multiaddrs (default /ip4/0.0.0.0/tcp/0). */
  listen?: readonly string[]
  /** Multiaddrs to announce instead of the listen addresses. */
  announce?: readonly string[]
  /** Multiaddrs, each ending in /p2p/<peer id>, of swarm members to join through. */
  bootstrap?: readonly string[]
  /** LAN discovery with mDNS. */
  mdns?: boolean
  /** Count raw transport bytes (benchmarks). */
  wireCounter?: WireCounter
  /** A prom-client registry for libp2p's metrics (see HostOptions.metrics; flora's own: PeerMetrics). */
  metrics?: HostOptions['metrics']
  /** Aborting stops the peer. */
  signal?: AbortSignal
  /** libp2p connection monitor settings (ping interval and timeout). */
  connectionMonitor?: HostOptions['connectionMonitor']
  /**
   * A private network: the contents of a swarm key file (see swarm-key.ts; readSwarmKey).
   * Only hosts holding the same key can connect to this peer or be reached by it.
   */
  swarmKey?: Uint8Array
  /** Peer ids this peer never connects to, inbound or outbound (a local blocklist). */
  deny?: readonly string[]
}

export interface FloraPeer {
  readonly peerId: string
  readonly swarmId: string
  readonly libp2p: FloraLibp2p
  readonly service: FloraService
  /** The last committed state: round, weights, hash. */
  readonly head: SwarmState
  /** The chain of committed round records. */
  readonly records: RoundLog
  /** Addresses others can bootstrap to (with /p2p/<peer id>), loopback ones last. */
  multiaddrs(): string[]
  /**
   * Starts the host (listening, dialling the bootstrap addresses: each is retried with
   * backoff and every failure is reported as `bootstrap:unreachable`), then the rounds
   * (unless `autoStart: false`); they begin when `config.round.minPeers` members are ready.
   * Rejects, with nothing begun, when the host cannot start (e.g. EADDRINUSE).
   */
  start(): Promise<void>
  /** Leaves the swarm and stops the host (idempotent). */
  stop(): Promise<void>
  /** Resolves when `rounds` rounds are committed, or the peer stops. */
  whenDone(): Promise<void>
  /** Connects to a peer by multiaddr. */
  dial(addr: string, signal?: AbortSignal): Promise<void>
  stats(): Readonly<FloraStats>
  addEventListener: FloraEventTarget['addEventListener']
  removeEventListener: FloraEventTarget['removeEventListener']
}

/** The service's events, and the peer's own. */
export interface PeerEvents extends FloraEvents {
  /** A bootstrap address could not be dialled; it is retried with backoff until connected. */
  'bootstrap:unreachable': CustomEvent<BootstrapFailure>
}

type FloraEventTarget = TypedEventEmitter<PeerEvents>

export class PeerOptionsError extends Error {
  override readonly name = 'PeerOptionsError'
}

const FORWARDED = ['round:start', 'round:complete', 'round:stalled', 'adapter:received', 'peer:rejected', 'member:join', 'member:leave', 'done'] as const

class Peer extends TypedEventEmitter<PeerEvents> implements FloraPeer {
  readonly libp2p: FloraLibp2p
  readonly service: FloraService
  readonly #bootstrap: BootstrapDialer
  readonly #autoStart: boolean
  #stopping: Promise<void> | undefined
  readonly #onStop: (() => void)[] = []

  constructor(libp2p: FloraLibp2p, bootstrapList: readonly { id: PeerId; addr: string }[], autoStart: boolean, signal?: AbortSignal) {
    super()
    this.libp2p = libp2p
    this.service = libp2p.services.flora
    this.#autoStart = autoStart
    this.#bootstrap = new BootstrapDialer(bootstrapList, {
      dial: (addr, dialSignal) => libp2p.dial(addr, { signal: dialSignal }),
      connected: (id) => libp2p.getConnections(id).length > 0,
      refused: (id) => this.service.isRefused(id.toString()),
      onFailure: (failure) => this.safeDispatchEvent('bootstrap:unreachable', { detail: failure }),
    })
    for (const type of FORWARDED) {
      this.service.addEventListener(type, (evt) => {
        this.safeDispatchEvent(type, { detail: (evt as CustomEvent).detail })
      })
    }
    libp2p.addEventListener('peer:discovery', (evt) => {
      const id = evt.detail.id
      if (id.equals(libp2p.peerId) || libp2p.getConnections(id).length > 0 || this.service.isRefused(id.toString())) return
      libp2p.dial(id).catch(() => {})
    })
    signal?.addEventListener('abort', () => void this.stop(), { once: true })
  }

  get peerId(): string {
    return this.libp2p.peerId.toString()
  }

  get swarmId(): string {
    return this.service.swarmId
  }

  get head(): SwarmState {
    return this.service.head
  }

  get records(): RoundLog {
    return this.service.records
  }

  multiaddrs(): string[] {
    return loopbackLast(this.libp2p.getMultiaddrs().map((m) => m.toString()))
  }

  async start(): Promise<void> {
    // Rounds begin only once the host listens: a port in use fails here, before any round
    // (or "waiting for swarm members") begins.
    await this.libp2p.start()
    this.#bootstrap.start()
    if (this.#autoStart) this.service.beginRounds()
  }

  async stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#bootstrap.stop()
      await this.libp2p.stop()
      // (also when the node never started: the state dir is released either way)
      this.service.stateDir?.close()
      for (const f of this.#onStop) f()
    })()
    await this.#stopping
  }

  /** Runs `f` once the peer has stopped (createPeer: release the identity's lock). */
  onStop(f: () => void): void {
    this.#onStop.push(f)
  }

  whenDone(): Promise<void> {
    return this.service.whenDone()
  }

  async dial(addr: string, signal?: AbortSignal): Promise<void> {
    await this.libp2p.dial(multiaddr(addr), { signal })
  }

  stats(): Readonly<FloraStats> {
    return this.service.stats()
  }
}

export async function createPeer(options: PeerOptions): Promise<FloraPeer> {
  const bootstrapList = (options.bootstrap ?? []).map((addr) => {
    let ma
    try {
      ma = multiaddr(addr)
    } catch (err) {
      throw new PeerOptionsError(`bootstrap address ${addr} is not a multiaddr: ${(err as Error).message}`)
    }
    const id = ma.getComponents().findLast((c) => c.name === 'p2p')?.value
    if (id == null) {
      throw new PeerOptionsError(`bootstrap address ${addr} must end with /p2p/<peer id> (copy the address a running peer prints on start)`)
    }
    return { addr, id }
  })
  for (const id of options.deny ?? []) {
    try {
      peerIdFromString(id)
    } catch (err) {
      throw new PeerOptionsError(`deny: ${JSON.stringify(id)} is not a peer id: ${(err as Error).message}`)
    }
  }
  // One identity file, one running peer: two processes on one key would be one peer id twice.
  const releaseIdentity = options.privateKey == null && options.identityFile != null ? lockIdentity(options.identityFile) : undefined
  let peer: Peer
  try {
    const privateKey =
      options.privateKey ??
      (options.identityFile != null ? (await loadOrCreateIdentity(options.identityFile)).privateKey : await generateKeyPair('Ed25519'))
    const selfId = peerIdFromPrivateKey(privateKey).toString()
    const self = bootstrapList.find((b) => b.id === selfId)
    if (self !== undefined) {
      throw new PeerOptionsError(
        `bootstrap ${self.addr} is this peer's own id: another peer runs with the same identity${options.identityFile != null ? ` (${options.identityFile})` : ''}; give each peer its own --identity`,
      )
    }
    peer = await createPeerWithKey(options, privateKey, bootstrapList)
  } catch (err) {
    releaseIdentity?.()
    throw err
  }
  if (releaseIdentity !== undefined) peer.onStop(releaseIdentity)
  return peer
}

/** Takes the identity file's lock (`<file>.lock`), or says which process holds it. */
function lockIdentity(identityFile: string): () => void {
  mkdirSync(dirname(identityFile), { recursive: true })
  try {
    return acquirePidLock(`${identityFile}.lock`)
  } catch (err) {
    if (!(err instanceof PidLockBusy)) throw err
    const who = err.holder === process.pid ? `process ${process.pid} (this one: another peer here uses it)` : `process ${err.holder} (another flora-peer?)`
    throw new PeerOptionsError(`identity ${identityFile} is in use by ${who}: two peers on one key are one peer id twice; give each peer its own --identity`)
  }
}

async function createPeerWithKey(options: PeerOptions, privateKey: PrivateKey, bootstrapList: readonly { id: string; addr: string }[]): Promise<Peer> {
  // A closed swarm's gater refuses non-members: bootstrapping through one cannot work.
  const isMember = memberFilter(options.config)
  const outsiders = bootstrapList.filter((b) => !isMember(b.id))
  if (outsiders.length > 0) {
    throw new PeerOptionsError(
      `bootstrap peer${outsiders.length > 1 ? 's' : ''} ${outsiders.map((b) => b.id).join(', ')} ${outsiders.length > 1 ? 'are' : 'is'} not in the swarm's members (config.members); a closed swarm only connects to its members`,
    )
  }
  const libp2p = await createHost({
    privateKey,
    listen: options.listen,
    announce: options.announce,
    bootstrap: options.bootstrap,
    mdns: options.mdns,
    wireCounter: options.wireCounter,
    connectionMonitor: options.connectionMonitor,
    metrics: options.metrics,
    swarmKey: options.swarmKey,
    deny: options.deny,
    // The peer starts the rounds itself, once the host is listening (see Peer.start).
    flora: { ...options, autoStart: false },
  })
  return new Peer(
    libp2p,
    bootstrapList.map((b) => ({ addr: b.addr, id: peerIdFromString(b.id) })),
    options.autoStart !== false,
    options.signal,
  )
}

/**
 * Addresses in the order to offer them: loopback ones (reachable from this host only) last,
 * the others in libp2p's order. A user on another machine bootstraps to the first address
 * a peer prints; with 127.0.0.1 first it waited for swarm members forever.
 */
export function loopbackLast(addrs: readonly string[]): string[] {
  const loopback = (a: string): boolean => a.startsWith('/ip4/127.') || a.startsWith('/ip6/::1/')
  return [...addrs.filter((a) => !loopback(a)), ...addrs.filter(loopback)]
}
