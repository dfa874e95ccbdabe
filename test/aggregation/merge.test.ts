import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MergePoolError, ShapeMismatchError } from '../../src/aggregation/errors.js'
import {
  MergePool,
  closeDefaultMergePools,
  denseDelta,
  mergeFlops,
  mergeIntoWeights,
  mergeIntoWeightsSync,
  wasmSimdAvailable,
} from '../../src/aggregation/merge.js'
import type { LowRankTerm, MatrixShape } from '../../src/aggregation/types.js'
import { absSum, bytesEqual, randF32, randTerms, referenceMerge, rng, ulp32 } from './helpers.js'

/** Random heterogeneous merge problem: odd shapes, 1-4 terms of rank 1..64. */
const problem = fc.record({
  out: fc.integer({ min: 1, max: 19 }),
  in: fc.integer({ min: 1, max: 23 }),
  ranks: fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 4 }),
  seed: fc.integer(),
})

function build(p: { out: number; in: number; ranks: number[]; seed: number }): { shape: MatrixShape; w: Float32Array; terms: LowRankTerm[] } {
  const next = rng(p.seed)
  const shape = { outFeatures: p.out, inFeatures: p.in }
  return { shape, w: randF32(next, p.out * p.in), terms: randTerms(next, shape, p.ranks) }
}

