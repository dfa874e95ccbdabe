import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  BUILTIN_STRATEGIES,
  DuplicateStrategyError,
  IncompatibleUpdatesError,
  InvalidRoundError,
  ShapeMismatchError,
  UnequalRanksError,
  UnknownStrategyError,
  UnsupportedTargetError,
  denseDelta,
  feditStrategy,
  ffaStrategy,
  flexloraStrategy,
  floraStrategy,
  getStrategy,
  listStrategies,
  mergeIntoWeightsSync,
  registerStrategy,
  zeroPaddingStrategy,
} from '../../src/aggregation/index.js'
import type { ClientUpdate, ModuleTerms, RoundAggregate } from '../../src/aggregation/types.js'
import {
  type ModuleSpec,
  bytesEqual,
  dense,
  diffFrob,
  exactDelta,
  frob,
  randF32,
  randUpdates,
  rng,
  shuffled,
  singularValues,
} from './helpers.js'

const MODULES: ModuleSpec[] = [
  { name: 'layers.0.self_attn.q_proj', out: 7, in: 13 },
  { name: 'layers.0.self_attn.v_proj', out: 5, in: 13 },
]

/** Heterogeneous rounds: 1-6 clients, ranks 1..64, uneven sample counts. */
const heteroRound = fc.record({
  clients: fc.array(fc.record({ rank: fc.integer({ min: 1, max: 64 }), samples: fc.integer({ min: 1, max: 5000 }) }), {
    minLength: 1,
    maxLength: 6,
  }),
  seed: fc.integer(),
})

/** Homogeneous rounds (equal rank and alpha) for the factor-averaging strategies. */
const homoRound = fc.record({
  rank: fc.integer({ min: 1, max: 16 }),
  samples: fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 6 }),
  seed: fc.integer(),
})

function makeHetero(p: { clients: { rank: number; samples: number }[]; seed: number }): ClientUpdate[] {
  return randUpdates(
    rng(p.seed),
    MODULES,
    p.clients.map((c) => c.rank),
    p.clients.map((c) => c.samples),
  )
}

function makeHomo(p: { rank: number; samples: number[]; seed: number }): ClientUpdate[] {
  return randUpdates(
    rng(p.seed),
    MODULES,
    p.samples.map(() => p.rank),
    p.samples,
  )
}

/** Dense float64 sum of every term of an aggregate (merge + global) for one module. */
function aggregateDense(agg: RoundAggregate, spec: ModuleSpec): Float64Array {
  const shape = { outFeatures: spec.out, inFeatures: spec.in }
  const d = denseDelta(shape, agg.merge.get(spec.name) ?? [])
  const g = denseDelta(shape, agg.global.get(spec.name) ?? [])
  for (let i = 0; i < d.length; i++) d[i] += g[i]
  return d
}

function sameTerms(a: ModuleTerms, b: ModuleTerms): boolean {
  if (a.size !== b.size) return false
  for (const [name, ta] of a) {
    const tb = b.get(name)
    if (tb === undefined || tb.length !== ta.length) return false
    for (let k = 0; k < ta.length; k++) {
      if (!Object.is(ta[k].coef, tb[k].coef) || ta[k].rank !== tb[k].rank) return false
      if (!bytesEqual(ta[k].loraA, tb[k].loraA) || !bytesEqual(ta[k].loraB, tb[k].loraB)) return false
    }
  }
  return true
}

