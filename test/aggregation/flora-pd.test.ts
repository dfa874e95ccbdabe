import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  BUILTIN_STRATEGIES,
  UnsupportedTargetError,
  floraPdStrategy,
  floraStrategy,
  getStrategy,
  mergeIntoWeightsSync,
} from '../../src/aggregation/index.js'
import type { AdapterTarget, ClientUpdate, RoundAggregate } from '../../src/aggregation/types.js'
import type { LoraModule } from '../../src/lora/types.js'
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
  ulp32,
} from './helpers.js'

// in = 24 > sum of ranks 8 + 4 + 2 = 14, so a target above the stacked rank still fits;
// out = 5 makes v_proj's dW rank-deficient (rank <= 5) and forces basis completion early.
const MODULES: ModuleSpec[] = [
  { name: 'layers.0.self_attn.q_proj', out: 20, in: 24 },
  { name: 'layers.0.self_attn.v_proj', out: 5, in: 24 },
]

const heteroRound = fc.record({
  clients: fc.array(fc.record({ rank: fc.integer({ min: 1, max: 16 }), samples: fc.integer({ min: 1, max: 5000 }) }), {
    minLength: 1,
    maxLength: 5,
  }),
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

const target = (rank: number): AdapterTarget => ({ rank, alpha: 2 * rank, scaling: 2 })

function moduleOf(agg: RoundAggregate, t: AdapterTarget, name: string): LoraModule {
  const m = agg.nextAdapter(t)?.modules.find((x) => x.name === name)
  if (m === undefined) throw new Error(`no start adapter for ${name}`)
  return m
}

/** max |A A^T - I / 3| over all row pairs (float64 dot products of the float32 rows). */
function gramError(m: LoraModule): number {
  const { rank: r, inFeatures: n, loraA: a } = m
  let worst = 0
  for (let p = 0; p < r; p++) {
    for (let q = 0; q < r; q++) {
      let d = 0
      for (let j = 0; j < n; j++) d += a[p * n + j] * a[q * n + j]
      worst = Math.max(worst, Math.abs(d - (p === q ? 1 / 3 : 0)))
    }
  }
  return worst
}

/** ||dW (I - 3 A^T A)||_F^2: what of dW lies outside A's row space (3 A^T A is its projector). */
function outsideRowSpace(dw: Float64Array, out: number, m: LoraModule): number {
  const { rank: r, inFeatures: n, loraA: a } = m
  let s = 0
  for (let i = 0; i < out; i++) {
    const x = new Float64Array(r) // (dW A^T)[i, :]
    for (let t = 0; t < r; t++) for (let j = 0; j < n; j++) x[t] += dw[i * n + j] * a[t * n + j]
    for (let j = 0; j < n; j++) {
      let proj = 0
      for (let t = 0; t < r; t++) proj += x[t] * a[t * n + j]
      s += (dw[i * n + j] - 3 * proj) ** 2
    }
  }
  return s
}

/** Checks a start adapter of rank r against the round's dW (computed independently, float64). */
function checkStart(ups: readonly ClientUpdate[], agg: RoundAggregate, r: number): void {
  for (const spec of MODULES) {
    const m = moduleOf(agg, target(r), spec.name)
    expect([m.rank, m.inFeatures, m.outFeatures, m.alpha, m.scaling]).toEqual([r, spec.in, spec.out, 2 * r, 2])
    expect(m.loraB.every((x) => Object.is(x, 0))).toBe(true)
    expect(gramError(m)).toBeLessThan(1e-6)
    const dw = exactDelta(ups, spec.name)
    const sigma = singularValues(dw, spec.out, spec.in)
    const tail = sigma.slice(r).reduce((acc, x) => acc + x * x, 0) // Eckart-Young: the least any r rows can leave
    expect(Math.abs(outsideRowSpace(dw, spec.out, m) - tail)).toBeLessThan(1e-5 * frob(dw) ** 2)
  }
}

describe('flora-pd (FLoRA with principal-direction A init)', () => {
  it('is registered and declared like flora (exact, any ranks, same upload bytes)', () => {
    expect(getStrategy('flora-pd')).toBe(floraPdStrategy)
    expect(BUILTIN_STRATEGIES.map((s) => s.name).slice(0, 2)).toEqual(['flora', 'flora-pd'])
    expect(floraPdStrategy.exact).toBe(true)
    expect(floraPdStrategy.requiresEqualRanks).toBe(false)
    const shapes = [{ name: 'q', inFeatures: 2048, outFeatures: 2048 }, { name: 'v', inFeatures: 2048, outFeatures: 256 }]
    for (const [r, bpe] of [[16, undefined], [4, 2], [64, 4]] as const) {
      expect(floraPdStrategy.bytesPerClient(shapes, r, bpe)).toBe(floraStrategy.bytesPerClient(shapes, r, bpe))
    }
  })

  it("merges exactly FLoRA's terms (coefficient and factor bytes) and the same merged weights", () => {
    fc.assert(
      fc.property(heteroRound, (p) => {
        const ups = makeHetero(p)
        const a = floraStrategy.aggregate(ups)
        const b = floraPdStrategy.aggregate(shuffled(ups, rng(p.seed ^ 0x77)))
        if (b.strategy !== 'flora-pd' || b.global.size !== 0) return false
        if (a.clients.join() !== b.clients.join() || a.weights.some((w, k) => !Object.is(w, b.weights[k]))) return false
        if ([...a.merge.keys()].join() !== [...b.merge.keys()].join()) return false
        const next = rng(p.seed ^ 0x5eed)
        for (const spec of MODULES) {
          const ta = a.merge.get(spec.name) ?? []
          const tb = b.merge.get(spec.name) ?? []
          if (ta.length !== ups.length || tb.length !== ta.length) return false
          for (let k = 0; k < ta.length; k++) {
            if (!Object.is(ta[k].coef, tb[k].coef) || ta[k].rank !== tb[k].rank) return false
            if (!bytesEqual(ta[k].loraA, tb[k].loraA) || !bytesEqual(ta[k].loraB, tb[k].loraB)) return false
          }
          const shape = { outFeatures: spec.out, inFeatures: spec.in }
          const wa = randF32(next, spec.out * spec.in)
          const wb = wa.slice()
          mergeIntoWeightsSync(wa, shape, ta)
          mergeIntoWeightsSync(wb, shape, tb)
          if (!bytesEqual(wa, wb)) return false
        }
        return true
      }),
      { numRuns: 40 },
    )
  })

  it('starts with B = 0 and A rows = sqrt(1/3) x the top right singular vectors of dW (random rounds)', () => {
    fc.assert(
      fc.property(heteroRound, fc.integer({ min: 1, max: 24 }), (p, r) => {
        const ups = makeHetero(p)
        checkStart(ups, floraPdStrategy.aggregate(ups), r)
      }),
      { numRuns: 30 },
    )
  })

  it('handles heterogeneous ranks [8, 4, 2] with targets below, between and above the stacked rank', () => {
    const ups = randUpdates(rng(41), MODULES, [8, 4, 2], [300, 120, 75])
    const agg = floraPdStrategy.aggregate(ups)
    for (const r of [2, 8, 16, 24]) checkStart(ups, agg, r) // 16 > 14 = sum of ranks, 24 = in
    // Above rank(dW) the top directions come first, the completion after them (deterministic).
    const q = MODULES[0]
    const top = moduleOf(agg, target(14), q.name)
    const big = moduleOf(agg, target(16), q.name)
    expect(bytesEqual(big.loraA.subarray(0, 14 * q.in), top.loraA)).toBe(true)
    // The spread of dW is what the start puts first: the leading row carries the most of it.
    const dw = exactDelta(ups, q.name)
    const sigma = singularValues(dw, q.out, q.in)
    const first = moduleOf(agg, target(1), q.name)
    expect(Math.abs(frob(dw) ** 2 - outsideRowSpace(dw, q.out, first) - sigma[0] ** 2)).toBeLessThan(1e-5 * frob(dw) ** 2)
  })

  it('completes the basis where dW is rank-deficient (a single rank-1 client)', () => {
    const ups = randUpdates(rng(12), MODULES, [1], [1])
    const agg = floraPdStrategy.aggregate(ups)
    for (const r of [1, 3, 24]) checkStart(ups, agg, r)
  })

  it('is deterministic and does not depend on arrival order; every call hands out fresh arrays', () => {
    const ups = randUpdates(rng(21), MODULES, [8, 4, 2], [10, 30, 7])
    for (const r of [2, 8, 16]) {
      const a = floraPdStrategy.aggregate(ups).nextAdapter(target(r))
      const agg = floraPdStrategy.aggregate([ups[2], ups[0], ups[1]])
      const b = agg.nextAdapter(target(r))
      expect(a?.modules.map((m) => m.name)).toEqual(MODULES.map((m) => m.name))
      a?.modules.forEach((m, i) => {
        expect(bytesEqual(m.loraA, b?.modules[i].loraA ?? new Float32Array())).toBe(true)
        expect(bytesEqual(m.loraB, b?.modules[i].loraB ?? new Float32Array())).toBe(true)
      })
      b?.modules[0].loraA.fill(7) // a caller training in place must not touch the cached SVD
      b?.modules[0].loraB.fill(7)
      const c = agg.nextAdapter(target(r))
      expect(bytesEqual(c?.modules[0].loraA ?? new Float32Array(), a?.modules[0].loraA ?? new Float32Array([1]))).toBe(true)
      expect(c?.modules[0].loraB.every((x) => x === 0)).toBe(true)
    }
  })

  it('refuses targets it cannot serve with UnsupportedTargetError', () => {
    const agg = floraPdStrategy.aggregate(randUpdates(rng(5), MODULES, [8, 4, 2], [1, 2, 3]))
    expect(() => agg.nextAdapter(target(25))).toThrow(UnsupportedTargetError) // in = 24
    expect(() => agg.nextAdapter({ rank: 0, alpha: 1, scaling: 1 })).toThrow(UnsupportedTargetError)
    expect(() => agg.nextAdapter({ rank: 2.5, alpha: 1, scaling: 1 })).toThrow(UnsupportedTargetError)
    expect(() => agg.nextAdapter({ rank: 4, alpha: 8, scaling: 0 })).toThrow(UnsupportedTargetError)
    expect(agg.nextAdapter(target(24))?.modules).toHaveLength(2)
  })

  it('stays exact over two rounds: round 2 starts from the principal A with B = 0 and merges sum p_k s_k B_k A_k', () => {
    const ranks = [8, 4, 2]
    const samples = [300, 120, 75]
    const round1 = randUpdates(rng(77), MODULES, ranks, samples)
    const agg1 = floraPdStrategy.aggregate(round1)
    const next = rng(78)
    const round2: ClientUpdate[] = round1.map((u, k) => {
      const start = agg1.nextAdapter({ rank: ranks[k], alpha: 2 * ranks[k], scaling: 2 })
      if (start === undefined) throw new Error('flora-pd must hand out a start adapter')
      const modules = start.modules.map((m): LoraModule => {
        // The start adapter adds nothing: the client's model is exactly the merged W.
        expect(dense(m, m.scaling).every((x) => Object.is(x, 0))).toBe(true)
        // "Local training": B moves off zero, A moves a little from the principal rows.
        const dA = randF32(next, m.loraA.length, 0.05 / Math.sqrt(m.inFeatures))
        const loraA = m.loraA.map((x, i) => x + dA[i])
        const loraB = randF32(next, m.loraB.length, 0.1)
        return { ...m, loraA, loraB }
      })
      return { id: u.id, samples: u.samples, adapter: { modules } }
    })
    const agg2 = floraPdStrategy.aggregate(round2)
    const flora2 = floraStrategy.aggregate(round2)
    for (const spec of MODULES) {
      const shape = { outFeatures: spec.out, inFeatures: spec.in }
      const exact = exactDelta(round2, spec.name)
      const terms = agg2.merge.get(spec.name) ?? []
      const merged = new Float32Array(spec.out * spec.in)
      mergeIntoWeightsSync(merged, shape, terms)
      let dw = new Float64Array(exact.length)
      for (const t of terms) {
        const d = dense({ ...t, inFeatures: spec.in, outFeatures: spec.out }, t.coef)
        dw = dw.map((x, i) => x + d[i])
      }
      expect(diffFrob(dw, exact)).toBeLessThan(1e-13 * frob(exact))
      // W0 = 0: the merged weights are the float32 rounding of the exact update (one ulp at most)
      for (let i = 0; i < merged.length; i++) expect(Math.abs(merged[i] - exact[i])).toBeLessThanOrEqual(ulp32(exact[i]))
      const viaFlora = new Float32Array(spec.out * spec.in)
      mergeIntoWeightsSync(viaFlora, shape, flora2.merge.get(spec.name) ?? [])
      expect(bytesEqual(merged, viaFlora)).toBe(true)
    }
    // Round 2's aggregate again hands out principal starts for round 3.
    checkStart(round2, agg2, 4)
  })
})
