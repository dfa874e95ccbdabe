/**
 * The red team's attacker: an in-process libp2p node built from the same packages as a
 * flora peer (TCP, Noise, Yamux, identify, gossipsub) but without the flora service. It
 * speaks /flora/hello/1.0.0 with whatever hello it is told to, subscribes to the swarm
 * topic, publishes hand-crafted (validly signed where the attack needs it) messages and
 * serves payloads that may lie.
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { createHash } from 'node:crypto'
import { canonicalBytes, type CanonicalValue } from '../../src/gossip/canonical.js'
import { decodeGossipMessage, encodeGossipMessage } from '../../src/gossip/codec.js'
import { HELLO_PROTOCOL, helloHandler, sayHello, type Hello, type HelloPeer } from '../../src/gossip/hello.js'
import type { GossipMessage, ManifestBody, ManifestEntry, SignedAnnouncement, SignedManifest } from '../../src/gossip/messages.js'
import { PAYLOAD_PROTOCOL } from '../../src/gossip/payload.js'
import { signAnnouncement, signManifest, entryFromAnnouncement } from '../../src/gossip/sign.js'
import { readFrames, sendFrame } from '../../src/gossip/stream-io.js'
import { swarmTopic } from '../../src/gossip/topics.js'
import { createPrng } from '../../src/lora/prng.js'
import { loraScaling } from '../../src/lora/scaling.js'
import type { AdapterSet, LoraModule } from '../../src/lora/types.js'
import { encodeAdapter } from '../../src/lora/wire.js'
import { swarmIdOf, type SwarmConfig } from '../../src/node/config.js'

export type AttackerNode = Libp2p<{ identify: unknown; pubsub: GossipSub }>

/** How the attacker answers a payload request for one hash. */
export type ServeMode =
  | { mode: 'ok'; bytes: Uint8Array }
  /** Declares the right size, sends other bytes of that size (hash mismatch). */
  | { mode: 'wrong-bytes'; bytes: Uint8Array }
  /** Declares and sends a size other than announced. */
  | { mode: 'wrong-size'; bytes: Uint8Array }
  /** Reads the request and never answers (the stream stays open until the client gives up). */
  | { mode: 'silent' }
  | { mode: 'not-found' }

export interface AttackerOptions {
  privateKey: PrivateKey
  config: SwarmConfig
  /** The hello this attacker sends and answers with (default: an honest-looking one). */
  hello?: (own: Hello) => Hello
  /** Answer payload requests at all (default true). */
  servePayloads?: boolean
}

export const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

export class Attacker {
  readonly node: AttackerNode
  readonly config: SwarmConfig
  readonly swarmId: string
  readonly topic: string
  readonly peerId: string
  readonly privateKey: PrivateKey
  readonly serve = new Map<string, ServeMode>()
  /** Gossip messages this attacker received on the swarm topic (decoded), newest last. */
  readonly heard: Array<{ at: number; msg: GossipMessage; raw: Uint8Array }> = []
  /** Payload requests served, by mode. */
  readonly served: Record<string, number> = {}
  /** Hellos received from honest peers. */
  readonly hellos: Array<{ from: string; hello: Hello | null }> = []
  #helloOf: (own: Hello) => Hello
  #openStreams: Stream[] = []

  private constructor(node: AttackerNode, options: AttackerOptions) {
    this.node = node
    this.config = options.config
    this.swarmId = swarmIdOf(options.config)
    this.topic = swarmTopic(this.swarmId)
    this.peerId = node.peerId.toString()
    this.privateKey = options.privateKey
    this.#helloOf = options.hello ?? ((h) => h)
  }

