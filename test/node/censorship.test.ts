/**
 * No silent censorship: a proposal from the proposer of the view that omits an adapter
 * the voters held well before it (here: at least `grace` earlier) gets no prevotes; the
 * view times out and the next view's proposer, which holds that adapter, includes it.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { signManifest, entryFromAnnouncement } from '../../src/gossip/sign.js'
import type { GossipMessage, SignedAnnouncement } from '../../src/gossip/messages.js'
import { foundingProposer } from '../../src/node/proposer.js'
import { applyRound } from '../../src/node/state.js'
import { bookKey, startTestSwarm, testPeerIds, waitForEvent, type TestSwarm } from './helpers.js'

// A long deadline: view 0 must still be open when the censoring proposal arrives, on a loaded machine too.
const POLICY = { deadlineMs: 8000, graceMs: 1000, minPeers: 3 }

describe('no silent censorship', () => {
  let swarm: TestSwarm | undefined
  afterAll(async () => {
    await swarm?.stop()
  })

  it('voters refuse a proposal that omits an adapter they held a grace period before it; the next view includes it', async () => {
    const ids = await testPeerIds('censor', 3)
    const censorId = foundingProposer(1, 0, ids)
    const anns = new Map<string, SignedAnnouncement>()
    swarm = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 1,
      idSeed: 'censor',
      swarm: { round: POLICY },
      beforeStart: (p) => {
        // Every peer's announcements are recorded; the censor's own manifests never leave it.
        const pubsub = p.libp2p.services.pubsub as { publish: (topic: string, data: Uint8Array, ...rest: unknown[]) => Promise<unknown> }
        const publish = pubsub.publish.bind(pubsub)
        pubsub.publish = async (topic, data, ...rest) => {
          const msg = JSON.parse(new TextDecoder().decode(data)) as GossipMessage
          if (msg.kind === 'announce') anns.set(msg.body.author, msg)
          if (p.peerId === censorId && msg.kind === 'manifest') return { recipients: [] }
          return publish(topic, data, ...rest)
        }
      },
    })
    const s = swarm
    const censor = s.peers.find((p) => p.peerId === censorId)!
    const voters = s.peers.filter((p) => p.peerId !== censorId)
    const victim = voters[1].peerId
    // Both voters hold every adapter of round 1, for a grace period at least.
    await Promise.all(
      voters.map((v) => Promise.all(s.peers.filter((q) => q !== v).map((q) => waitForEvent(v, 'adapter:received', (d) => d.round === 1 && d.peerId === q.peerId)))),
    )
    await new Promise((resolve) => setTimeout(resolve, POLICY.graceMs + 100))
    // The censor's view-0 proposal: everyone but the victim, correctly signed and replaying.
    const kept = [...anns.values()].filter((a) => a.body.author !== victim).sort((a, b) => (a.body.author < b.body.author ? -1 : 1))
    const next = await applyRound(
      censor.head,
      s.config.strategy,
      s.config.targets,
      kept.map((a) => ({ id: a.body.author, samples: a.body.samples, adapter: s.book.get(bookKey(1, a.body.author))! })),
      { bounds: s.config.contribution },
    )
    const censored = await signManifest(s.keys[ids.indexOf(censorId)], {
      swarmId: censor.swarmId,
      round: 1,
      view: 0,
      parentStateHash: s.config.genesisStateHash,
      proposer: censorId,
      entries: kept.map(entryFromAnnouncement),
      newStateHash: next.hash,
      lockView: -1,
      justify: [],
    })
    const refusals = voters.map((v) => waitForEvent(v, 'peer:rejected', (d) => d.reason === 'censorship' && d.peerId === censorId))
    for (const v of voters) v.service.engine.handleMessage(censored)
    for (const d of await Promise.all(refusals)) expect(d.detail).toContain(victim)
    const done = await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 1, 30_000)))
    for (const d of done) {
      expect(d.stateHash).not.toBe(next.hash)
      expect(d.view).toBeGreaterThanOrEqual(1)
      expect([...d.contributors]).toEqual([...ids].sort())
    }
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
  })
})
