/**
 * Two flora peers in one process, over real TCP on loopback, with the library API.
 * Run: npx tsx examples/two-peers.ts
 *
 * Each peer trains a LoRA of its own rank (the synthetic least-squares task here; plug
 * your own `trainer` for a real model), the peers exchange adapters over libp2p, and
 * every round both hold bit-identical weights (same state hash).
 */
import { createPeer, syntheticSwarm, syntheticTrainer, syntheticEvalLoss } from '../src/node/index.js'

// Everything the swarm must agree on: base model, LoRA targets, strategy, round policy.
const { config, weights } = syntheticSwarm({ round: { deadlineMs: 30_000, graceMs: 5_000, minPeers: 2 } })

const alice = await createPeer({
  config,
  weights,
  rank: 8,
  trainer: syntheticTrainer({ dataSeed: 0, samples: 120 }),
  rounds: 3,
  listen: ['/ip4/127.0.0.1/tcp/0'],
})
await alice.start()

const bob = await createPeer({
  config,
  weights,
  rank: 2, // heterogeneous ranks are the point of FLoRA
  trainer: syntheticTrainer({ dataSeed: 1, samples: 80 }),
  rounds: 3,
  listen: ['/ip4/127.0.0.1/tcp/0'],
  bootstrap: alice.multiaddrs(), // what `flora-peer` prints on start
})
for (const [name, peer] of [['alice', alice], ['bob', bob]] as const) {
  peer.addEventListener('round:complete', (e) => {
    const { round, stateHash, contributors } = e.detail
    const loss = syntheticEvalLoss(peer.head.weights, config.targets, config.seed)
    console.log(`${name}: round ${round} state ${stateHash.slice(0, 16)} from ${contributors.length} adapters, eval loss ${loss.toFixed(6)}`)
  })
  peer.addEventListener('peer:rejected', (e) => console.log(`${name}: rejected ${e.detail.peerId}: ${e.detail.reason}`))
}
await bob.start()

await Promise.all([alice.whenDone(), bob.whenDone()])
console.log(alice.head.hash === bob.head.hash ? 'agreed on every round' : 'DISAGREEMENT')
await Promise.all([alice.stop(), bob.stop()])
