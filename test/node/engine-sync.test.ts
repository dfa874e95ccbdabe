/**
 * A restarted peer getting back into the rounds, on the round engine alone: in process,
 * with a fake network (no libp2p), signed votes built here, and no timer involved. Each
 * case is one link of the chain scripts/soak.ts showed breaking (a restarted peer
 * contributed again only 3-4 rounds after it was up):
 *  - its first catch-up (its state dir's commits, before any member was connected) must
 *    not hold back the sync the members' handshakes ask for a moment later;
 *  - it tells the members its head as it starts training, not only when a catch-up ends
 *    (members that committed another round meanwhile saw a stale head);
 *  - a member's wait for a caught-up peer in a round decided before its deadline does not
 *    count against the once-per-MEMBER_TTL_ROUNDS allowance.
 */
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { sha256Hex } from '../../src/gossip/canonical.js'
import type { PayloadFetcher } from '../../src/gossip/fetcher.js'
import type { CommitMessage, GossipMessage, SignedManifest } from '../../src/gossip/messages.js'
import { PayloadStore } from '../../src/gossip/payload.js'
import { manifestValueHash, signVote } from '../../src/gossip/sign.js'
import { RoundEngine, type RoundNetwork } from '../../src/node/engine.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { silentLogger } from '../../src/node/logger.js'
import { proposerOrder } from '../../src/node/proposer.js'
import type { RoundRecord } from '../../src/node/round-log.js'
import { genesisState } from '../../src/node/state.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'

const SWARM_ID = sha256Hex('engine-sync-test')
const tick = (ms = 10): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await tick()
  if (!cond()) throw new Error(`timed out waiting for ${what}`)
}

async function key(name: string): Promise<{ key: PrivateKey; id: string }> {
  const k = await identityFromSeed(`engine-sync-${name}`)
  return { key: k, id: peerIdFromPrivateKey(k).toString() }
}

/** A fake network: who is connected, the heads they reported, what the engine published and asked. */
function fakeNetwork(heads: Map<string, number>): RoundNetwork & { published: GossipMessage[]; asked: Array<{ peer: string; from: number }>; greetings: number } {
  const net = {
    published: [] as GossipMessage[],
    asked: [] as Array<{ peer: string; from: number }>,
    greetings: 0,
    publish: async (msg: GossipMessage) => {
      net.published.push(msg)
    },
    members: () => new Set(heads.keys()),
    isReady: (p: string) => heads.has(p),
    reportedHead: (p: string) => (heads.get(p) === -1 ? undefined : heads.get(p)),
    forgetReportedHead: (p: string) => void heads.set(p, -1),
    caughtUp: () => {
      net.greetings++
    },
    bytesServed: () => 0,
    bytesFetched: () => 0,
    syncCommits: async (peer: string, from: number): Promise<CommitMessage[]> => {
      net.asked.push({ peer, from })
      return []
    },
  }
  return net
}

/** The engine under test: rank 2, a synthetic trainer, nothing to fetch; `extra` says how it starts. */
function testEngine(
  self: { key: PrivateKey; id: string },
  swarm: ReturnType<typeof syntheticSwarm>,
  genesis: ReturnType<typeof genesisState>,
  network: RoundNetwork,
  extra: { priorHead?: number; restored?: ConstructorParameters<typeof RoundEngine>[0]['restored'] },
): RoundEngine {
  return new RoundEngine({
    self: self.id,
    privateKey: self.key,
    config: swarm.config,
    swarmId: SWARM_ID,
    genesis,
    rank: 2,
    alpha: 4,
    trainer: syntheticTrainer(),
    network,
    store: new PayloadStore(),
    fetcher: {} as PayloadFetcher,
    log: silentLogger(),
    ...extra,
  })
}

