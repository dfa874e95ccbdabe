/**
 * P3 validity: forged author, bad signature, wrong round, wrong parent, malformed and
 * oversized payloads, wrong swarm (message and peer) are each rejected with their
 * reason, and the rounds still complete with exactly the honest peers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { signAnnouncement } from '../../src/gossip/sign.js'
import type { AnnouncementBody } from '../../src/gossip/messages.js'
import type { RejectReason } from '../../src/gossip/errors.js'
import { swarmTopic } from '../../src/gossip/topics.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import { initAdapter } from '../../src/lora/init.js'
import { encodeAdapter } from '../../src/lora/wire.js'
import { startAttacker, type Attacker } from './attacker.js'
import { gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

const EXPECTED: RejectReason[] = [
  'malformed',
  'forged-author',
  'bad-signature',
  'round-window',
  'wrong-swarm',
  'oversized',
  'wrong-parent',
  'malformed-payload',
  'equivocation',
]

describe('P3: invalid messages are rejected with their reason; rounds complete without them', () => {
  let swarm: TestSwarm
  let attacker: Attacker
  let stranger: FloraPeer | undefined
  const round1 = gate()
  const round2 = gate()
  const started = [gate(), gate(), gate()]
  const started2 = [gate(), gate(), gate()]
  const seen: Array<Map<RejectReason, string>> = []

  beforeAll(async () => {
    swarm = await startTestSwarm({
      ranks: [2, 4, 4],
      rounds: 2,
      idSeed: 'p3',
      hold: (i, ctx) => {
        if (ctx.round === 1) {
          started[i].open()
          return round1.wait
        }
        if (ctx.round === 2) {
          started2[i].open()
          return round2.wait
        }
        return undefined
      },
    })
    for (const p of swarm.peers) {
      const m = new Map<RejectReason, string>()
      seen.push(m)
      p.addEventListener('peer:rejected', (e) => m.set(e.detail.reason, e.detail.peerId))
    }
    await Promise.all(started.map((g) => g.wait))
    attacker = await startAttacker(await identityFromSeed('p3-attacker'))
  })

  afterAll(async () => {
    await stranger?.stop()
    await attacker?.stop()
    await swarm?.stop()
  })

  it('rejects each bad message with its reason, and the round completes without them', async () => {
    const { config, peers } = swarm
    const swarmId = peers[0].swarmId
    const topic = swarmTopic(swarmId)
    await attacker.join(
      peers.map((p) => p.multiaddrs()[0]),
      peers.map((p) => p.peerId),
      topic,
    )
    const key = (await identityFromSeed('p3-attacker'))
    const other = await identityFromSeed('p3-other')
    const junk1 = randomBytes(4000)
    const junk2 = randomBytes(4100)
    const h1 = attacker.store.put(junk1, 1)
    const h2 = attacker.store.put(junk2, 1)
    const base: AnnouncementBody = {
      swarmId,
      round: 1,
      parentStateHash: config.genesisStateHash,
      author: attacker.peerId,
      rank: 4,
      alpha: 8,
      samples: 10,
      payloadHash: h1,
      payloadSize: junk1.byteLength,
    }
    // Each message below is wrong in exactly one way.
    await attacker.publish(topic, new TextEncoder().encode('{"kind":"announce","not":"valid"}'))
    await attacker.publish(topic, await signAnnouncement(key, { ...base, author: peers[0].peerId }))
    await attacker.publish(topic, { ...(await signAnnouncement(other, base)) })
    await attacker.publish(topic, await signAnnouncement(key, { ...base, round: 9 }))
    await attacker.publish(topic, await signAnnouncement(key, { ...base, swarmId: 'ab'.repeat(32) }))
    await attacker.publish(topic, await signAnnouncement(key, { ...base, payloadSize: config.maxPayloadBytes + 1 }))
    await attacker.publish(topic, await signAnnouncement(key, { ...base, parentStateHash: 'cd'.repeat(32) }))
    // Well-formed announcements of bytes that are not an adapter; the second one equivocates.
    await attacker.publish(topic, await signAnnouncement(key, base))
    await attacker.publish(topic, await signAnnouncement(key, { ...base, payloadHash: h2, payloadSize: junk2.byteLength }))

    // A flora peer of another swarm (other name => other swarm id) is refused at the handshake.
    const otherSwarm = syntheticSwarm({ name: 'another-swarm', round: config.round })
    stranger = await createPeer({
      config: otherSwarm.config,
      weights: otherSwarm.weights,
      rank: 4,
      trainer: syntheticTrainer(),
      listen: ['/ip4/127.0.0.1/tcp/0'],
    })
    await stranger.start()
    const refused = waitForEvent(peers[0], 'peer:rejected', (d) => d.reason === 'wrong-swarm' && d.peerId === stranger?.peerId)
    await stranger.dial(peers[0].multiaddrs()[0])
    const detail = await refused
    expect(detail.detail).toMatch(/config differs in: name/)
    expect(peers[0].service.members).not.toContain(stranger.peerId)

    // Every honest peer reports every reason (wait on events, not time).
    await Promise.all(
      peers.map(async (p, i) => {
        while (!EXPECTED.every((r) => seen[i].has(r))) {
          await waitForEvent(p, "peer:rejected", () => true, 20_000).catch((err: Error) => {
            throw new Error(`${err.message}; seen so far: ${[...seen[i].keys()].join(", ")}`)
          })
        }
      }),
    )
    for (const m of seen) {
      for (const r of EXPECTED) expect(m.has(r), `reason ${r}`).toBe(true)
      // A forged author is blamed on the publisher, not on the peer it impersonates.
      expect(m.get('forged-author')).toBe(attacker.peerId)
    }
    round1.open()
    const done1 = await Promise.all(peers.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 1)))
    const honest = peers.map((p) => p.peerId).sort()
    for (const d of done1) expect([...d.contributors]).toEqual(honest)
    expect(new Set(done1.map((d) => d.stateHash)).size).toBe(1)
  })

  it('rejects a payload whose rank differs from its announcement (payload-mismatch)', async () => {
    const { config, peers } = swarm
    await Promise.all(started2.map((g) => g.wait))
    const swarmId = peers[0].swarmId
    const topic = swarmTopic(swarmId)
    const key = await identityFromSeed('p3-attacker')
    const adapter = initAdapter({ shapes: config.targets, rank: 4, alpha: 8, seed: 1 })
    const bytes = encodeAdapter(adapter, { dtype: 'f32' })
    const hash = attacker.store.put(bytes, 2)
    const waits = peers.map((p) => waitForEvent(p, 'peer:rejected', (d) => d.reason === 'payload-mismatch' && d.round === 2))
    await attacker.publish(
      topic,
      await signAnnouncement(key, {
        swarmId,
        round: 2,
        parentStateHash: peers[0].head.hash,
        author: attacker.peerId,
        rank: 2, // the payload has rank 4
        alpha: 8,
        samples: 10,
        payloadHash: hash,
        payloadSize: bytes.byteLength,
      }),
    )
    await Promise.all(waits)
    round2.open()
    const done2 = await Promise.all(peers.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 2)))
    for (const d of done2) expect(d.contributors).not.toContain(attacker.peerId)
    expect(new Set(done2.map((d) => d.stateHash)).size).toBe(1)
  })
})
