import { describe, expect, it } from 'vitest'
import { boundRound, cappedWeights, clipAdapter, deltaNorm, frobeniusNorm } from '../../src/aggregation/bounds.js'
import { createPrng } from '../../src/lora/prng.js'
import type { AdapterSet, LoraModule } from '../../src/lora/types.js'
import { applyRound, genesisState, NonFiniteStateError } from '../../src/node/state.js'

function randomModule(name: string, rank: number, inF: number, outF: number, seed: number, scale = 1): LoraModule {
  const prng = createPrng(seed)
  const loraA = new Float32Array(rank * inF)
  const loraB = new Float32Array(outF * rank)
  for (let i = 0; i < loraA.length; i++) loraA[i] = prng.normal() * scale
  for (let i = 0; i < loraB.length; i++) loraB[i] = prng.normal() * scale
  return { name, rank, inFeatures: inF, outFeatures: outF, alpha: 2 * rank, scaling: 2, loraA, loraB }
}

/** ||s B A||_F by forming the product (the reference for deltaNorm). */
function naiveDeltaNorm(m: LoraModule): number {
  let sq = 0
  for (let o = 0; o < m.outFeatures; o++) {
    for (let c = 0; c < m.inFeatures; c++) {
      let v = 0
      for (let j = 0; j < m.rank; j++) v += m.loraB[o * m.rank + j] * m.loraA[j * m.inFeatures + c]
      sq += (m.scaling * v) ** 2
    }
  }
  return Math.sqrt(sq)
}

describe('cappedWeights (water filling)', () => {
  it('is p_k = n_k / N when nobody is above the cap', () => {
    const w = cappedWeights([1, 2, 3, 4], 0.5)
    w.forEach((x, k) => expect(x).toBeCloseTo([0.1, 0.2, 0.3, 0.4][k], 15))
  })

  it('caps a contributor that claims 2^31-1 samples and shares the rest by samples', () => {
    const w = cappedWeights([2 ** 31 - 1, 100, 300], 0.5)
    expect(w[0]).toBe(0.5)
    expect(w[1]).toBeCloseTo(0.125, 15)
    expect(w[2]).toBeCloseTo(0.375, 15)
    expect(Math.max(...w)).toBeLessThanOrEqual(0.5)
  })

  it('repeats the filling until nobody is above the cap', () => {
    const w = cappedWeights([1000, 900, 1, 1, 1, 1], 0.3)
    expect(w[0]).toBe(0.3)
    expect(w[1]).toBe(0.3)
    for (const x of w.slice(2)) expect(x).toBeCloseTo(0.1, 15)
    expect(w.reduce((a, b) => a + b)).toBeCloseTo(1, 14)
  })

  it('gives everyone 1/n when n x cap <= 1, and p = 1 to a lone contributor', () => {
    expect(cappedWeights([5, 1], 0.25)).toEqual([0.5, 0.5])
    expect(cappedWeights([7], 0.5)).toEqual([1])
  })

  it('refuses non-finite or non-positive weights and caps outside (0, 1]', () => {
    expect(() => cappedWeights([1, Number.NaN], 0.5)).toThrow(/finite/)
    expect(() => cappedWeights([1, 0], 0.5)).toThrow(/finite/)
    expect(() => cappedWeights([1, 2], 0)).toThrow(/maxWeight/)
  })
})

describe('deltaNorm', () => {
  it('equals ||s B A||_F formed explicitly', () => {
    for (const [r, i, o, seed] of [
      [1, 5, 3, 1],
      [4, 16, 12, 2],
      [8, 9, 31, 3],
    ] as const) {
      const m = randomModule('m', r, i, o, seed)
      expect(deltaNorm(m)).toBeCloseTo(naiveDeltaNorm(m), 9)
    }
  })

  it('is NaN for a non-finite element and stays finite for entries near the float32 limit', () => {
    const m = randomModule('m', 2, 4, 4, 9)
    const bad = { ...m, loraB: Float32Array.from(m.loraB, (x, k) => (k === 3 ? Number.POSITIVE_INFINITY : x)) }
    expect(deltaNorm(bad)).toBeNaN()
    const huge = randomModule('m', 2, 4, 4, 9, 1e30)
    expect(Number.isFinite(deltaNorm(huge))).toBe(true)
  })
})