describe('a restarted peer getting back into the rounds (round engine, fake network)', () => {
  let engine: RoundEngine | undefined
  afterEach(() => {
    engine?.stop()
    engine = undefined
    vi.restoreAllMocks()
  })

  it('its first catch-up, which asked no member, does not hold back the sync a member asks for at once', async () => {
    // Frozen clock: every request falls within the sync throttle's window of the last one.
    vi.spyOn(Date, 'now').mockReturnValue(1_800_000_000_000)
    const swarm = syntheticSwarm({ round: { deadlineMs: 3000, graceMs: 1000, minPeers: 2 } })
    const self = await key('self')
    const member = (await key('member')).id
    const heads = new Map<string, number>()
    const network = fakeNetwork(heads)
    // Its records say it had round 1: it starts behind, and its first catch-up finds no member to ask.
    engine = testEngine(self, swarm, genesisState(swarm.weights, swarm.config.targets), network, { priorHead: 1 })
    await engine.start()
    await tick()
    expect(engine.behind).toBe(true)
    expect(network.asked).toEqual([])
    // A member connects; its handshake says the swarm committed round 3.
    heads.set(member, 3)
    engine.aheadReported(member, 3)
    await tick()
    expect(network.asked).toEqual([{ peer: member, from: 1 }])
    // A catch-up that asked members still holds the next one back for a grace period.
    engine.aheadReported(member, 3)
    await tick()
    expect(network.asked).toHaveLength(1)
  })

  it('tells the members its head at each round start until its adapter is merged; a caught-up peer waited for in a round decided early is waited for again', async () => {
    const swarm = syntheticSwarm({ round: { deadlineMs: 60_000, graceMs: 1000, minPeers: 1 } })
    const { config, weights } = swarm
    const self = await key('A')
    const other = await key('B')
    const joiner = (await key('C')).id
    // Restarted from its state dir at round `head`, a member with B, where it had not
    // contributed; it proposes the next round (view 0).
    let head = 4
    while (proposerOrder(head + 1, [self.id, other.id])[0] !== self.id) head++
    const genesis = genesisState(weights, config.targets)
    const record: RoundRecord = {
      round: head,
      parentStateHash: '0'.repeat(64),
      stateHash: genesis.hash,
      manifest: {} as SignedManifest,
      certificate: [],
      members: { [self.id]: head, [other.id]: head },
      contributors: [other.id],
      committedAt: 0,
    }
    // B and the joiner C are connected; both greeted with a stale head (counted behind, not waited for).
    const heads = new Map([
      [other.id, head - 2],
      [joiner, head - 2],
    ])
    const network = fakeNetwork(heads)
    const e = testEngine(self, swarm, genesis, network, { restored: { head: { ...genesis, round: head }, records: [record], pending: [] } })
    engine = e
    await e.start()
    // Round head+1 starts: back from a restart, it tells the members its head.
    expect(e.round).toBe(head + 1)
    expect(network.greetings).toBe(1)
    // It trains and proposes alone (nobody else is waited for).
    await until('the proposal', () => network.published.some((m) => m.kind === 'manifest'))
    const proposal = network.published.find((m) => m.kind === 'manifest') as SignedManifest
    expect(proposal.body.entries.map((x) => x.peerId)).toEqual([self.id])
    // The joiner says it caught up, after the proposal: waited for (in vain) this round.
    heads.set(joiner, -1)
    e.caughtUp(joiner)
    expect(e.progress?.expected).toBe(2)
    // B votes; the round is certified long before its deadline.
    for (const phase of ['prevote', 'precommit'] as const) {
      const vote = await signVote(other.key, {
        swarmId: SWARM_ID,
        round: head + 1,
        view: 0,
        phase,
        voter: other.id,
        parentStateHash: genesis.hash,
        newStateHash: proposal.body.newStateHash,
        valueHash: manifestValueHash(proposal.body),
      })
      e.handleMessage(vote)
      if (phase === 'prevote') await until('our precommit', () => network.published.some((m) => m.kind === 'vote' && m.body.phase === 'precommit'))
    }
    await until('round head+2', () => e.progress?.round === head + 2)
    // Its adapter was merged: no more greetings.
    expect(e.records.last?.contributors).toEqual([self.id])
    expect(network.greetings).toBe(1)
    // The joiner says again it caught up (it starts training this round): waited for. The
    // last round did not hold for it, so the wait there does not count.
    expect(e.progress?.expected).toBe(1)
    e.caughtUp(joiner)
    expect(e.progress?.expected).toBe(2)
  })
})
