/** flora as a libp2p service on an app's own nodes (the embedding path of createPeer). */
import { afterAll, describe, expect, it } from 'vitest'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@libp2p/gossipsub'
import { flora, type FloraService } from '../../src/node/service.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { SwarmConfigError } from '../../src/node/config.js'

describe('flora() libp2p service factory', () => {
  const nodes: Array<Libp2p<{ flora: FloraService }>> = []
  const { config, weights } = syntheticSwarm({ round: { deadlineMs: 20_000, graceMs: 3000, minPeers: 2 } })
  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()))
  })

  async function appNode(seed: string, rank: number, pubsubName = 'pubsub') {
    const node = await createLibp2p({
      privateKey: await identityFromSeed(seed),
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: {
        identify: identify(),
        [pubsubName]: gossipsub(),
        flora: flora({ config, weights, rank, trainer: syntheticTrainer({ dataSeed: rank }), rounds: 2, pubsubService: pubsubName }),
      },
    })
    nodes.push(node as unknown as Libp2p<{ flora: FloraService }>)
    return node as unknown as Libp2p<{ flora: FloraService }>
  }

  it('runs rounds on nodes the app built, with a custom gossipsub service name', async () => {
    const a = await appNode('embed-a', 8)
    const b = await appNode('embed-b', 2, 'gossip')
    await b.dial(a.getMultiaddrs()[0])
    await Promise.all([a.services.flora.whenDone(), b.services.flora.whenDone()])
    expect(a.services.flora.head.round).toBe(2)
    expect(a.services.flora.head.hash).toBe(b.services.flora.head.hash)
    expect(a.services.flora.records.all().map((r) => r.contributors.length)).toEqual([2, 2])
  })

  it('refuses base weights that are not the swarm\'s base model', async () => {
    const other = new Map([...weights].map(([k, v]) => [k, v.map((x, i) => (i === 0 ? x + 1 : x))]))
    await expect(
      createLibp2p({
        services: { identify: identify(), pubsub: gossipsub(), flora: flora({ config, weights: other, rank: 4, trainer: syntheticTrainer() }) },
      }),
    ).rejects.toBeInstanceOf(SwarmConfigError)
  })
})
