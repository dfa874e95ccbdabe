/**
 * Stragglers (issue 9, 48 processes): a peer that lost the swarm's gossip (its connections
 * dropped on a starved machine, or it missed a certificate) does not give up when its
 * round's stall timer fires while members it can reach went on: it asks them, catches up
 * by verified state sync, and finishes on the same chain.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { swarmTopic } from '../../src/gossip/topics.js'
import { handshakeSaysBehind, type RoundStalledDetail } from '../../src/node/engine.js'
import { gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

describe('a straggler that lost the gossip', () => {
  let swarm: TestSwarm | undefined
  afterEach(async () => {
    await swarm?.stop()
    swarm = undefined
  })

  it('asks the members it can reach when its round stalls, catches up and finishes on their chain', async () => {
    const caughtUp = gate()
    const s = await startTestSwarm({
      ranks: [2, 4, 4],
      rounds: 3,
      idSeed: 'straggler',
      swarm: { round: { deadlineMs: 4000, graceMs: 1000, minPeers: 3 } },
      // The two others wait in round 3 until the straggler caught round 2 up: what rescues
      // it is its own stall probe, not their goodbye when they finish.
      hold: (i, ctx) => (i < 2 && ctx.round === 3 ? caughtUp.wait : undefined),
      peerOptions: () => ({ stallMs: 2500 }),
    })
    swarm = s
    const straggler = s.peers[2]
    const stalls: RoundStalledDetail[] = []
    straggler.addEventListener('round:stalled', (e) => stalls.push(e.detail))
    await waitForEvent(straggler, 'round:complete', (d) => d.round === 1)
    // Gone from the topic: no gossip reaches it (nor leaves it); its connections stay.
    ;(straggler.libp2p.services.pubsub as { unsubscribe(topic: string): void }).unsubscribe(swarmTopic(straggler.swarmId))
    const r2 = await waitForEvent(straggler, 'round:complete', (d) => d.round === 2, 30_000)
    expect(r2.synced).toBe('replay')
    caughtUp.open()
    const done = await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 3, 30_000)))
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
    expect(stalls).toEqual([])
    const heads = s.peers.map((p) => p.records.all().map((r) => r.stateHash).join(','))
    expect(new Set(heads).size).toBe(1)
  })
})

describe('a member that greets us one round behind', () => {
  it('is lagging, not restarted: it stays a participant (its next adapter is waited for)', () => {
    // We just committed round 4; a member still finishing round 4 says head 3.
    expect(handshakeSaysBehind(3, 4)).toBe(false)
    expect(handshakeSaysBehind(4, 4)).toBe(false)
    expect(handshakeSaysBehind(undefined, 4)).toBe(false)
    // Two rounds or more: restarted or cut off, it catches up before it takes part.
    expect(handshakeSaysBehind(2, 4)).toBe(true)
    expect(handshakeSaysBehind(0, 7)).toBe(true)
  })
})
