/**
 * Embedding flora in an app that already runs its own libp2p node: flora is a libp2p
 * service (`services: { flora: flora({...}) }`) next to the app's own identify and
 * gossipsub, sharing the node's connections. Run: npx tsx examples/embed-service.ts
 */
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@libp2p/gossipsub'
import { flora, floraGossipsubOptions, syntheticSwarm, syntheticTrainer } from '../src/node/index.js'

const { config, weights } = syntheticSwarm({ round: { deadlineMs: 30_000, graceMs: 5_000, minPeers: 2 } })

async function appNode(rank: number, dataSeed: number) {
  return createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      // flora finds it under this name (option `pubsubService`); its options: see floraGossipsubOptions
      pubsub: gossipsub(floraGossipsubOptions()),
      flora: flora({ config, weights, rank, trainer: syntheticTrainer({ dataSeed }), rounds: 2 }),
    },
  })
}

const a = await appNode(8, 0)
const b = await appNode(4, 1)
for (const node of [a, b]) {
  node.services.flora.addEventListener('round:complete', (e) => {
    console.log(`${node.peerId.toString().slice(-6)}: round ${e.detail.round} -> ${e.detail.stateHash.slice(0, 16)}`)
  })
}
await b.dial(a.getMultiaddrs()[0])
await Promise.all([a.services.flora.whenDone(), b.services.flora.whenDone()])
console.log(a.services.flora.head.hash === b.services.flora.head.hash ? 'agreed' : 'DISAGREEMENT')
await Promise.all([a.stop(), b.stop()])
