/**
 * The state dir under crashes and corruption: a torn records line is dropped, a head
 * snapshot that does not verify is never loaded (the previous one is, and the rounds past
 * it are replayed from the kept payloads), a corrupt chain is refused with a message.
 */
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPeer } from '../../src/node/peer.js'
import { StateDir, StateDirError } from '../../src/node/state-dir.js'
import { swarmIdOf } from '../../src/node/config.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import { cp } from 'node:fs/promises'
import { main as exportMain } from '../../src/node/export-command.js'
import { readSafetensorsFile } from '../../src/model/safetensors.js'
import { loadPeftAdapter } from '../../src/model/checkpoint.js'
import { startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

describe('P6: the state dir survives crashes and refuses corruption', () => {
  let base: string
  let swarm: TestSwarm
  let hashes: string[]
  let id: { swarmId: string; genesisStateHash: string; peerId: string }

  /** A copy of peer 0's state dir after 3 rounds, to damage. */
  async function copy(): Promise<string> {
    const dir = await mkdtemp(join(base, 'copy-'))
    await cp(join(base, 'peer-0'), dir, { recursive: true })
    await rm(join(dir, 'LOCK'), { force: true })
    return dir
  }

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'flora-statedir-'))
    swarm = await startTestSwarm({
      ranks: [2, 4],
      rounds: 3,
      idSeed: 'statedir',
      swarm: { round: { deadlineMs: 6000, graceMs: 1000, minPeers: 2 } },
      peerOptions: (i) => ({ stateDir: join(base, `peer-${i}`) }),
    })
    await Promise.all(swarm.peers.map((p) => waitForEvent(p, 'done', () => true, 30_000)))
    hashes = swarm.peers[0].records.all().map((r) => r.stateHash)
    id = { swarmId: swarmIdOf(swarm.config), genesisStateHash: swarm.config.genesisStateHash, peerId: swarm.peers[0].peerId }
    await swarm.stop()
  })
  afterAll(async () => {
    await rm(base, { recursive: true, force: true })
  })

  it('holds what a peer needs to resume: the head of round 3, records 1-3, the payloads of the kept rounds', async () => {
    const sd = StateDir.open(await copy(), id)
    const got = sd.load(swarm.config.targets)
    sd.close()
    expect(got.head?.round).toBe(3)
    expect(got.head?.hash).toBe(hashes[2])
    expect(got.records.map((r) => r.stateHash)).toEqual(hashes)
    expect(got.pending).toEqual([])
    // 2 contributors x 3 rounds
    expect(got.payloads.size).toBe(6)
  })

  it('a torn last records line (a crash mid-append) is dropped and the file repaired', async () => {
    const dir = await copy()
    await appendFile(join(dir, 'records.jsonl'), '{"type":"commit","round":4,"parentSt')
    const sd = StateDir.open(dir, id)
    const got = sd.load(swarm.config.targets)
    sd.close()
    expect(got.records.map((r) => r.round)).toEqual([1, 2, 3])
    expect((await readFile(join(dir, 'records.jsonl'), 'utf8')).endsWith('}\n')).toBe(true)
  })

  it('a head snapshot that does not verify is never loaded: the previous one is, and the round past it comes back as pending', async () => {
    const dir = await copy()
    const file = join(dir, 'heads', '3.safetensors')
    const bytes = await readFile(file)
    bytes[bytes.length - 3] ^= 0x40
    await writeFile(file, bytes)
    const sd = StateDir.open(dir, id)
    const got = sd.load(swarm.config.targets)
    sd.close()
    expect(got.head?.round).toBe(2)
    expect(got.head?.hash).toBe(hashes[1])
    expect(got.records.map((r) => r.round)).toEqual([1, 2])
    expect(got.pending.map((c) => c.manifest.body.round)).toEqual([3])

    // A peer on that dir replays round 3 from its kept payloads, alone, with nobody to ask.
    const peer = await createPeer({ config: swarm.config, weights: swarm.weights, privateKey: swarm.keys[0], rank: 2, rounds: 3, trainer: syntheticTrainer({}), stateDir: dir, listen: ['/ip4/127.0.0.1/tcp/0'] })
    try {
      expect(peer.head.round).toBe(2)
      const done = waitForEvent(peer, 'done', () => true, 20_000)
      await peer.start()
      expect((await done).stateHash).toBe(hashes[2])
      expect(peer.records.all().map((r) => r.stateHash)).toEqual(hashes)
    } finally {
      await peer.stop()
    }
    const lines = (await readFile(join(dir, 'records.jsonl'), 'utf8')).trim().split('\n')
    expect(lines.map((l) => (JSON.parse(l) as { round: number }).round)).toEqual([1, 2, 3])
  })

  it('refuses a chain that does not link, or heads none of which verify, with a message that says where', async () => {
    const dir = await copy()
    const lines = (await readFile(join(dir, 'records.jsonl'), 'utf8')).trim().split('\n')
    const rec = JSON.parse(lines[1]) as { parentStateHash: string }
    rec.parentStateHash = '0'.repeat(64)
    lines[1] = JSON.stringify(rec)
    await writeFile(join(dir, 'records.jsonl'), `${lines.join('\n')}\n`)
    const sd = StateDir.open(dir, id)
    expect(() => sd.load(swarm.config.targets)).toThrow(/records.jsonl line 2 \(round 2\) does not extend the chain/)
    sd.close()

    const dir2 = await copy()
    for (const f of await readdir(join(dir2, 'heads'))) await writeFile(join(dir2, 'heads', f), 'garbage')
    const sd2 = StateDir.open(dir2, id)
    expect(() => sd2.load(swarm.config.targets)).toThrow(StateDirError)
    expect(() => sd2.load(swarm.config.targets)).toThrow(/no head snapshot verifies/)
    sd2.close()
  })

  it('flora export writes the agreed weights bit for bit, and an adapter that reproduces them on the base', async () => {
    const dir = await copy()
    const out = join(base, 'export')
    const code = await exportMain(['node', 'flora', 'export', '--state-dir', dir, '--out', out])
    expect(code).toBe(0)
    const manifest = JSON.parse(await readFile(join(out, 'flora.json'), 'utf8')) as { round: number; stateHash: string }
    expect(manifest).toMatchObject({ round: 3, stateHash: hashes[2] })
    const weights = await readSafetensorsFile(join(out, 'model', 'weights.safetensors'))
    const head = swarm.peers[0].head
    for (const [name, w] of head.weights) expect(weights.tensors.get(`${name}.weight`)?.data).toEqual(w)
    // The adapter on the base (genesis) weights, in float64: the agreed weights within float32 rounding.
    const adapter = await loadPeftAdapter(join(out, 'adapter'), swarm.config.targets)
    for (const m of adapter.modules) {
      const w0 = swarm.weights.get(m.name) as Float32Array
      const w = head.weights.get(m.name) as Float32Array
      let maxErr = 0
      let maxDelta = 0
      for (let o = 0; o < m.outFeatures; o++) {
        for (let i = 0; i < m.inFeatures; i++) {
          let acc = 0
          for (let k = 0; k < m.rank; k++) acc += m.loraB[o * m.rank + k] * m.loraA[k * m.inFeatures + i]
          const idx = o * m.inFeatures + i
          maxErr = Math.max(maxErr, Math.abs(w0[idx] + m.scaling * acc - w[idx]))
          maxDelta = Math.max(maxDelta, Math.abs(w[idx] - w0[idx]))
        }
      }
      expect(maxDelta).toBeGreaterThan(1e-4)
      expect(maxErr).toBeLessThan(1e-6)
    }
  })

  it('refuses a non-empty directory that is not a state dir', async () => {
    const dir = await mkdtemp(join(base, 'other-'))
    await writeFile(join(dir, 'notes.txt'), 'mine')
    expect(() => StateDir.open(dir, id)).toThrow(/not empty and has no flora-state.json/)
  })
})