  static async start(options: AttackerOptions): Promise<Attacker> {
    const node = (await createLibp2p({
      privateKey: options.privateKey,
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionManager: { allow: ['/ip4/127.0.0.0/ipcidr/8'], maxIncomingPendingConnections: 128 },
      connectionMonitor: { pingTimeout: { minTimeout: 60_000, maxTimeout: 120_000 } },
      services: {
        identify: identify(),
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false, scoreParams: { IPColocationFactorWhitelist: new Set(['127.0.0.1']) } }),
      },
    })) as unknown as AttackerNode
    const a = new Attacker(node, options)
    await node.handle(HELLO_PROTOCOL, helloHandler(() => a.hello(), (peer, hello) => a.hellos.push({ from: peer.toString(), hello })), {
      maxInboundStreams: 1024,
      maxOutboundStreams: 4096,
    })
    if (options.servePayloads !== false) {
      await node.handle(PAYLOAD_PROTOCOL, (stream, conn) => void a.#servePayload(stream, conn.remotePeer), { maxInboundStreams: 1024, maxOutboundStreams: 1024 })
    }
    node.services.pubsub.addEventListener('message', (evt: CustomEvent<Message>) => {
      if (evt.detail.topic !== a.topic) return
      const d = decodeGossipMessage(evt.detail.data)
      if (d.ok) a.heard.push({ at: Date.now(), msg: d.msg, raw: evt.detail.data })
      if (a.heard.length > 5000) a.heard.splice(0, 1000)
    })
    return a
  }

  /** The hello this attacker says: honest-looking (right swarm, no peers) unless told otherwise. */
  hello(): Hello {
    return this.#helloOf({ v: 1, swarmId: this.swarmId, config: this.config as unknown as CanonicalValue, agent: 'flora/0.1.0', peers: [] })
  }

  setHello(fn: (own: Hello) => Hello): void {
    this.#helloOf = fn
  }

  get addrs(): string[] {
    return this.node.getMultiaddrs().map((m) => m.toString())
  }

  /** Dials the peers, says hello to each, subscribes; resolves when each is a subscriber with our outbound gossip stream open. */
  async join(addrs: readonly string[], timeoutMs = 20_000): Promise<void> {
    const pubsub = this.node.services.pubsub
    pubsub.subscribe(this.topic)
    const ids = addrs.map((a) => multiaddr(a).getComponents().find((c) => c.name === 'p2p')?.value as string)
    await Promise.all(addrs.map((a) => this.node.dial(multiaddr(a))))
    await Promise.all(ids.map((id) => this.sayHello(id).catch(() => null)))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error('attacker: honest peers never subscribed'))
      }, timeoutMs)
      const check = (): void => {
        const subs = new Set(pubsub.getSubscribers(this.topic).map((p) => p.toString()))
        const outbound = (pubsub as unknown as { streamsOutbound?: Map<string, unknown> }).streamsOutbound
        if (ids.every((p) => subs.has(p) && (outbound == null || outbound.has(p)))) {
          cleanup()
          resolve()
        }
      }
      const cleanup = (): void => {
        clearTimeout(timer)
        pubsub.removeEventListener('subscription-change', check)
        pubsub.removeEventListener('gossipsub:heartbeat', check)
      }
      pubsub.addEventListener('subscription-change', check)
      pubsub.addEventListener('gossipsub:heartbeat', check)
      check()
    })
  }

  /** Runs the hello handshake as the dialer (with this attacker's current hello). */
  async sayHello(peer: string, hello: Hello = this.hello(), timeoutMs = 10_000): Promise<Hello | null> {
    return sayHello(
      (p, protocol, options) => this.node.dialProtocol(p, protocol, { signal: options.signal }),
      peerIdFromString(peer),
      hello,
      AbortSignal.timeout(timeoutMs),
    )
  }

  async publish(msg: GossipMessage | Uint8Array): Promise<boolean> {
    const data = msg instanceof Uint8Array ? msg : encodeGossipMessage(msg)
    try {
      await this.node.services.pubsub.publish(this.topic, data)
      return true
    } catch {
      return false
    }
  }

  /** Honest peers in this attacker's topic mesh (they prune a peer whose score goes negative). */
  meshPeers(): string[] {
    const mesh = (this.node.services.pubsub as unknown as { mesh?: Map<string, Set<string>> }).mesh
    return [...(mesh?.get(this.topic) ?? [])]
  }

  /** Opens a raw stream of a protocol to a peer (kept until stop(), or closed by the caller). */
  async openStream(peer: string, protocol: string, timeoutMs = 5000): Promise<Stream> {
    const s = await this.node.dialProtocol(peerIdFromString(peer), protocol, { signal: AbortSignal.timeout(timeoutMs) })
    this.#openStreams.push(s)
    return s
  }

  /** Signs an announcement of `bytes` for `round` on `parent`; registers how the payload is served. */
  async announce(
    round: number,
    parent: string,
    bytes: Uint8Array,
    meta: { rank: number; alpha: number; samples: number; serve?: ServeMode; payloadHash?: string; payloadSize?: number },
  ): Promise<SignedAnnouncement> {
    const payloadHash = meta.payloadHash ?? sha256(bytes)
    this.serve.set(payloadHash, meta.serve ?? { mode: 'ok', bytes })
    return signAnnouncement(this.privateKey, {
      swarmId: this.swarmId,
      round,
      parentStateHash: parent,
      author: this.peerId,
      rank: meta.rank,
      alpha: meta.alpha,
      samples: meta.samples,
      payloadHash,
      payloadSize: meta.payloadSize ?? bytes.byteLength,
    })
  }

  async manifest(body: Omit<ManifestBody, 'swarmId' | 'proposer' | 'lockView' | 'justify'> & Partial<Pick<ManifestBody, 'lockView' | 'justify'>>, key: PrivateKey = this.privateKey, proposer = this.peerId): Promise<SignedManifest> {
    return signManifest(key, { swarmId: this.swarmId, proposer, lockView: -1, justify: [], ...body })
  }

  entry(ann: SignedAnnouncement): ManifestEntry {
    return entryFromAnnouncement(ann)
  }

  async #servePayload(stream: Stream, remote: PeerId): Promise<void> {
    void remote
    try {
      const frames = readFrames(stream, 1024)
      const first = await frames.next()
      if (first.done === true) return
      let hash = ''
      try {
        hash = (JSON.parse(new TextDecoder().decode(first.value.subarray())) as { hash: string }).hash
      } catch {
        stream.abort(new Error('bad request'))
        return
      }
      const how = this.serve.get(hash) ?? { mode: 'not-found' as const }
      this.served[how.mode] = (this.served[how.mode] ?? 0) + 1
      switch (how.mode) {
        case 'silent':
          this.#openStreams.push(stream)
          return
        case 'not-found':
          await sendFrame(stream, canonicalBytes({ status: 'not-found' }))
          break
        case 'ok':
          await sendFrame(stream, canonicalBytes({ status: 'ok', size: how.bytes.byteLength }))
          await sendFrame(stream, how.bytes)
          break
        case 'wrong-bytes': {
          const other = Uint8Array.from(how.bytes)
          other[other.length - 1] ^= 0xff
          await sendFrame(stream, canonicalBytes({ status: 'ok', size: other.byteLength }))
          await sendFrame(stream, other)
          break
        }
        case 'wrong-size': {
          const longer = new Uint8Array(how.bytes.byteLength + 16)
          longer.set(how.bytes)
          await sendFrame(stream, canonicalBytes({ status: 'ok', size: longer.byteLength }))
          await sendFrame(stream, longer)
          break
        }
      }
      await stream.close()
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  async stop(): Promise<void> {
    for (const s of this.#openStreams) {
      try {
        s.abort(new Error('attacker stopping'))
      } catch {
        // already gone
      }
    }
    await Promise.resolve(this.node.stop()).catch(() => {})
  }
}

