/**
 * The libp2p host of a flora peer: TCP, Noise, Yamux, identify, gossipsub, bootstrap-list
 * discovery and optionally mDNS, with the flora service on it. A closed federation adds a
 * private-network key (pnet: every connection is encrypted under the shared swarm key
 * before the handshake) and/or a member list (config.members: the connection gater
 * refuses every other peer id, inbound and outbound).
 */
import { createLibp2p, type Libp2p, type Libp2pOptions } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub, type GossipsubOpts } from '@libp2p/gossipsub'
import { bootstrap } from '@libp2p/bootstrap'
import { mdns } from '@libp2p/mdns'
import { preSharedKey } from '@libp2p/pnet'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import type { Registry } from 'prom-client'
import { flora, type FloraInit, type FloraService } from './service.js'
import { wireMetrics, type WireCounter } from './wire-metrics.js'
import { parseSwarmKey } from './swarm-key.js'
import { fastGossipMessageId, MAX_GOSSIP_RPC_BYTES } from '../gossip/codec.js'
import type { SwarmConfig } from './config.js'

export interface HostOptions {
  privateKey: PrivateKey
  /** Listen multiaddrs (default /ip4/0.0.0.0/tcp/0). */
  listen?: readonly string[]
  /** Addresses to announce instead of the listen addresses (NAT, public IPs). */
  announce?: readonly string[]
  /** Multiaddrs (with /p2p/<id>) of peers to join through. */
  bootstrap?: readonly string[]
  /** Discover peers on the LAN with mDNS. */
  mdns?: boolean
  flora: FloraInit
  /** Count raw transport bytes into this object. */
  wireCounter?: WireCounter
  /**
   * Report libp2p's metrics (bytes by protocol, connections, streams, ...; plus the
   * process's CPU, memory and event loop) on this prom-client registry, through
   * @libp2p/prometheus-metrics. libp2p takes one metrics component: with both a registry
   * and a `wireCounter`, the registry's component is used and also feeds the counter.
   * Creating the host clears prom-client's default registry (the library resets its
   * global metrics), so give it a registry of your own.
   */
  metrics?: Registry
  /** libp2p's connection monitor (pings every 10 s by default; a connection whose peer does not answer is aborted). */
  connectionMonitor?: NonNullable<Libp2pOptions['connectionMonitor']>
  /**
   * A private network: the swarm key file's contents (`/key/swarm/psk/1.0.0/`, see
   * swarm-key.ts). Only hosts with the same key can connect. Not part of the swarm config.
   */
  swarmKey?: Uint8Array
  /** Peer ids this host never connects to, inbound or outbound (a local blocklist). */
  deny?: readonly string[]
}

/**
 * Whether a peer id may connect under `config.members` (always true for an open swarm).
 * The host's own id is always allowed.
 */
export function memberFilter(config: Pick<SwarmConfig, 'members'>, self?: string): (peerId: string) => boolean {
  if (config.members == null) return () => true
  const members = new Set(config.members)
  return (peerId) => peerId === self || members.has(peerId)
}

export { MAX_GOSSIP_RPC_BYTES }

/**
 * The gossipsub options flora's hosts use; an app that embeds the flora service in its own
 * libp2p node should pass them too (`pubsub: gossipsub(floraGossipsubOptions())`).
 */
export function floraGossipsubOptions(): Partial<GossipsubOpts> {
  return {
    allowPublishToZeroTopicPeers: true,
    emitSelf: false,
    // gossipsub's IP-colocation penalty graylists a host's 11th+ peer from one IP, which
    // silently partitions a local swarm (the swarm script, tests, benches) above 10
    // peers. Loopback is exempt; flora's own validation (signatures, manifests) does
    // not rely on gossipsub scores.
    scoreParams: { IPColocationFactorWhitelist: new Set(['127.0.0.1', '::1']) },
    // An RPC larger than this is refused when its length prefix arrives, before its bytes
    // are buffered (the default, 4 MB, lets a flood of oversized manifests hold tens of MB
    // in flight). See MAX_GOSSIP_RPC_BYTES.
    maxInboundDataLength: MAX_GOSSIP_RPC_BYTES,
    // A copy of a message already seen is dropped before its signature is checked again
    // (without it, a quarter of a 48-peer swarm's CPU went to verifying copies).
    fastMsgIdFn: fastGossipMessageId,
  }
}

/** libp2p's connection monitor as flora sets it up: late pings are measured, never fatal (see createHost). */
export const DEFAULT_CONNECTION_MONITOR = {
  pingTimeout: { minTimeout: 60_000, maxTimeout: 120_000 },
  abortConnectionOnPingFailure: false,
} as const satisfies NonNullable<Libp2pOptions['connectionMonitor']>