describe('registry', () => {
  it('importing the index registers the six strategies', () => {
    expect(listStrategies()).toEqual(['fedit', 'ffa', 'flexlora', 'flora', 'flora-pd', 'zero-padding'])
    for (const s of BUILTIN_STRATEGIES) expect(getStrategy(s.name)).toBe(s)
  })
  it('refuses unknown names and duplicate registrations with named errors', () => {
    expect(() => getStrategy('fedavg-typo')).toThrow(UnknownStrategyError)
    expect(() => registerStrategy(floraStrategy)).toThrow(DuplicateStrategyError)
    expect(() => registerStrategy(floraStrategy, { replace: true })).not.toThrow()
  })
  it('states exactness, rank requirements and upload bytes', () => {
    const shapes = [{ name: 'q', inFeatures: 2048, outFeatures: 2048 }, { name: 'v', inFeatures: 2048, outFeatures: 256 }]
    expect(floraStrategy.exact && flexloraStrategy.exact && ffaStrategy.exact).toBe(true)
    expect(feditStrategy.exact || zeroPaddingStrategy.exact).toBe(false)
    expect(BUILTIN_STRATEGIES.filter((s) => s.requiresEqualRanks).map((s) => s.name)).toEqual(['fedit', 'ffa'])
    expect(floraStrategy.bytesPerClient(shapes, 16)).toBe(16 * (4096 + 2304) * 4)
    expect(ffaStrategy.bytesPerClient(shapes, 16)).toBe(16 * (2048 + 256) * 4)
    expect(floraStrategy.bytesPerClient(shapes, 16, 2)).toBe(16 * (4096 + 2304) * 2)
  })
})

describe('round validation (all strategies)', () => {
  const next = rng(3)
  const ups = randUpdates(next, MODULES, [4, 4], [10, 20])
  it.each(BUILTIN_STRATEGIES.map((s) => [s.name, s] as const))('%s refuses malformed rounds', (_, s) => {
    expect(() => s.aggregate([])).toThrow(InvalidRoundError)
    expect(() => s.aggregate([ups[0], { ...ups[1], id: ups[0].id }])).toThrow(InvalidRoundError)
    expect(() => s.aggregate([ups[0], { ...ups[1], samples: 0 }])).toThrow(InvalidRoundError)
    expect(() => s.aggregate([ups[0], { ...ups[1], adapter: { modules: ups[1].adapter.modules.slice(0, 1) } }])).toThrow(
      IncompatibleUpdatesError,
    )
    const bad = { ...ups[1].adapter.modules[0], loraA: new Float32Array(3) }
    expect(() => s.aggregate([ups[0], { ...ups[1], adapter: { modules: [bad, ups[1].adapter.modules[1]] } }])).toThrow(ShapeMismatchError)
  })
})

describe('flora (stacking)', () => {
  it('merge terms reproduce sum_k p_k s_k B_k A_k (independent float64) to float64 rounding, for any ranks', () => {
    fc.assert(
      fc.property(heteroRound, (p) => {
        const ups = makeHetero(p)
        const agg = floraStrategy.aggregate(ups)
        if (agg.global.size !== 0 || agg.nextAdapter({ rank: 4, alpha: 8, scaling: 2 }) !== undefined) return false
        for (const spec of MODULES) {
          const exact = exactDelta(ups, spec.name)
          const got = aggregateDense(agg, spec)
          if (diffFrob(got, exact) > 1e-13 * frob(exact)) return false
        }
        return Math.abs(agg.weights.reduce((a, b) => a + b, 0) - 1) < 1e-15
      }),
      { numRuns: 60 },
    )
  })

  it('merged weights equal fl32(W + exact) within one float32 ulp-ish bound', () => {
    fc.assert(
      fc.property(heteroRound, (p) => {
        const ups = makeHetero(p)
        const agg = floraStrategy.aggregate(ups)
        const next = rng(p.seed ^ 0x5eed)
        for (const spec of MODULES) {
          const shape = { outFeatures: spec.out, inFeatures: spec.in }
          const w = randF32(next, spec.out * spec.in)
          const merged = w.slice()
          mergeIntoWeightsSync(merged, shape, agg.merge.get(spec.name) ?? [])
          const exact = exactDelta(ups, spec.name)
          for (let i = 0; i < w.length; i++) {
            const ref = Math.fround(w[i] + exact[i])
            // |W| <= 1 and |dW| << 1 here, so 1 ulp at 1 (2^-23) plus float64 slack bounds it
            if (Math.abs(merged[i] - ref) > 2 ** -23 + 1e-12) return false
          }
        }
        return true
      }),
      { numRuns: 40 },
    )
  })

  it('does not depend on arrival order (identical terms and identical merged bytes)', () => {
    fc.assert(
      fc.property(heteroRound, fc.integer(), (p, shuffleSeed) => {
        const ups = makeHetero(p)
        const a = floraStrategy.aggregate(ups)
        const b = floraStrategy.aggregate(shuffled(ups, rng(shuffleSeed)))
        if (!sameTerms(a.merge, b.merge) || a.clients.join() !== b.clients.join()) return false
        const spec = MODULES[0]
        const shape = { outFeatures: spec.out, inFeatures: spec.in }
        const wa = new Float32Array(spec.out * spec.in).fill(0.25)
        const wb = wa.slice()
        mergeIntoWeightsSync(wa, shape, a.merge.get(spec.name) ?? [])
        mergeIntoWeightsSync(wb, shape, b.merge.get(spec.name) ?? [])
        return bytesEqual(wa, wb)
      }),
      { numRuns: 40 },
    )
  })
})

