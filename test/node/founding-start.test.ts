/**
 * Founding start (issue 9, 48 processes): a peer that does not itself count `minPeers`
 * ready members (some of its connections or gossip streams never came up) starts round 1
 * once a member announces an adapter for it: the swarm has formed, and waiting for its own
 * count left 9 of 48 peers out of round 1 and started the others up to 190 s apart.
 *
 * Topology: peers 1 and 2 refuse each other (`deny`), so each counts 2 of the 3 members
 * `minPeers` asks for; only peer 0 sees all three. Gossip and payloads reach 1 and 2
 * through peer 0.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { startTestSwarm, testPeerIds, waitForEvent, type TestSwarm } from './helpers.js'

describe('a peer that cannot count minPeers members itself', () => {
  let swarm: TestSwarm | undefined
  afterEach(async () => {
    await swarm?.stop()
    swarm = undefined
  })

  it('starts round 1 on a member\'s announcement and founds the same chain', async () => {
    const ids = await testPeerIds('founding-start', 3)
    const s = await startTestSwarm({
      ranks: [4, 2, 2],
      rounds: 2,
      idSeed: 'founding-start',
      swarm: { round: { deadlineMs: 6000, graceMs: 1500, minPeers: 3 } },
      peerOptions: (i) => (i === 1 ? { deny: [ids[2]] } : i === 2 ? { deny: [ids[1]] } : {}),
    })
    swarm = s
    const done = await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 2, 60_000)))
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
    // Never connected to each other, yet both are on the chain and contributed.
    expect(s.peers[1].libp2p.getConnections().some((c) => c.remotePeer.toString() === ids[2])).toBe(false)
    const contributed = new Set(s.peers[0].records.all().flatMap((r) => r.contributors))
    expect([...contributed].sort()).toEqual([...ids].sort())
    const heads = s.peers.map((p) => p.records.all().map((r) => r.stateHash).join(','))
    expect(new Set(heads).size).toBe(1)
  })

  it('rejects a deny entry that is not a peer id', async () => {
    await expect(startTestSwarm({ ranks: [2], peerOptions: () => ({ deny: ['not-a-peer-id'] }) })).rejects.toThrow(/deny: "not-a-peer-id" is not a peer id/)
  })
})
