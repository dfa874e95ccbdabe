/**
 * Competing manifests for one round: the manifest whose proposer sorts first for that
 * round (sha256(round || peerId)) wins. A peer that already committed a losing manifest
 * rolls back (one-round window) and replays the winner; a later-sorting competitor is
 * ignored. Both competitors here are validly signed and replay to their state hash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { signManifest } from '../../src/gossip/sign.js'
import type { ManifestEntry, SignedManifest } from '../../src/gossip/messages.js'
import { swarmTopic } from '../../src/gossip/topics.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { proposerBeats } from '../../src/node/proposer.js'
import { applyRound, genesisState } from '../../src/node/state.js'
import { verifyChain } from '../../src/node/round-log.js'
import type { RoundSupersededDetail } from '../../src/node/engine.js'
import { startAttacker, type Attacker } from './attacker.js'
import { bookKey, gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

/** A deterministic identity whose proposer key for `round` beats (or loses to) all of `ids`. */
async function keyThat(round: number, ids: string[], beats: boolean, prefix: string): Promise<PrivateKey> {
  for (let i = 0; ; i++) {
    const key = await identityFromSeed(`${prefix}-${i}`)
    const id = peerIdFromPrivateKey(key).toString()
    if (ids.every((other) => proposerBeats(round, id, other) === beats)) return key
  }
}

describe('competing manifests: the earlier proposer wins', () => {
  let swarm: TestSwarm
  const attackers: Attacker[] = []
  const round2 = gate()
  const inRound2 = [gate(), gate(), gate()]
  const superseded: RoundSupersededDetail[][] = [[], [], []]

  beforeAll(async () => {
    swarm = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 2,
      idSeed: 'compete',
      hold: (i, ctx) => {
        if (ctx.round !== 2) return undefined
        inRound2[i].open()
        return round2.wait
      },
      beforeStart: (p, i) => p.addEventListener('round:superseded', (e) => superseded[i].push(e.detail)),
    })
  })

  afterAll(async () => {
    await Promise.all(attackers.map((a) => a.stop()))
    await swarm?.stop()
  })

  async function publishCompetitor(key: PrivateKey, entries: ManifestEntry[]): Promise<SignedManifest> {
    const { config, peers, weights, book } = swarm
    const updates = entries.map((e) => ({ id: e.peerId, samples: e.samples, adapter: book.get(bookKey(1, e.peerId))! }))
    const next = await applyRound(genesisState(weights, config.targets), config.strategy, config.targets, updates)
    const signed = await signManifest(key, {
      swarmId: peers[0].swarmId,
      round: 1,
      parentStateHash: config.genesisStateHash,
      proposer: peerIdFromPrivateKey(key).toString(),
      entries,
      newStateHash: next.hash,
    })
    const attacker = await startAttacker(key)
    attackers.push(attacker)
    const topic = swarmTopic(peers[0].swarmId)
    await attacker.join(peers.map((p) => p.multiaddrs()[0]), peers.map((p) => p.peerId), topic)
    await attacker.publish(topic, signed)
    return signed
  }

  it('a later-sorting competitor is ignored; an earlier-sorting one makes every peer roll back to it', async () => {
    const { peers } = swarm
    // Round 1 committed everywhere; round 2 is open (its training is held).
    await Promise.all(inRound2.map((g) => g.wait))
    const committed = peers[0].records.get(1)!
    expect(peers.every((p) => p.records.get(1)?.stateHash === committed.stateHash)).toBe(true)
    const ids = peers.map((p) => p.peerId)
    const all = committed.manifest.body.entries
    // Both competitors drop one contribution, so they lead to other states.
    const loser = await keyThat(1, ids, false, 'compete-late')
    await publishCompetitor(loser, all.slice(0, 2))
    const winner = await keyThat(1, ids, true, 'compete-early')
    const winnerId = peerIdFromPrivateKey(winner).toString()
    const rolled = peers.map((p) => waitForEvent(p, 'round:superseded', (d) => d.round === 1))
    const won = await publishCompetitor(winner, all.slice(1))
    const details = await Promise.all(rolled)
    for (const d of details) {
      expect(d.proposer).toBe(winnerId)
      expect(d.previousStateHash).toBe(committed.stateHash)
      expect(d.stateHash).toBe(won.body.newStateHash)
    }
    // The later-sorting competitor never won anywhere.
    for (const list of superseded) expect(list.map((d) => d.proposer)).toEqual([winnerId])

    round2.open()
    const done = await Promise.all(peers.map((p) => waitForEvent(p, 'round:complete', (d) => d.round === 2)))
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
    for (const d of done) expect(d.parentStateHash).toBe(won.body.newStateHash)
    for (const p of peers) {
      const chain = p.records.all()
      expect(chain[0].manifest.body.proposer).toBe(winnerId)
      expect([...chain[0].contributors]).toEqual(all.slice(1).map((e) => e.peerId))
      expect(verifyChain(chain, swarm.config.genesisStateHash)).toBeNull()
    }
  })
})