describe('fedit (factor averaging)', () => {
  it("its error equals s * sum_k p_k (B_k - B)(A_k - A) with equal scaling", () => {
    fc.assert(
      fc.property(homoRound, (p) => {
        const ups = makeHomo(p)
        const agg = feditStrategy.aggregate(ups)
        const total = p.samples.reduce((a, b) => a + b, 0)
        for (const spec of MODULES) {
          const [t] = agg.global.get(spec.name) ?? []
          const s = t.coef
          const exact = exactDelta(ups, spec.name)
          const got = aggregateDense(agg, spec)
          const err = exact.map((x, i) => x - got[i])
          // predicted: s sum_k p_k (B_k - B)(A_k - A), with B, A the returned global factors
          const predicted = new Float64Array(err.length)
          for (const u of ups) {
            const m = u.adapter.modules.find((x) => x.name === spec.name)
            if (m === undefined) return false
            // differences formed in float64 (exact for float32 inputs of similar size)
            const d = new Float64Array(err.length)
            for (let i = 0; i < spec.out; i++) {
              for (let r = 0; r < m.rank; r++) {
                const db = m.loraB[i * m.rank + r] - t.loraB[i * m.rank + r]
                for (let j = 0; j < spec.in; j++) d[i * spec.in + j] += db * (m.loraA[r * spec.in + j] - t.loraA[r * spec.in + j])
              }
            }
            const pk = u.samples / total
            for (let i = 0; i < d.length; i++) predicted[i] += s * pk * d[i]
          }
          // equal up to the float32 rounding of the global factors (B = sum p B_k + O(2^-24))
          const scale = frob(exact) + frob(got)
          if (diffFrob(err, predicted) > 1e-6 * scale + 1e-12) return false
        }
        return true
      }),
      { numRuns: 40 },
    )
  })

  it('global factors are the weighted means, and clients warm-start from them', () => {
    const ups = makeHomo({ rank: 3, samples: [1, 3], seed: 5 })
    const agg = feditStrategy.aggregate(ups)
    const [t] = agg.global.get(MODULES[0].name) ?? []
    const [m0, m1] = ups.map((u) => u.adapter.modules[0])
    expect(t.loraA[4]).toBe(Math.fround(0.25 * m0.loraA[4] + 0.75 * m1.loraA[4]))
    expect(t.loraB[2]).toBe(Math.fround(0.25 * m0.loraB[2] + 0.75 * m1.loraB[2]))
    const next = agg.nextAdapter({ rank: 3, alpha: 6, scaling: 2 })
    expect(bytesEqual(next?.modules[0].loraA ?? new Float32Array(), t.loraA)).toBe(true)
    expect(bytesEqual(next?.modules[0].loraB ?? new Float32Array(), t.loraB)).toBe(true)
    expect(() => agg.nextAdapter({ rank: 4, alpha: 8, scaling: 2 })).toThrow(UnsupportedTargetError)
  })

  it('refuses unequal ranks and unequal scalings with named errors', () => {
    const next = rng(9)
    expect(() => feditStrategy.aggregate(randUpdates(next, MODULES, [8, 4], [1, 1]))).toThrow(UnequalRanksError)
    expect(() => feditStrategy.aggregate(randUpdates(next, MODULES, [8, 4], [1, 1]))).toThrow(/equal ranks.*\[4, 8\]|\[8, 4\]/)
    const ups = randUpdates(next, MODULES, [4, 4], [1, 1], () => 8)
    const other = randUpdates(next, MODULES, [4], [1], () => 16)[0]
    expect(() => feditStrategy.aggregate([ups[0], { ...other, id: 'z' }])).toThrow(IncompatibleUpdatesError)
  })
})

