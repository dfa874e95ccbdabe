/**
 * P7 one chain and P11 honest exit, under the conditions users meet: a minority never
 * commits on its own (it stalls and says why), a restarted peer does not fork off from
 * genesis (it knows it is behind and catches up by verified state sync), and
 * under churn every surviving peer ends every round on the same certified chain.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { verifyChain } from '../../src/node/round-log.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import type { RoundCompleteDetail, RoundStalledDetail } from '../../src/node/engine.js'
import { gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

const POLICY = { deadlineMs: 4000, graceMs: 1000, minPeers: 3 }

describe('P7: one chain under partitions, restarts and churn', () => {
  let swarm: TestSwarm | undefined
  const extra: FloraPeer[] = []
  afterEach(async () => {
    await Promise.all(extra.splice(0).map((p) => p.stop()))
    await swarm?.stop()
    swarm = undefined
  })

  it('a minority (1 of 3 members left) never commits: it stalls, says why, and keeps its head', async () => {
    const hold = gate()
    const inRound2 = [gate(), gate(), gate()]
    const s = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 3,
      idSeed: 'minority',
      swarm: { round: POLICY },
      hold: (i, ctx) => {
        if (ctx.round !== 2) return undefined
        inRound2[i].open()
        return i === 0 ? undefined : hold.wait
      },
      peerOptions: () => ({ stallMs: 7000 }),
    })
    swarm = s
    await Promise.all(inRound2.map((g) => g.wait))
    const [survivor, ...gone] = s.peers
    const head = survivor.head
    const commits: RoundCompleteDetail[] = []
    survivor.addEventListener('round:complete', (e) => commits.push(e.detail))
    const stalled = waitForEvent(survivor, 'round:stalled', () => true, 20_000)
    await Promise.all(gone.map((p) => p.stop()))
    const d: RoundStalledDetail = await stalled
    expect(d.round).toBe(2)
    expect(d.behind).toBe(false)
    expect(d.reason).toMatch(/needs votes of 2 of the 3 recorded members, 1 are connected/)
    expect(commits).toEqual([])
    expect(survivor.head.hash).toBe(head.hash)
    expect(survivor.records.all().map((r) => r.round)).toEqual([1])
  })

  it('a peer restarted with its old id (and no state) does not found a chain of its own: it catches up by verified state sync and contributes again', async () => {
    const POL = { ...POLICY, deadlineMs: 6000, graceMs: 1000 }
    // The survivors' round-4 training waits until the restarted peer caught up and trained
    // its round-4 adapter, so that it has a round to contribute to (otherwise 5 synthetic
    // rounds end before it has even connected).
    const caughtUp = gate()
    const s = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 5,
      idSeed: 'restart',
      swarm: { round: POL },
      hold: (i, ctx) => (i === 2 && ctx.round === 2 ? new Promise<void>(() => {}) : i < 2 && ctx.round === 4 ? caughtUp.wait : undefined),
    })
    swarm = s
    await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 1)))
    // kill the third peer in round 2 and bring it back with the same key, from genesis
    await s.peers[2].stop()
    const survivors = s.peers.slice(0, 2)
    await Promise.all(survivors.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 2, 30_000)))
    const restarted = await createPeer({
      config: s.config,
      weights: s.weights,
      privateKey: s.keys[2],
      rank: 8,
      rounds: 5,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [s.peers[0].multiaddrs()[0]],
      trainer: async (ctx) => {
        const res = await syntheticTrainer({ dataSeed: 2 })(ctx)
        if (ctx.round === 4) setTimeout(() => caughtUp.open(), 50)
        return res
      },
    })
    extra.push(restarted)
    const commits: RoundCompleteDetail[] = []
    restarted.addEventListener('round:complete', (e) => commits.push(e.detail))
    const done = waitForEvent(restarted, 'done', () => true, 60_000)
    await restarted.start()
    const r5 = await Promise.all(survivors.map((p) => waitForEvent(p, 'done', () => true, 60_000)))
    await done
    // It never founded a chain: its first rounds came from the swarm, verified (replayed).
    expect(commits[0]).toMatchObject({ round: 1, synced: 'replay' })
    expect(commits.map((c) => c.round)).toEqual([1, 2, 3, 4, 5])
    // One chain, and the restarted peer's adapter is merged again after it caught up.
    expect(new Set([...r5.map((x) => x.stateHash), restarted.head.hash]).size).toBe(1)
    const chain = survivors[0].records.all()
    expect(verifyChain(chain, s.config.genesisStateHash, s.config.round)).toBeNull()
    expect(restarted.records.all().map((r) => r.stateHash)).toEqual(chain.map((r) => r.stateHash))
    const back = chain.filter((r) => r.round > 2 && r.contributors.includes(restarted.peerId))
    expect(chain.map((r) => r.contributors.length)).toEqual([3, 2, 2, 3, 3])
    expect(back.map((r) => r.round)).toEqual([4, 5])
    expect(commits.filter((c) => c.synced == null).map((c) => c.round)).toEqual([4, 5])
  })

  it('churn: 5 peers, one leaves mid-round 2 and one mid-round 3; every survivor ends every round on one certified chain', async () => {
    const ids: string[] = []
    const s = await startTestSwarm({
      ranks: [2, 4, 8, 4, 2],
      rounds: 4,
      idSeed: 'churn',
      swarm: { round: { deadlineMs: 4000, graceMs: 1000, minPeers: 5 } },
      // peer 3 never finishes round 2, peer 4 never finishes round 3: both are then killed
      hold: (i, ctx) => ((i === 3 && ctx.round === 2) || (i === 4 && ctx.round === 3) ? new Promise<void>(() => {}) : undefined),
    })
    swarm = s
    for (const p of s.peers) ids.push(p.peerId)
    const ends = s.peers.slice(0, 3).map((p) => waitForEvent(p, 'done', () => true, 90_000))
    await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:start', (d) => d.round === 2)))
    await s.peers[3].stop()
    await Promise.all(s.peers.slice(0, 3).map((p) => waitForEvent(p, 'round:start', (d) => d.round === 3, 30_000)))
    await s.peers[4].stop()
    const done = await Promise.all(ends)
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
    const chains = s.peers.slice(0, 3).map((p) => p.records.all())
    for (const chain of chains) {
      expect(chain.map((r) => r.stateHash)).toEqual(chains[0].map((r) => r.stateHash))
      expect(verifyChain(chain, s.config.genesisStateHash, s.config.round)).toBeNull()
    }
    const contributors = chains[0].map((r) => r.contributors.length)
    expect(contributors).toEqual([5, 4, 3, 3])
  })
})
