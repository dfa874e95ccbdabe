import { describe, expect, it } from 'vitest'
import { feditStrategy } from '../../src/aggregation/fedit.js'
import { ffaStrategy } from '../../src/aggregation/ffa.js'
import { floraStrategy } from '../../src/aggregation/flora.js'
import { zeroPaddingStrategy } from '../../src/aggregation/zero-padding.js'
import { createPrng } from '../../src/lora/prng.js'
import type { AdapterSet, ModuleShape } from '../../src/lora/types.js'
import { checkAggregation, lowRankDense, roundBytes, stat, summarizeScores } from '../../src/eval/metrics.js'
import { scaleAggregate } from '../../src/eval/simulate.js'

const SHAPES: ModuleShape[] = [
  { name: 'm.q_proj', inFeatures: 6, outFeatures: 5 },
  { name: 'm.v_proj', inFeatures: 6, outFeatures: 4 },
]

/** A trained-looking adapter: A and B both random. */
function randomAdapter(rank: number, seed: string, sharedA?: AdapterSet): AdapterSet {
  const p = createPrng(seed)
  return {
    modules: SHAPES.map((s, i) => {
      const loraA = sharedA?.modules[i].loraA.slice() ?? p.fork(`${s.name}/A`).fillUniform(new Float32Array(rank * s.inFeatures), -1, 1)
      const loraB = p.fork(`${s.name}/B`).fillUniform(new Float32Array(s.outFeatures * rank), -1, 1)
      return { name: s.name, rank, inFeatures: s.inFeatures, outFeatures: s.outFeatures, alpha: 2 * rank, scaling: 2, loraA, loraB }
    }),
  }
}

const updates = (adapters: AdapterSet[], samples: number[]) => adapters.map((adapter, k) => ({ id: `c${k}`, samples: samples[k], adapter }))

describe('lowRankDense', () => {
  it('is sum_t coef_t B_t A_t', () => {
    const shape = { name: 'x', inFeatures: 2, outFeatures: 2 }
    // B = [[1],[2]], A = [[3, 4]]  ->  B A = [[3, 4], [6, 8]]
    const d = lowRankDense(shape, [
      { coef: 0.5, rank: 1, loraA: Float32Array.of(3, 4), loraB: Float32Array.of(1, 2) },
      { coef: 1, rank: 1, loraA: Float32Array.of(1, 0), loraB: Float32Array.of(0, 1) },
    ])
    expect([...d]).toEqual([1.5, 2, 4, 4])
  })
})

