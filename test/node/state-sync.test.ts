/**
 * P6 state sync over real TCP: a peer that joins late (or comes back) catches up with the
 * certified chain from its members, verifies every step, and contributes from the next
 * round. By replaying manifests while members keep the payloads, from a verified head
 * snapshot past them; and a restarted peer resumes from its own state dir.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { serializeSnapshot } from '../../src/node/snapshot.js'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { verifyChain } from '../../src/node/round-log.js'
import { syntheticTrainer, type Trainer } from '../../src/node/trainer.js'
import type { RoundCompleteDetail } from '../../src/node/engine.js'
import { gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'
import { SYNC_PROTOCOL, syncHandler } from '../../src/gossip/sync.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'

const POLICY = { deadlineMs: 6000, graceMs: 1000, minPeers: 3 }

/** A synthetic trainer that opens `after` once it trained round `round` (its announcement follows at once). */
function signallingTrainer(dataSeed: number, round: number, after: { open: () => void }): Trainer {
  const inner = syntheticTrainer({ dataSeed })
  return async (ctx) => {
    const res = await inner(ctx)
    if (ctx.round === round) setTimeout(() => after.open(), 50)
    return res
  }
}

describe('P6: state sync', () => {
  let swarm: TestSwarm | undefined
  const extra: FloraPeer[] = []
  const dirs: string[] = []
  afterEach(async () => {
    await Promise.all(extra.splice(0).map((p) => p.stop()))
    await swarm?.stop()
    swarm = undefined
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })))
  })

  it('a peer that joins after round 5 replays rounds 1-5 from the members (verified) and contributes to round 6', async () => {
    const joinerTrained = gate()
    const s = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 7,
      idSeed: 'late',
      swarm: { round: POLICY },
      // The members' round-6 training waits for the joiner's round-6 adapter.
      hold: (_i, ctx) => (ctx.round === 6 ? joinerTrained.wait : undefined),
    })
    swarm = s
    await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:start', (d) => d.round === 6, 30_000)))
    const joiner = await createPeer({
      config: s.config,
      weights: s.weights,
      privateKey: await identityFromSeed('late-joiner'),
      rank: 16,
      rounds: 7,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [s.peers[1].multiaddrs()[0]],
      trainer: signallingTrainer(9, 6, joinerTrained),
    })
    extra.push(joiner)
    const commits: RoundCompleteDetail[] = []
    joiner.addEventListener('round:complete', (e) => commits.push(e.detail))
    const done = waitForEvent(joiner, 'done', () => true, 60_000)
    await joiner.start()
    const ends = await Promise.all(s.peers.map((p) => waitForEvent(p, 'done', () => true, 60_000)))
    await done
    expect(commits.map((c) => [c.round, c.synced ?? 'took part'])).toEqual([
      [1, 'replay'],
      [2, 'replay'],
      [3, 'replay'],
      [4, 'replay'],
      [5, 'replay'],
      [6, 'took part'],
      [7, 'took part'],
    ])
    expect(new Set([...ends.map((e) => e.stateHash), joiner.head.hash]).size).toBe(1)
    const chain = s.peers[0].records.all()
    expect(verifyChain(chain, s.config.genesisStateHash, s.config.round)).toBeNull()
    // The same chain (each peer keeps the certificate it gathered: any quorum of precommits).
    expect(joiner.records.all().map((r) => [r.round, r.stateHash, r.manifest.sig, r.members])).toEqual(chain.map((r) => [r.round, r.stateHash, r.manifest.sig, r.members]))
    expect(chain[5].contributors).toContain(joiner.peerId)
    expect(chain[5].members).toHaveProperty(joiner.peerId, 6)
  })

  it('past the payloads members keep, a joiner takes a head snapshot (chunked, hash-checked against the certificate, resumed from a broken transfer) and goes on from there', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-state-'))
    dirs.push(dir)
    const joinerTrained = gate()
    const s = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 6,
      idSeed: 'snap',
      swarm: { round: POLICY },
      hold: (_i, ctx) => (ctx.round === 5 ? joinerTrained.wait : undefined),
      // Members keep only the payloads of their last round: rounds 1-3 cannot be replayed.
      peerOptions: () => ({ retainRounds: 1 }),
    })
    swarm = s
    await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:start', (d) => d.round === 5, 30_000)))
    const joiner = await createPeer({
      config: s.config,
      weights: s.weights,
      privateKey: await identityFromSeed('snap-joiner'),
      rank: 4,
      rounds: 6,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [s.peers[0].multiaddrs()[0]],
      trainer: signallingTrainer(7, 5, joinerTrained),
      stateDir: join(dir, 'joiner'),
    })
    extra.push(joiner)
    // A transfer of round 4's snapshot broke off halfway earlier: its first half is on disk.
    // The joiner must go on from there (starting over would append a second copy and fail).
    const full = serializeSnapshot(s.peers[0].head, s.peers[0].swarmId)
    expect(s.peers[0].head.round).toBe(4)
    await writeFile(join(dir, 'joiner', 'heads', 'sync-4.part'), full.subarray(0, Math.floor(full.byteLength / 2)))
    const commits: RoundCompleteDetail[] = []
    joiner.addEventListener('round:complete', (e) => commits.push(e.detail))
    const done = waitForEvent(joiner, 'done', () => true, 60_000)
    await joiner.start()
    const ends = await Promise.all(s.peers.map((p) => waitForEvent(p, 'done', () => true, 60_000)))
    await done
    expect(commits.slice(0, 4).map((c) => [c.round, c.synced])).toEqual([
      [1, 'snapshot'],
      [2, 'snapshot'],
      [3, 'snapshot'],
      [4, 'snapshot'],
    ])
    expect(commits[3].metrics.bytesReceived).toBe(full.byteLength)
    expect(existsSync(join(dir, 'joiner', 'heads', 'sync-4.part'))).toBe(false)
    expect(commits.slice(4).map((c) => [c.round, c.synced])).toEqual([
      [5, undefined],
      [6, undefined],
    ])
    expect(new Set([...ends.map((e) => e.stateHash), joiner.head.hash]).size).toBe(1)
    expect(verifyChain(joiner.records.all(), s.config.genesisStateHash, s.config.round)).toBeNull()
    expect(s.peers[0].records.get(5)?.contributors).toContain(joiner.peerId)
  })

  it('a peer stopped mid-round and restarted on its state dir resumes from its last committed round, catches up, and contributes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-state-'))
    dirs.push(dir)
    const backTrained = gate()
    let holdRound3 = true
    const s = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 6,
      idSeed: 'resume',
      swarm: { round: POLICY },
      hold: (i, ctx) => {
        if (i === 2 && ctx.round === 3 && holdRound3) return new Promise<void>(() => {})
        if (i < 2 && ctx.round === 5) return backTrained.wait
        return undefined
      },
      peerOptions: (i) => (i === 2 ? { stateDir: join(dir, 'peer-2') } : {}),
    })
    swarm = s
    await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:start', (d) => d.round === 3, 30_000)))
    const before = s.peers[2].head
    expect(before.round).toBe(2)
    await s.peers[2].stop()
    holdRound3 = false
    await Promise.all(s.peers.slice(0, 2).map((p) => waitForEvent(p, 'round:start', (d) => d.round === 5, 30_000)))
    const back = await createPeer({
      config: s.config,
      weights: s.weights,
      privateKey: s.keys[2],
      rank: 8,
      rounds: 6,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [s.peers[0].multiaddrs()[0]],
      trainer: signallingTrainer(2, 5, backTrained),
      stateDir: join(dir, 'peer-2'),
    })
    extra.push(back)
    // Resumed from disk before it met anyone: round 2's state, records 1-2.
    expect(back.head.round).toBe(2)
    expect(back.head.hash).toBe(before.hash)
    expect(back.records.all().map((r) => r.round)).toEqual([1, 2])
    const commits: RoundCompleteDetail[] = []
    back.addEventListener('round:complete', (e) => commits.push(e.detail))
    const done = waitForEvent(back, 'done', () => true, 60_000)
    await back.start()
    const ends = await Promise.all(s.peers.slice(0, 2).map((p) => waitForEvent(p, 'done', () => true, 60_000)))
    await done
    expect(commits.map((c) => [c.round, c.synced])).toEqual([
      [3, 'replay'],
      [4, 'replay'],
      [5, undefined],
      [6, undefined],
    ])
    expect(new Set([...ends.map((e) => e.stateHash), back.head.hash]).size).toBe(1)
    expect(s.peers[0].records.get(5)?.contributors).toContain(back.peerId)
  })

  it('a member whose sync answers do not verify (certificates without a quorum) is reported and not asked again; the joiner syncs from the others', async () => {
    const joinerTrained = gate()
    const s = await startTestSwarm({
      ranks: [2, 4, 8],
      rounds: 5,
      idSeed: 'hostile-sync',
      swarm: { round: POLICY },
      hold: (_i, ctx) => (ctx.round === 4 ? joinerTrained.wait : undefined),
    })
    swarm = s
    await Promise.all(s.peers.map((p) => waitForEvent(p, 'round:start', (d) => d.round === 4, 30_000)))
    // Peer 0 takes part in rounds honestly, but its sync server lies: every certificate it
    // serves is cut to one precommit, and its snapshot bytes are flipped.
    const hostile = s.peers[0]
    let commitRequests = 0
    await hostile.libp2p.unhandle(SYNC_PROTOCOL)
    await hostile.libp2p.handle(
      SYNC_PROTOCOL,
      syncHandler({
        head: () => ({ round: hostile.head.round, stateHash: hostile.head.hash, snapshots: [hostile.head.round] }),
        commits: (from, limit) => {
          commitRequests++
          const out = []
          for (let r = from; r < from + limit && hostile.records.get(r) != null; r++) {
            const rec = hostile.records.get(r)!
            out.push({ kind: 'commit' as const, manifest: rec.manifest, certificate: rec.certificate.slice(0, 1) })
          }
          return out
        },
        snapshot: async () => ({ total: 16, read: async (_o, n) => new Uint8Array(n).fill(7) }),
      }),
    )
    // The honest members serve no sync until the hostile one was asked (and caught).
    for (const p of s.peers.slice(1)) await p.libp2p.unhandle(SYNC_PROTOCOL)
    const joiner = await createPeer({
      config: s.config,
      weights: s.weights,
      privateKey: await identityFromSeed('hostile-sync-joiner'),
      rank: 4,
      rounds: 5,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: s.peers.map((p) => p.multiaddrs()[0]),
      trainer: signallingTrainer(3, 4, joinerTrained),
    })
    extra.push(joiner)
    const rejected = waitForEvent(joiner, 'peer:rejected', (d) => d.reason === 'bad-sync', 30_000)
    const commits: RoundCompleteDetail[] = []
    joiner.addEventListener('round:complete', (e) => commits.push(e.detail))
    const done = waitForEvent(joiner, 'done', () => true, 60_000)
    await joiner.start()
    const r = await rejected
    expect(r.peerId).toBe(hostile.peerId)
    expect(r.detail).toMatch(/1 precommits of members, a quorum is 2/)
    for (const p of s.peers.slice(1)) {
      await p.libp2p.handle(
        SYNC_PROTOCOL,
        syncHandler({
          head: () => ({ round: p.head.round, stateHash: p.head.hash, snapshots: [] }),
          commits: (from, limit) => {
            const out = []
            for (let k = from; k < from + limit && p.records.get(k) != null; k++) {
              const rec = p.records.get(k)!
              out.push({ kind: 'commit' as const, manifest: rec.manifest, certificate: [...rec.certificate] })
            }
            return out
          },
          snapshot: async () => undefined,
        }),
      )
    }
    await done
    expect(commits.slice(0, 3).map((c) => [c.round, c.synced])).toEqual([
      [1, 'replay'],
      [2, 'replay'],
      [3, 'replay'],
    ])
    expect(joiner.head.hash).toBe(s.peers[1].records.get(5)?.stateHash ?? (await waitForEvent(s.peers[1], 'done', () => true, 30_000)).stateHash)
    expect(commitRequests).toBe(1)
  })

  it('a state dir of another swarm, or one another peer holds, is refused with a clear message', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-state-'))
    dirs.push(dir)
    const a = syntheticSwarm({ round: POLICY })
    const b = syntheticSwarm({ seed: 99, round: POLICY })
    const key = await identityFromSeed('refuse')
    const make = (sw: typeof a, stateDir: string) =>
      createPeer({ config: sw.config, weights: sw.weights, privateKey: key, rank: 2, trainer: syntheticTrainer({}), stateDir, listen: ['/ip4/127.0.0.1/tcp/0'] })
    const first = await make(a, join(dir, 'a'))
    extra.push(first)
    await expect(make(a, join(dir, 'a'))).rejects.toThrow(/is in use by process/)
    await first.stop()
    await expect(make(b, join(dir, 'a'))).rejects.toThrow(/belongs to swarm .*, this peer is configured for swarm/)
    const other = await createPeer({ config: a.config, weights: a.weights, privateKey: await identityFromSeed('someone-else'), rank: 2, trainer: syntheticTrainer({}), stateDir: join(dir, 'a') }).catch((e: Error) => e)
    expect(String(other)).toMatch(/belongs to peer .*another --identity/)
    // Stopped, the directory is free again.
    const again = await make(a, join(dir, 'a'))
    extra.push(again)
  })
})