describe('merge kernel: the definition', () => {
  it('runs the WebAssembly SIMD kernel on this host', () => {
    expect(wasmSimdAvailable()).toBe(true)
  })

  it('equals an independent scalar implementation of the definition, bit for bit (wasm and js backends)', () => {
    fc.assert(
      fc.property(problem, (p) => {
        const { shape, w, terms } = build(p)
        const expected = referenceMerge(w, shape, terms)
        const wasm = w.slice()
        mergeIntoWeightsSync(wasm, shape, terms, { backend: 'wasm' })
        const js = w.slice()
        mergeIntoWeightsSync(js, shape, terms, { backend: 'js' })
        return bytesEqual(wasm, expected) && bytesEqual(js, expected)
      }),
      { numRuns: 60 },
    )
  })

  it('follows the float64 order exactly: cancellation-heavy inputs expose any other order or folding', () => {
    // [big, small..., -big]: the big terms cancel exactly in real arithmetic, but in float64
    // they swallow low bits of the small terms in between, so the float32 result depends
    // on the summation order and on where c is folded. Only the defined order matches.
    let orderSensitive = 0
    let foldSensitive = 0
    fc.assert(
      fc.property(problem, fc.integer({ min: 36, max: 48 }), (p, e) => {
        const { shape, w, terms } = build(p)
        const next = rng(p.seed ^ 0x9e3779b9)
        const [big] = randTerms(next, shape, [1 + (Math.abs(p.seed) % 8)])
        const bigTerm = { ...big, coef: big.coef * 2 ** e }
        const seq = [bigTerm, ...terms, { ...bigTerm, coef: -bigTerm.coef }]
        const expected = referenceMerge(w, shape, seq)
        const wasm = w.slice()
        mergeIntoWeightsSync(wasm, shape, seq, { backend: 'wasm' })
        const js = w.slice()
        mergeIntoWeightsSync(js, shape, seq, { backend: 'js' })
        // the same terms in another order, and c folded into A instead of B, must differ somewhere
        const reordered = referenceMerge(w, shape, [bigTerm, { ...bigTerm, coef: -bigTerm.coef }, ...terms])
        const foldedIntoA = referenceMerge(w, shape, seq, 'A')
        if (!bytesEqual(reordered, expected)) orderSensitive++
        if (!bytesEqual(foldedIntoA, expected)) foldSensitive++
        return bytesEqual(wasm, expected) && bytesEqual(js, expected)
      }),
      { numRuns: 60 },
    )
    // the check has teeth: most cases would catch a reordering or the other folding
    expect(orderSensitive).toBeGreaterThan(50)
    expect(foldSensitive).toBeGreaterThan(30)
  })

  it('is within the stated bound of the dense float64 reference: |W\' - fl32(W + d)| <= ulp32 + (2R + K + 4) u (|W| + S)', () => {
    const u = 2 ** -53
    fc.assert(
      fc.property(problem, (p) => {
        const { shape, w, terms } = build(p)
        const merged = w.slice()
        mergeIntoWeightsSync(merged, shape, terms)
        const d = denseDelta(shape, terms)
        const s = absSum(shape, terms)
        const R = terms.reduce((a, t) => a + t.rank, 0)
        for (let x = 0; x < merged.length; x++) {
          const ref = Math.fround(w[x] + d[x])
          const tol = ulp32(Math.max(Math.abs(merged[x]), Math.abs(ref))) + (2 * R + terms.length + 4) * u * (Math.abs(w[x]) + s[x])
          if (!(Math.abs(merged[x] - ref) <= tol)) return false
        }
        return true
      }),
      { numRuns: 60 },
    )
  })

  it('matches a hand-computed example and counts flops as 2 * out * in * R', () => {
    const shape = { outFeatures: 2, inFeatures: 2 }
    // B = [[1], [2]], A = [[3, 4]], coef 0.5  =>  dW = 0.5 * [[3, 4], [6, 8]]
    const terms: LowRankTerm[] = [{ coef: 0.5, rank: 1, loraA: Float32Array.of(3, 4), loraB: Float32Array.of(1, 2) }]
    const w = Float32Array.of(1, 1, 1, 1)
    mergeIntoWeightsSync(w, shape, terms)
    expect([...w]).toEqual([2.5, 3, 4, 5])
    expect([...denseDelta(shape, terms)]).toEqual([1.5, 2, 3, 4])
    expect(mergeFlops(shape, terms)).toBe(8)
  })

  it('leaves W untouched (even -0) when there are no terms', () => {
    const w = Float32Array.of(-0, 1.5)
    mergeIntoWeightsSync(w, { outFeatures: 1, inFeatures: 2 }, [])
    expect(Object.is(w[0], -0)).toBe(true)
  })

  it('rejects tensors that do not fit the shape with ShapeMismatchError', () => {
    const shape = { outFeatures: 3, inFeatures: 4 }
    const ok = { coef: 1, rank: 2, loraA: new Float32Array(8), loraB: new Float32Array(6) }
    expect(() => mergeIntoWeightsSync(new Float32Array(11), shape, [ok])).toThrow(ShapeMismatchError)
    expect(() => mergeIntoWeightsSync(new Float32Array(12), shape, [{ ...ok, loraA: new Float32Array(9) }])).toThrow(ShapeMismatchError)
    expect(() => mergeIntoWeightsSync(new Float32Array(12), shape, [{ ...ok, loraB: new Float32Array(5) }])).toThrow(ShapeMismatchError)
    expect(() => mergeIntoWeightsSync(new Float32Array(12), shape, [{ ...ok, rank: 0 }])).toThrow(ShapeMismatchError)
    expect(() => mergeIntoWeightsSync(new Float32Array(12), shape, [{ ...ok, coef: Number.NaN }])).toThrow(ShapeMismatchError)
  })
})