describe('zero-padding (HetLoRA-style)', () => {
  it('pads, averages with scaling folded into B, and truncates per client', () => {
    fc.assert(
      fc.property(heteroRound, (p) => {
        const ups = makeHetero(p)
        const agg = zeroPaddingStrategy.aggregate(ups)
        const total = ups.reduce((a, u) => a + u.samples, 0)
        for (const spec of MODULES) {
          const [t] = agg.global.get(spec.name) ?? []
          const rMax = Math.max(...p.clients.map((c) => c.rank))
          if (t.rank !== rMax || t.coef !== 1) return false
          // check one entry of A and B against the formula
          const row = rMax - 1
          let a = 0
          let b = 0
          for (const u of [...ups].sort((x, y) => (x.id < y.id ? -1 : 1))) {
            const m = u.adapter.modules.find((x) => x.name === spec.name)
            if (m === undefined) return false
            if (m.rank > row) {
              a += (u.samples / total) * m.loraA[row * spec.in]
              b += (u.samples / total) * m.scaling * m.loraB[row]
            }
          }
          if (Math.abs(t.loraA[row * spec.in] - a) > 1e-6 * Math.abs(a) + 1e-30) return false
          if (Math.abs(t.loraB[row] - b) > 1e-6 * Math.abs(b) + 1e-30) return false
        }
        const r = Math.min(...p.clients.map((c) => c.rank))
        const mine = agg.nextAdapter({ rank: r, alpha: 2 * r, scaling: 2 })
        return mine?.modules.every((m) => m.rank === r && m.loraA.length === r * m.inFeatures && m.loraB.length === m.outFeatures * r) === true
      }),
      { numRuns: 40 },
    )
  })

  it('equals FedIT when ranks and scalings are equal', () => {
    fc.assert(
      fc.property(homoRound, (p) => {
        const ups = makeHomo(p)
        const z = zeroPaddingStrategy.aggregate(ups)
        const f = feditStrategy.aggregate(ups)
        for (const spec of MODULES) {
          const dz = aggregateDense(z, spec)
          const df = aggregateDense(f, spec)
          if (diffFrob(dz, df) > 1e-6 * frob(df) + 1e-30) return false
        }
        return true
      }),
      { numRuns: 30 },
    )
  })

  it('refuses a target rank above the largest rank of the round', () => {
    const agg = zeroPaddingStrategy.aggregate(randUpdates(rng(4), MODULES, [4, 2], [1, 1]))
    expect(() => agg.nextAdapter({ rank: 5, alpha: 10, scaling: 2 })).toThrow(UnsupportedTargetError)
  })
})

