/**
 * Three peers with different ranks, real TCP on loopback, three rounds of FLoRA:
 * P1 agreement, P2 exactness against an independent float64 replay, P5 inclusion.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { encodeAdapter } from '../../src/lora/wire.js'
import { computeStateHash } from '../../src/node/state-hash.js'
import { verifyChain, type RoundRecord } from '../../src/node/round-log.js'
import { bookKey, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

const ROUNDS = 3
const RANKS = [2, 4, 8]

/** Float32 spacing at |x| (the unit in the last place). */
function ulp32(x: number): number {
  const a = Math.fround(Math.abs(x))
  if (a === 0) return 2 ** -149
  const next = new Float32Array([a])
  const bits = new Uint32Array(next.buffer)
  bits[0] += 1
  return next[0] - a
}

describe('three heterogeneous peers over loopback TCP', () => {
  let swarm: TestSwarm
  const snapshots = new Map<number, Map<string, Float32Array>>()

  beforeAll(async () => {
    swarm = await startTestSwarm({ ranks: RANKS, rounds: ROUNDS })
    // Keep every round's agreed weights (from peer 0) for the P2 replay.
    swarm.peers[0].addEventListener('round:complete', (e) => {
      snapshots.set(e.detail.round, new Map([...swarm.peers[0].head.weights].map(([k, v]) => [k, Float32Array.from(v)])))
    })
    await Promise.all(swarm.peers.map((p) => waitForEvent(p, 'done', () => true, 60_000)))
  })

  afterAll(async () => {
    await swarm?.stop()
  })

  it('P1: every peer holds the same state hash after every round', () => {
    const chains = swarm.peers.map((p) => p.records.all())
    for (const chain of chains) {
      expect(chain.map((r) => r.round)).toEqual([1, 2, 3])
      expect(verifyChain(chain, swarm.config.genesisStateHash)).toBeNull()
    }
    for (let r = 0; r < ROUNDS; r++) {
      const hashes = new Set(chains.map((c) => c[r].stateHash))
      expect(hashes.size).toBe(1)
    }
    // The hash is really that of the weights each peer holds.
    const heads = swarm.peers.map((p) => computeStateHash(p.head.weights, p.head.global, swarm.config.targets))
    expect(new Set(heads).size).toBe(1)
    expect(heads[0]).toBe(chains[0][ROUNDS - 1].stateHash)
  })

  it('P5: with no faults every peer\'s adapter is in every round', () => {
    const ids = swarm.peers.map((p) => p.peerId).sort()
    for (const rec of swarm.peers[0].records.all()) expect([...rec.contributors]).toEqual(ids)
  })

  it('P2: weights equal W_{r-1} + sum_k p_k s_k B_k A_k computed independently in float64', () => {
    const records: readonly RoundRecord[] = swarm.peers[1].records.all()
    let prev = swarm.weights
    for (const rec of records) {
      const entries = rec.manifest.body.entries
      const total = entries.reduce((s, e) => s + e.samples, 0)
      const got = snapshots.get(rec.round)
      expect(got).toBeDefined()
      for (const shape of swarm.config.targets) {
        const { name, inFeatures: nIn, outFeatures: nOut } = shape
        const ref = new Float64Array(nIn * nOut)
        const w0 = prev.get(name) as Float32Array
        for (let i = 0; i < ref.length; i++) ref[i] = w0[i]
        for (const e of entries) {
          const adapter = swarm.book.get(bookKey(rec.round, e.peerId))
          expect(adapter).toBeDefined()
          // The manifest names exactly the bytes this adapter encodes to.
          const bytes = encodeAdapter(adapter!, { dtype: 'f32' })
          expect(createHash('sha256').update(bytes).digest('hex')).toBe(e.payloadHash)
          const m = adapter!.modules.find((x) => x.name === name)!
          const c = (e.samples / total) * (e.alpha / e.rank)
          for (let i = 0; i < nOut; i++) {
            for (let j = 0; j < nIn; j++) {
              let s = 0
              for (let t = 0; t < e.rank; t++) s += m.loraB[i * e.rank + t] * m.loraA[t * nIn + j]
              ref[i * nIn + j] += c * s
            }
          }
        }
        const w = got!.get(name) as Float32Array
        let changed = 0
        for (let i = 0; i < w.length; i++) {
          expect(Math.abs(w[i] - ref[i])).toBeLessThanOrEqual(ulp32(ref[i]))
          if (w[i] !== w0[i]) changed++
        }
        expect(changed).toBeGreaterThan(0)
      }
      prev = got!
    }
  })

  it('reports round metrics and payload accounting', () => {
    const rec = swarm.peers[0].records.all()[0]
    const sizes = new Map(rec.manifest.body.entries.map((e) => [e.peerId, e.payloadSize]))
    const total = [...sizes.values()].reduce((a, b) => a + b, 0)
    for (const p of swarm.peers) {
      // Each peer fetched every other adapter exactly once.
      expect(p.stats().payloadBytesReceived).toBe(ROUNDS * (total - (sizes.get(p.peerId) ?? 0)))
    }
  })
})
