/** Swarm config and id, proposer order, persistent identity. */
import { afterAll, describe, expect, it } from 'vitest'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { parseSwarmConfig, swarmIdOf, SwarmConfigError } from '../../src/node/config.js'
import { IdentityError, loadOrCreateIdentity } from '../../src/node/identity.js'
import { foundingProposer, proposerBeats, proposerOrder } from '../../src/node/proposer.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { testPeerIds } from './helpers.js'

describe('swarm config', () => {
  const { config } = syntheticSwarm()

  it('hashes to a swarm id that changes with every field that must be agreed on', () => {
    const id = swarmIdOf(config)
    expect(id).toMatch(/^[0-9a-f]{64}$/)
    expect(swarmIdOf(parseSwarmConfig(JSON.parse(JSON.stringify(config))))).toBe(id)
    const variants = [
      { ...config, strategy: 'fedit' },
      { ...config, baseModelHash: 'ee'.repeat(32) },
      { ...config, round: { ...config.round, deadlineMs: config.round.deadlineMs + 1 } },
      { ...config, targets: config.targets.slice(1) },
      { ...config, name: 'other' },
    ]
    for (const v of variants) expect(swarmIdOf(v)).not.toBe(id)
  })

  it('refuses malformed configs with the field at fault', () => {
    expect(() => parseSwarmConfig({ ...config, round: { ...config.round, deadlineMs: -1 } })).toThrow(/round\.deadlineMs/)
    expect(() => parseSwarmConfig({ ...config, extra: 1 })).toThrow(SwarmConfigError)
    expect(() => parseSwarmConfig({ ...config, targets: [...config.targets].reverse() })).toThrow(/sorted/)
  })
})

describe('proposer order', () => {
  it('is a deterministic function of (round, peer ids) that rotates between rounds', async () => {
    const ids = await testPeerIds('order', 8)
    const o1 = proposerOrder(1, ids)
    expect(proposerOrder(1, [...ids].reverse())).toEqual(o1)
    expect([...o1].sort()).toEqual([...ids].sort())
    const firsts = new Set(Array.from({ length: 40 }, (_, r) => proposerOrder(r + 1, ids)[0]))
    expect(firsts.size).toBeGreaterThan(3)
    for (let i = 1; i < o1.length; i++) expect(proposerBeats(1, o1[i - 1], o1[i])).toBe(true)
  })

  it('founding turns: peers whose candidate sets differ by a few founders agree on most views (a position in a sorted order would not)', async () => {
    const ids = await testPeerIds('founding-order', 48)
    const views = Array.from({ length: 200 }, (_, v) => v)
    // Deterministic, independent of the candidates' order, always a candidate.
    expect(views.map((v) => foundingProposer(1, v, [...ids].reverse()))).toEqual(views.map((v) => foundingProposer(1, v, ids)))
    for (const v of views) expect(ids).toContain(foundingProposer(1, v, ids))
    // Every founder gets turns.
    expect(new Set(views.map((v) => foundingProposer(1, v, ids))).size).toBeGreaterThan(40)
    // Two peers that each miss two different founders.
    const a = ids.filter((_, i) => i !== 3 && i !== 17)
    const b = ids.filter((_, i) => i !== 30 && i !== 41)
    const agreeTurns = views.filter((v) => foundingProposer(1, v, a) === foundingProposer(1, v, b)).length
    const agreeSorted = views.filter((v) => proposerOrder(1, a)[v % a.length] === proposerOrder(1, b)[v % b.length]).length
    expect(agreeTurns / views.length).toBeGreaterThan(0.85)
    expect(agreeSorted / views.length).toBeLessThan(agreeTurns / views.length - 0.2)
    expect(() => foundingProposer(1, 0, [])).toThrow(RangeError)
  })
})

describe('identity file', () => {
  const dirs: string[] = []
  afterAll(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
  })

  it('keeps the peer id across restarts and is private to the user', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-id-'))
    dirs.push(dir)
    const file = join(dir, 'nested', 'peer.key')
    const first = await loadOrCreateIdentity(file)
    expect(first.created).toBe(true)
    const again = await loadOrCreateIdentity(file)
    expect(again.created).toBe(false)
    expect(peerIdFromPrivateKey(again.privateKey).toString()).toBe(peerIdFromPrivateKey(first.privateKey).toString())
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    const junk = join(dir, 'junk.key')
    await writeFile(junk, 'not a key')
    await expect(loadOrCreateIdentity(junk)).rejects.toBeInstanceOf(IdentityError)
  })
})
