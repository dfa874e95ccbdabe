/**
 * P7 one chain, turn-checked proposals: a round is decided only by the proposer whose
 * view it is (over the recorded membership, by the receiver's clock) and certified by a
 * quorum of members' precommits. A validly signed manifest from anyone else, empty
 * manifests published for rounds r and r+1 at once, or a member's manifest for a view
 * that is not its own decide nothing; the honest chain goes on with every contribution.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { signManifest } from '../../src/gossip/sign.js'
import type { ManifestBody, SignedManifest } from '../../src/gossip/messages.js'
import type { PeerRejectedDetail } from '../../src/node/engine.js'
import { swarmTopic } from '../../src/gossip/topics.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { memberIds } from '../../src/node/membership.js'
import { proposerOrder } from '../../src/node/proposer.js'
import { applyRound } from '../../src/node/state.js'
import { verifyChain } from '../../src/node/round-log.js'
import { startAttacker, type Attacker } from './attacker.js'
import { bookKey, gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

describe('P7: only the proposer of the view decides, and only with a quorum', () => {
  let swarm: TestSwarm
  let attacker: Attacker
  let attackerKey: PrivateKey
  const release = gate()
  const inRound2 = [gate(), gate(), gate()]
  const rejected: PeerRejectedDetail[][] = [[], [], []]

  beforeAll(async () => {
    swarm = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 3,
      idSeed: 'hijack',
      hold: (i, ctx) => {
        if (ctx.round !== 2) return undefined
        inRound2[i].open()
        return release.wait
      },
      beforeStart: (p, i) => p.addEventListener('peer:rejected', (e) => rejected[i].push(e.detail)),
    })
    attackerKey = await identityFromSeed('hijack-attacker')
    attacker = await startAttacker(attackerKey)
    const { peers } = swarm
    await attacker.join(peers.map((p) => p.multiaddrs()[0]), peers.map((p) => p.peerId), swarmTopic(peers[0].swarmId))
  })

  afterAll(async () => {
    await attacker?.stop()
    await swarm?.stop()
  })

  /** A correctly signed, correctly replaying manifest for round 2 on the agreed parent. */
  async function manifest(key: PrivateKey, round: number, view: number, parent: string, entries: ManifestBody['entries'], newStateHash: string): Promise<SignedManifest> {
    return signManifest(key, {
      swarmId: swarm.peers[0].swarmId,
      round,
      view,
      parentStateHash: parent,
      proposer: peerIdFromPrivateKey(key).toString(),
      entries,
      newStateHash,
      lockView: -1,
      justify: [],
    })
  }

  it('a non-member\'s manifests, a member\'s out-of-turn manifest and round r+1 manifests decide nothing', async () => {
    const { peers, config } = swarm
    await Promise.all(inRound2.map((g) => g.wait))
    const r1 = peers[0].records.get(1)!
    expect(peers.every((p) => p.records.get(1)?.stateHash === r1.stateHash)).toBe(true)
    expect(memberIds(r1.members)).toEqual(peers.map((p) => p.peerId).sort())
    const head = peers[0].head

    // 1. A stranger (not a member) proposes an empty round 2 and round 3 at once.
    const empty2 = await manifest(attackerKey, 2, 0, head.hash, [], head.hash)
    const empty3 = await manifest(attackerKey, 3, 0, head.hash, [], head.hash)
    const turnRejections = peers.map((p) =>
      waitForEvent(p, 'peer:rejected', (d) => d.peerId === attacker.peerId && d.reason === 'not-your-turn' && d.round === 2),
    )
    await attacker.publish(swarmTopic(peers[0].swarmId), empty2)
    await attacker.publish(swarmTopic(peers[0].swarmId), empty3)
    await Promise.all(turnRejections)

    // 2. A member that is not view 0's proposer proposes view 0 (delivered to every peer).
    const order = proposerOrder(2, peers.map((p) => p.peerId))
    const intruderIndex = peers.findIndex((p) => p.peerId === order[1])
    const one = await applyRound(head, config.strategy, config.targets, [])
    const outOfTurn = await manifest(swarm.keys[intruderIndex], 2, 0, head.hash, [], one.hash)
    for (const p of peers) p.service.engine.handleMessage(outOfTurn)
    for (const list of rejected) {
      expect(list.some((d) => d.peerId === order[1] && d.reason === 'not-your-turn' && d.round === 2)).toBe(true)
    }
    // 3. Its manifest for its own view 1 before that view opens is held, not counted.
    const early = await manifest(swarm.keys[intruderIndex], 2, 1, head.hash, [], one.hash)
    for (const p of peers) p.service.engine.handleMessage(early)

    expect(peers.every((p) => p.head.round === 1)).toBe(true)
    release.open()
    const done = await Promise.all(peers.map((p) => waitForEvent(p, 'done', () => true, 30_000)))
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
    for (const p of peers) {
      const chain = p.records.all()
      expect(chain.map((r) => r.round)).toEqual([1, 2, 3])
      // Round 2 was decided in view 0 by its proposer, with every contribution.
      expect(chain[1].manifest.body.proposer).toBe(order[0])
      expect(chain[1].manifest.body.view).toBe(0)
      expect(chain[1].contributors).toEqual(peers.map((q) => q.peerId).sort())
      expect(chain[1].stateHash).not.toBe(head.hash)
      expect(verifyChain(chain, config.genesisStateHash, config.round)).toBeNull()
      // Every certificate: precommits of a quorum of the recorded members.
      for (const r of chain) expect(r.certificate.length).toBeGreaterThanOrEqual(2)
    }
    // The adapters merged are the ones the trainers produced.
    expect(swarm.book.has(bookKey(2, peers[0].peerId))).toBe(true)
  })
})
