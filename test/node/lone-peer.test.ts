/**
 * A swarm that commits rounds without waiting on I/O (one peer, minPeers 1, a trainer that
 * costs nothing) must still leave the event loop to timers, sockets and signals between
 * rounds. Chained through promise callbacks alone, its rounds ran forever in one turn of
 * the loop: `flora-peer --min-peers 1` never printed its addresses and ignored SIGTERM
 * (and this test hung its worker: no timer, its own timeout included, could fire).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { waitForEvent } from './helpers.js'

describe('a lone peer (minPeers 1) with no round limit', () => {
  let peer: FloraPeer | undefined
  afterEach(async () => {
    await peer?.stop()
    peer = undefined
  })

  it('runs rounds back to back yet lets timers run between them, and stops when asked', async () => {
    const { config, weights } = syntheticSwarm({ round: { deadlineMs: 20_000, graceMs: 3000, minPeers: 1 } })
    peer = await createPeer({
      config,
      weights,
      privateKey: await identityFromSeed('lone-peer'),
      rank: 2,
      trainer: syntheticTrainer({ samples: 10, steps: 1 }),
      listen: ['/ip4/127.0.0.1/tcp/0'],
    })
    await peer.start()
    await waitForEvent(peer, 'round:complete', (d) => d.round >= 20, 30_000)
    // A timer set now fires while rounds go on (it never did: rounds held the loop).
    const head = await new Promise<number>((resolve) => setTimeout(() => resolve(peer?.head.round ?? 0), 0))
    expect(head).toBeGreaterThanOrEqual(20)
    await peer.stop()
    const stoppedAt = peer.head.round
    await new Promise((resolve) => setImmediate(resolve))
    expect(peer.head.round).toBe(stoppedAt)
  })
})