type MetricsFactory = NonNullable<Libp2pOptions['metrics']>

/** libp2p's metrics component: Prometheus (with the wire counter fed too, if any), the wire counter alone, or none. */
function libp2pMetrics(options: Pick<HostOptions, 'metrics' | 'wireCounter'>): MetricsFactory | undefined {
  if (options.metrics == null) return options.wireCounter != null ? wireMetrics(options.wireCounter) : undefined
  const prometheus: MetricsFactory = prometheusMetrics({ registry: options.metrics })
  const counter = options.wireCounter
  if (counter == null) return prometheus
  const wire = wireMetrics(counter)()
  return (components) => {
    const metrics = prometheus(components)
    const track = metrics.trackMultiaddrConnection.bind(metrics)
    metrics.trackMultiaddrConnection = (maConn) => {
      wire.trackMultiaddrConnection(maConn)
      track(maConn)
    }
    return metrics
  }
}

export type FloraLibp2p = Libp2p<{ identify: unknown; pubsub: unknown; flora: FloraService }>

export async function createHost(options: HostOptions): Promise<FloraLibp2p> {
  // The gater consults the flora service (created below) so peers of other swarms are not redialled.
  let service: FloraService | undefined
  const discovery: NonNullable<Libp2pOptions['peerDiscovery']> = []
  if (options.bootstrap != null && options.bootstrap.length > 0) {
    discovery.push(bootstrap({ list: [...options.bootstrap], timeout: 0 }))
  }
  if (options.mdns === true) discovery.push(mdns())
  const isMember = memberFilter(options.flora.config, peerIdFromPrivateKey(options.privateKey).toString())
  const denied = new Set(options.deny ?? [])
  const refuse = (peerId: PeerId): boolean => {
    const id = peerId.toString()
    return !isMember(id) || denied.has(id) || (service?.isRefused(id) ?? false)
  }
  const node = await createLibp2p({
    start: false,
    privateKey: options.privateKey,
    addresses: {
      listen: [...(options.listen ?? ['/ip4/0.0.0.0/tcp/0'])],
      announce: options.announce != null ? [...options.announce] : undefined,
    },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: discovery,
    // A local swarm opens many connections from one host at once; libp2p's per-host
    // inbound rate limit (5/s) would reset most of them. Loopback is exempt (as above).
    connectionManager: {
      allow: ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128'],
      // Members are tagged keep-alive: a lost connection is redialled for a few minutes
      // (0.5 s, then backing off by 1.5x up to 30 s between tries).
      reconnectRetries: 12,
      reconnectRetryInterval: 500,
      reconnectBackoffFactor: 1.5,
      // A swarm's members dial each other at once when it forms; libp2p's default (10
      // inbound connections mid-handshake) refuses most of them on a busy machine.
      maxIncomingPendingConnections: 128,
    },
    // A busy peer (training, merging, a loaded machine) answers pings late, and a late ping
    // is not a dead peer: libp2p aborts a connection whose ping times out (5 s by default),
    // which on a CPU-starved host tears down healthy connections faster than they are
    // redialled (48 peers on 2 cores lost ~1,800 member connections in 10 minutes, pings
    // of over 60 s, each loss a redial, a Noise handshake and a hello on starved CPUs).
    // Pings still run (they measure RTT and keep bytes flowing); a dead peer's connection
    // is closed by TCP: at once when its process dies, after the kernel's retransmission
    // timeout when its host vanishes. Rounds never wait on connections: a silent member
    // is skipped after one round (see docs/FEDERATION.md).
    connectionMonitor: options.connectionMonitor ?? DEFAULT_CONNECTION_MONITOR,
    // (The swarm key is re-encoded canonically: parseSwarmKey also gives clear errors.)
    connectionProtector: options.swarmKey != null ? preSharedKey({ psk: parseSwarmKey(options.swarmKey) }) : undefined,
    // Peers of other swarms (refused at hello) are not redialled for a while; in a closed
    // swarm, non-members are refused outright: no dial to them, no connection from them
    // (denyOutboundEncryptedConnection: a dial by address only learns the id in the handshake).
    connectionGater: {
      denyDialPeer: refuse,
      denyInboundEncryptedConnection: refuse,
      denyOutboundEncryptedConnection: (peerId) => !isMember(peerId.toString()) || denied.has(peerId.toString()),
    },
    metrics: libp2pMetrics(options),
    services: {
      identify: identify(),
      pubsub: gossipsub(floraGossipsubOptions()),
      flora: flora(options.flora),
    },
  })
  service = node.services.flora
  return node as unknown as FloraLibp2p
}