describe('merge kernel: worker threads', () => {
  const pools = new Map<number, MergePool>()
  beforeAll(() => {
    for (const n of [1, 2, 4]) pools.set(n, new MergePool({ workers: n }))
  })
  afterAll(async () => {
    await Promise.all([...pools.values()].map((p) => p.close()))
    await closeDefaultMergePools()
  })

  it('gives bit-identical results with 1, 2 and 4 workers and the sync kernel', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          out: fc.integer({ min: 1, max: 140 }),
          in: fc.integer({ min: 1, max: 70 }),
          ranks: fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 5 }),
          seed: fc.integer(),
        }),
        fc.boolean(),
        async (p, cancel) => {
          const built = build(p)
          const { shape, w } = built
          // optionally wrap in [big, ..., -big] so float64 order differences would show (see above)
          const big = { ...randTerms(rng(p.seed + 1), shape, [3])[0], coef: 2 ** 40 }
          const terms = cancel ? [big, ...built.terms, { ...big, coef: -big.coef }] : built.terms
          const sync = w.slice()
          mergeIntoWeightsSync(sync, shape, terms)
          for (const [, pool] of pools) {
            const got = w.slice()
            await pool.merge(got, shape, terms)
            if (!bytesEqual(got, sync)) return false
          }
          const js = w.slice()
          await pools.get(2)?.merge(js, shape, terms, 'js')
          return bytesEqual(js, sync)
        },
      ),
      { numRuns: 25 },
    )
  })

  it('updates a SharedArrayBuffer-backed W in place, and queues concurrent merges', async () => {
    const next = rng(7)
    const shape = { outFeatures: 67, inFeatures: 45 }
    const t1 = randTerms(next, shape, [16, 3])
    const t2 = randTerms(next, shape, [5])
    const w0 = randF32(next, 67 * 45)
    const shared = new Float32Array(new SharedArrayBuffer(w0.byteLength))
    shared.set(w0)
    const plain = w0.slice()
    const pool = pools.get(2) as MergePool
    await Promise.all([pool.merge(shared, shape, t1), pool.merge(plain, shape, t1)])
    await Promise.all([pool.merge(shared, shape, t2), pool.merge(plain, shape, t2)])
    const expected = w0.slice()
    mergeIntoWeightsSync(expected, shape, t1)
    mergeIntoWeightsSync(expected, shape, t2)
    expect(bytesEqual(shared, expected)).toBe(true)
    expect(bytesEqual(plain, expected)).toBe(true)
  })

  it('mergeIntoWeights routes workers: 0 to the calling thread and n to a shared default pool', async () => {
    const next = rng(11)
    const shape = { outFeatures: 13, inFeatures: 7 }
    const terms = randTerms(next, shape, [9, 2])
    const w0 = randF32(next, 91)
    const a = w0.slice()
    const b = w0.slice()
    await mergeIntoWeights(a, shape, terms, { workers: 0 })
    await mergeIntoWeights(b, shape, terms, { workers: 2 })
    expect(bytesEqual(a, b)).toBe(true)
  })

  it('rejects merges after close() with MergePoolError; close() is idempotent', async () => {
    const pool = new MergePool({ workers: 1 })
    await pool.close()
    await pool.close()
    const shape = { outFeatures: 1, inFeatures: 1 }
    const term = { coef: 1, rank: 1, loraA: Float32Array.of(1), loraB: Float32Array.of(1) }
    await expect(pool.merge(new Float32Array(1), shape, [term])).rejects.toThrow(MergePoolError)
    expect(() => new MergePool({ workers: 0 })).toThrow(MergePoolError)
  })

  it('does not keep the process alive (worker threads are unref()ed when idle)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flora-merge-'))
    const mergeUrl = new URL('../../src/aggregation/merge.ts', import.meta.url).href
    const script = join(dir, 'alive.mts')
    writeFileSync(
      script,
      `import { mergeIntoWeights } from ${JSON.stringify(mergeUrl)}
const w = new Float32Array(6)
await mergeIntoWeights(w, { outFeatures: 2, inFeatures: 3 }, [{ coef: 1, rank: 1, loraA: Float32Array.of(1, 2, 3), loraB: Float32Array.of(1, 1) }], { workers: 2 })
console.log(JSON.stringify([...w]))
`,
    )
    try {
      const tsx = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url))
      const res = spawnSync(process.execPath, [tsx, script], { encoding: 'utf8', timeout: 30_000 })
      expect(res.stderr).toBe('')
      expect(res.status).toBe(0) // exits on its own: no close() was called
      expect(res.stdout.trim()).toBe('[1,2,3,1,2,3]')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