// -------------------------------------------------------------------------------------
// Adapters

/** A rank-`rank` adapter over the swarm's targets, values from `fill(i)` (seeded). */
export function buildAdapter(config: SwarmConfig, rank: number, fill: (prng: ReturnType<typeof createPrng>, out: Float32Array) => void, seed: string): { set: AdapterSet; alpha: number } {
  const alpha = 2 * rank
  const scaling = loraScaling(alpha, rank, { rslora: config.rslora })
  const prng = createPrng(seed)
  const modules: LoraModule[] = config.targets.map((t) => {
    const loraA = new Float32Array(rank * t.inFeatures)
    const loraB = new Float32Array(t.outFeatures * rank)
    fill(prng.fork(`${t.name}.A`), loraA)
    fill(prng.fork(`${t.name}.B`), loraB)
    return { name: t.name, rank, inFeatures: t.inFeatures, outFeatures: t.outFeatures, alpha, scaling, loraA, loraB }
  })
  return { set: { modules }, alpha }
}

/** A small, plausible adapter (what an honest peer's might look like). */
export function benignAdapter(config: SwarmConfig, rank: number, seed: string): { bytes: Uint8Array; alpha: number; rank: number } {
  const { set, alpha } = buildAdapter(config, rank, (p, out) => p.fillUniform(out, -0.01, 0.01), seed)
  return { bytes: encodeAdapter(set, { dtype: config.wireDType }), alpha, rank }
}

/** Entries of magnitude 1e15..1e30 with random signs (finite in float32). */
export function poisonAdapter(config: SwarmConfig, rank: number, seed: string): { bytes: Uint8Array; alpha: number; rank: number } {
  const { set, alpha } = buildAdapter(
    config,
    rank,
    (p, out) => {
      const u = new Float32Array(out.length * 2)
      p.fillUniform(u, 0, 1)
      for (let i = 0; i < out.length; i++) out[i] = (u[2 * i] < 0.5 ? -1 : 1) * 10 ** (15 + 15 * u[2 * i + 1])
    },
    seed,
  )
  return { bytes: encodeAdapter(set, { dtype: 'f32' }), alpha, rank }
}

/**
 * A well-formed f32 adapter whose tensor data then has NaN, +Inf and -Inf written into it
 * (encodeAdapter refuses non-finite values, so the bytes are patched after encoding).
 */
export function nonFiniteAdapter(config: SwarmConfig, rank: number, seed: string): { bytes: Uint8Array; alpha: number; rank: number } {
  const a = benignAdapter({ ...config, wireDType: 'f32' }, rank, seed)
  const bytes = Uint8Array.from(a.bytes)
  const view = new DataView(bytes.buffer)
  // The last 12 bytes are the tail of the last module's loraB (f32, little-endian).
  const end = bytes.byteLength
  view.setFloat32(end - 4, Number.NaN, true)
  view.setFloat32(end - 8, Number.POSITIVE_INFINITY, true)
  view.setFloat32(end - 12, Number.NEGATIVE_INFINITY, true)
  return { bytes, alpha: a.alpha, rank }
}

/** 128 fake members x 16 addresses each, all on 127.0.0.1 ports from `ports` (cycled). */
export function fakeHelloPeers(ids: readonly string[], ports: readonly number[], perPeer = 16): HelloPeer[] {
  let k = 0
  return ids.map((id) => ({ id, addrs: Array.from({ length: perPeer }, () => `/ip4/127.0.0.1/tcp/${ports[k++ % ports.length]}`) }))
}