describe('checkAggregation', () => {
  const samples = [30, 50, 20]
  it('gives FLoRA a zero error for any ranks, and a zero start error (fresh LoRA)', () => {
    const adapters = [randomAdapter(4, 'a'), randomAdapter(2, 'b'), randomAdapter(1, 'c')]
    const agg = floraStrategy.aggregate(updates(adapters, samples))
    const c = checkAggregation(SHAPES, adapters, samples, agg.merge, agg.global, [undefined, undefined, undefined], 1)
    expect(c.aggError).toBeLessThan(1e-12)
    expect(c.startError).toBe(0)
  })

  it('measures the cross terms of FedIT, and none for FFA with a shared A', () => {
    const adapters = [randomAdapter(3, 'a'), randomAdapter(3, 'b'), randomAdapter(3, 'c')]
    const fedit = feditStrategy.aggregate(updates(adapters, samples))
    const next = adapters.map(() => fedit.nextAdapter({ rank: 3, alpha: 6, scaling: 2 }))
    const c = checkAggregation(SHAPES, adapters, samples, fedit.merge, fedit.global, next, 1)
    expect(c.aggError).toBeGreaterThan(0.05)
    expect(c.startError).toBeLessThan(1e-7) // clients restart exactly from the global adapter
    const shared = [randomAdapter(3, 'a')]
    shared.push(randomAdapter(3, 'b', shared[0]), randomAdapter(3, 'c', shared[0]))
    const ffa = ffaStrategy.aggregate(updates(shared, samples))
    const f = checkAggregation(SHAPES, shared, samples, ffa.merge, ffa.global, [undefined, undefined, undefined], 1)
    expect(f.aggError).toBeLessThan(1e-6) // only float32 rounding of B
  })

  it('reports the zero-padding truncation as start error for low-rank clients', () => {
    const adapters = [randomAdapter(4, 'a'), randomAdapter(1, 'b')]
    const agg = zeroPaddingStrategy.aggregate(updates(adapters, [1, 1]))
    const next = [agg.nextAdapter({ rank: 4, alpha: 8, scaling: 2 }), agg.nextAdapter({ rank: 1, alpha: 2, scaling: 2 })]
    const c = checkAggregation(SHAPES, adapters, [1, 1], agg.merge, agg.global, next, 1)
    expect(c.aggError).toBeGreaterThan(0.01)
    expect(c.startError).toBeGreaterThan(0.01)
  })

  it('compares a scaled aggregate with the scaled ideal', () => {
    const adapters = [randomAdapter(2, 'a'), randomAdapter(3, 'b')]
    const agg = scaleAggregate(floraStrategy.aggregate(updates(adapters, [1, 3])), 0.5)
    expect(checkAggregation(SHAPES, adapters, [1, 3], agg.merge, agg.global, [undefined, undefined], 0.5).aggError).toBeLessThan(1e-12)
    expect(checkAggregation(SHAPES, adapters, [1, 3], agg.merge, agg.global, [undefined, undefined], 1).aggError).toBeCloseTo(0.5, 10)
  })

  it('scales next adapters by x', () => {
    const adapters = [randomAdapter(2, 'a'), randomAdapter(2, 'b')]
    const raw = feditStrategy.aggregate(updates(adapters, [1, 1]))
    const scaled = scaleAggregate(raw, 2)
    const t = { rank: 2, alpha: 4, scaling: 2 }
    const a = raw.nextAdapter(t) as AdapterSet
    const b = scaled.nextAdapter(t) as AdapterSet
    expect([...b.modules[0].loraB]).toEqual([...a.modules[0].loraB].map((v) => Math.fround(v * 2)))
    expect(b.modules[0].loraA).toEqual(a.modules[0].loraA)
  })
})

describe('roundBytes', () => {
  it('counts f32 factors: upload r(in+out), p2p inbound = the others, server per strategy', () => {
    const ranks = [4, 2, 2]
    // per rank unit: (6+5) + (6+4) = 21 floats = 84 bytes
    const flora = roundBytes(floraStrategy, SHAPES, ranks)
    expect(flora.up).toBeCloseTo((84 * 8) / 3)
    expect(flora.downP2P).toBeCloseTo((84 * (4 + 6 + 6)) / 3) // client 0 gets 2+2, clients 1 and 2 get 4+2
    expect(flora.downServer).toBe(84 * 8)
    const zp = roundBytes(zeroPaddingStrategy, SHAPES, ranks)
    expect(zp.downServer).toBe(84 * 4)
    const ffa = roundBytes(ffaStrategy, SHAPES, [2, 2])
    expect(ffa.up).toBe(2 * (5 + 4) * 4) // B only
  })
})

describe('summaries', () => {
  it('weights losses by tokens, pooled and per client', () => {
    const s = summarizeScores(
      { lossSum: Float64Array.of(2, 6, 3), tokens: Float64Array.of(1, 3, 1), correct: Float64Array.of(1, 1, 0) },
      [[0, 1], [2]],
    )
    expect(s.evalLoss.pooled).toBeCloseTo(11 / 5)
    expect(s.evalLoss.perClient).toEqual([2, 3])
    expect(s.tokenAccuracy.perClient).toEqual([0.5, 0])
  })

  it('stat: mean and sample std, NaN skipped', () => {
    expect(stat([1, 2, 3])).toEqual({ mean: 2, std: 1, n: 3 })
    expect(stat([5])).toEqual({ mean: 5, std: 0, n: 1 })
    expect(stat([NaN, 4]).n).toBe(1)
  })
})
