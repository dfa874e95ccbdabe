/**
 * A misbehaving peer for the P3 tests: a bare libp2p host (no flora service, so not a
 * swarm member) that joins the swarm topic, publishes hand-crafted messages and serves
 * whatever bytes it is told to.
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { PAYLOAD_PROTOCOL, payloadHandler, PayloadStore } from '../../src/gossip/payload.js'
import { encodeGossipMessage } from '../../src/gossip/codec.js'
import type { GossipMessage } from '../../src/gossip/messages.js'

export interface Attacker {
  node: Libp2p<{ identify: unknown; pubsub: GossipSub }>
  store: PayloadStore
  peerId: string
  /** Connects to the given multiaddrs and waits until each of them is a topic subscriber here. */
  join(addrs: readonly string[], peerIds: readonly string[], topic: string): Promise<void>
  publish(topic: string, msg: GossipMessage | Uint8Array): Promise<void>
  stop(): Promise<void>
}

export async function startAttacker(privateKey: PrivateKey): Promise<Attacker> {
  const node = await createLibp2p({
    privateKey,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), pubsub: gossipsub({ allowPublishToZeroTopicPeers: true }) },
  })
  const store = new PayloadStore()
  await node.handle(PAYLOAD_PROTOCOL, payloadHandler(store))
  return {
    node,
    store,
    peerId: node.peerId.toString(),
    async join(addrs, peerIds, topic) {
      node.services.pubsub.subscribe(topic)
      await Promise.all(addrs.map((a) => node.dial(multiaddr(a))))
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('attacker: peers never subscribed')), 20_000)
        // Ready when each peer is subscribed and our outbound gossip stream to it is open
        // (gossipsub drops what it cannot send); re-checked on every heartbeat.
        const check = (): void => {
          const subs = new Set(node.services.pubsub.getSubscribers(topic).map((p) => p.toString()))
          const outbound = (node.services.pubsub as unknown as { streamsOutbound: Map<string, unknown> }).streamsOutbound
          if (peerIds.every((p) => subs.has(p) && outbound.has(p))) {
            clearTimeout(timer)
            node.services.pubsub.removeEventListener('subscription-change', check)
            node.services.pubsub.removeEventListener('gossipsub:heartbeat', check)
            resolve()
          }
        }
        node.services.pubsub.addEventListener('subscription-change', check)
        node.services.pubsub.addEventListener('gossipsub:heartbeat', check)
        check()
      })
    },
    async publish(topic, msg) {
      const data = msg instanceof Uint8Array ? msg : encodeGossipMessage(msg)
      await node.services.pubsub.publish(topic, data)
    },
    stop: async () => {
      await node.stop()
    },
  }
}