describe('flexlora (SVD redistribution)', () => {
  it('global terms are the exact stacked sum; client factors are the best rank-r approximation (Eckart-Young)', () => {
    fc.assert(
      fc.property(heteroRound, fc.integer({ min: 1, max: 5 }), (p, r) => {
        const ups = makeHetero(p)
        const agg = flexloraStrategy.aggregate(ups)
        const scaling = 2
        const mine = agg.nextAdapter({ rank: r, alpha: 2 * r, scaling })
        for (const spec of MODULES) {
          const exact = exactDelta(ups, spec.name)
          const norm = frob(exact)
          if (diffFrob(aggregateDense(agg, spec), exact) > 1e-13 * norm) return false
          // independent spectrum: eigenvalues of the Gram matrix by two-sided Jacobi
          const sigma = singularValues(exact, spec.out, spec.in)
          const svd = agg.svd(spec.name)
          for (let i = 0; i < Math.min(r, svd.s.length); i++) {
            if (Math.abs(svd.s[i] - sigma[i]) > 1e-6 * sigma[0] + 1e-300) return false
          }
          const eckartYoung = Math.sqrt(sigma.slice(r).reduce((a, x) => a + x * x, 0))
          const m = mine?.modules.find((x) => x.name === spec.name)
          if (m === undefined || m.rank !== r) return false
          const approx = dense(m, scaling)
          const err = diffFrob(exact, approx)
          if (Math.abs(err - eckartYoung) > 1e-5 * norm + 1e-300) return false
        }
        return true
      }),
      { numRuns: 40 },
    )
  })

  it('hands out orthonormal A rows even where dW is rank-deficient (no dead components)', () => {
    const ups = randUpdates(rng(12), MODULES, [1], [1])
    const agg = flexloraStrategy.aggregate(ups)
    const m = agg.nextAdapter({ rank: 4, alpha: 8, scaling: 2 })?.modules[0]
    expect(m).toBeDefined()
    if (m === undefined) return
    for (let a = 0; a < 4; a++) {
      for (let b = 0; b < 4; b++) {
        let d = 0
        for (let j = 0; j < m.inFeatures; j++) d += m.loraA[a * m.inFeatures + j] * m.loraA[b * m.inFeatures + j]
        expect(Math.abs(d - (a === b ? 1 : 0))).toBeLessThan(1e-6)
      }
    }
    expect(() => agg.nextAdapter({ rank: 14, alpha: 28, scaling: 2 })).toThrow(UnsupportedTargetError) // in = 13 < 14
  })

  it('is deterministic and order independent (same SVD bits)', () => {
    const ups = randUpdates(rng(21), MODULES, [8, 3, 5], [10, 30, 7])
    const a = flexloraStrategy.aggregate(ups).nextAdapter({ rank: 4, alpha: 8, scaling: 2 })
    const b = flexloraStrategy.aggregate([ups[2], ups[0], ups[1]]).nextAdapter({ rank: 4, alpha: 8, scaling: 2 })
    a?.modules.forEach((m, i) => {
      expect(bytesEqual(m.loraA, b?.modules[i].loraA ?? new Float32Array())).toBe(true)
      expect(bytesEqual(m.loraB, b?.modules[i].loraB ?? new Float32Array())).toBe(true)
    })
  })
})

describe('ffa (frozen shared A)', () => {
  function ffaRound(seed: number, samples: number[], rank: number): ClientUpdate[] {
    const ups = randUpdates(rng(seed), MODULES, samples.map(() => rank), samples)
    const a0 = ups[0].adapter.modules.map((m) => m.loraA)
    return ups.map((u) => ({ ...u, adapter: { modules: u.adapter.modules.map((m, i) => ({ ...m, loraA: a0[i].slice() })) } }))
  }

  it('is exact: s (sum p_k B_k) A0 equals sum p_k s B_k A0 up to float32 rounding of B', () => {
    fc.assert(
      fc.property(homoRound, (p) => {
        const ups = ffaRound(p.seed, p.samples, p.rank)
        const agg = ffaStrategy.aggregate(ups)
        for (const spec of MODULES) {
          const exact = exactDelta(ups, spec.name)
          if (diffFrob(aggregateDense(agg, spec), exact) > 1e-6 * frob(exact) + 1e-30) return false
        }
        return true
      }),
      { numRuns: 30 },
    )
  })

  it('refuses unequal ranks and different A matrices', () => {
    expect(() => ffaStrategy.aggregate(randUpdates(rng(1), MODULES, [2, 4], [1, 1]))).toThrow(UnequalRanksError)
    expect(() => ffaStrategy.aggregate(randUpdates(rng(1), MODULES, [4, 4], [1, 1]))).toThrow(IncompatibleUpdatesError)
  })
})