describe('clipAdapter / boundRound', () => {
  it('scales B so the module norm meets the bound, leaves small modules untouched', () => {
    const big = randomModule('a', 4, 8, 8, 4, 10)
    const small = randomModule('b', 4, 8, 8, 5, 1e-3)
    const { adapter, clipped } = clipAdapter('x', { modules: [big, small] }, () => 1)
    expect(clipped.map((c) => c.module)).toEqual(['a'])
    expect(deltaNorm(adapter.modules[0])).toBeCloseTo(1, 5)
    expect(adapter.modules[1]).toBe(small)
    expect(adapter.modules[0].loraA).toBe(big.loraA)
  })

  it('bounds a poisoned adapter relative to the parent weight and is identical however the updates are ordered', () => {
    const w = new Float32Array(64).fill(0.5) // ||W||_F = 4
    const parent = new Map([['a', w]])
    const honest: AdapterSet = { modules: [randomModule('a', 2, 8, 8, 11, 0.01)] }
    const poison: AdapterSet = { modules: [randomModule('a', 2, 8, 8, 12, 1e20)] }
    const updates = [
      { id: 'p', samples: 2 ** 31 - 1, adapter: poison },
      { id: 'h', samples: 10, adapter: honest },
    ]
    const bounds = { weighting: 'samples' as const, maxWeight: 0.5, maxDeltaRatio: 0.1 }
    const a = boundRound(updates, parent, bounds)
    const b = boundRound([...updates].reverse(), parent, bounds)
    expect(a.updates.map((u) => u.id)).toEqual(['h', 'p'])
    expect(a.updates.map((u) => u.samples)).toEqual([0.5, 0.5])
    const clippedPoison = a.updates[1].adapter.modules[0]
    expect(deltaNorm(clippedPoison)).toBeLessThanOrEqual(0.1 * frobeniusNorm(w) * (1 + 1e-6))
    expect(Buffer.from(clippedPoison.loraB.buffer).equals(Buffer.from(b.updates[1].adapter.modules[0].loraB.buffer))).toBe(true)
    expect(a.report[1].clipped).toHaveLength(1)
    expect(a.report[0].clipped).toHaveLength(0)
  })

  it('equal weighting ignores declared samples', () => {
    const parent = new Map([['a', new Float32Array(64).fill(1)]])
    const ad = (s: number): AdapterSet => ({ modules: [randomModule('a', 1, 8, 8, s, 1e-3)] })
    const r = boundRound(
      [
        { id: 'x', samples: 1, adapter: ad(1) },
        { id: 'y', samples: 1000, adapter: ad(2) },
        { id: 'z', samples: 5, adapter: ad(3) },
      ],
      parent,
      { weighting: 'equal', maxWeight: 1, maxDeltaRatio: 1 },
    )
    expect(r.updates.map((u) => u.samples)).toEqual([1 / 3, 1 / 3, 1 / 3])
  })
})

describe('applyRound with bounds', () => {
  const shapes = [{ name: 'a', inFeatures: 8, outFeatures: 8 }]
  const genesis = genesisState(new Map([['a', new Float32Array(64).fill(0.5)]]), shapes)
  const bounds = { weighting: 'samples' as const, maxWeight: 0.5, maxDeltaRatio: 0.1 }

  it('moves the model by at most maxWeight x maxDeltaRatio x ||W||_F per module for a poisoned adapter', async () => {
    const poison: AdapterSet = { modules: [randomModule('a', 2, 8, 8, 12, 1e30)] }
    const honest: AdapterSet = { modules: [randomModule('a', 2, 8, 8, 13, 1e-3)] }
    const next = await applyRound(genesis, 'flora', shapes, [
      { id: 'p', samples: 2 ** 31 - 1, adapter: poison },
      { id: 'h', samples: 3, adapter: honest },
    ], { bounds })
    const w0 = genesis.weights.get('a') as Float32Array
    const w1 = next.weights.get('a') as Float32Array
    const delta = Float32Array.from(w1, (x, i) => x - w0[i])
    expect(w1.every(Number.isFinite)).toBe(true)
    // honest contribution is tiny; the poison's share is at most 0.5 x 0.1 x ||W||_F
    expect(frobeniusNorm(delta)).toBeLessThanOrEqual(0.5 * 0.1 * frobeniusNorm(w0) * 1.01 + 1e-3)
  })

  it('without bounds the same adapter destroys the model, and the non-finite state is refused', async () => {
    const poison: AdapterSet = { modules: [randomModule('a', 2, 8, 8, 12, 1e30)] }
    await expect(applyRound(genesis, 'flora', shapes, [{ id: 'p', samples: 1, adapter: poison }])).rejects.toBeInstanceOf(NonFiniteStateError)
  })
})
