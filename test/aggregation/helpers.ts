/**
 * Test helpers for src/aggregation: a small seeded PRNG, random adapters/terms, an
 * independent scalar implementation of the merge definition, and float32 ulp.
 */
import type { AdapterSet, LoraModule } from '../../src/lora/types.js'
import type { ClientUpdate, LowRankTerm, MatrixShape } from '../../src/aggregation/types.js'

/** mulberry32: tiny deterministic PRNG, uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Float32 values uniform in [-scale, scale). */
export function randF32(next: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = (2 * next() - 1) * scale
  return a
}

export function randTerms(next: () => number, shape: MatrixShape, ranks: readonly number[]): LowRankTerm[] {
  return ranks.map((rank) => ({
    coef: 0.05 + 2 * next(),
    rank,
    loraA: randF32(next, rank * shape.inFeatures, 1 / Math.sqrt(shape.inFeatures)),
    loraB: randF32(next, shape.outFeatures * rank, 0.1),
  }))
}

/**
 * The merge definition of src/aggregation/merge.ts, written independently as plain scalar
 * loops: acc = fl64(acc + fl64(fl64(c * B) * A)) over (k, t) in order, W = fl32(W + acc).
 * (JS evaluates `c * B * A` left to right: (c * B) * A.)
 */
export function referenceMerge(
  w: Float32Array,
  shape: MatrixShape,
  terms: readonly LowRankTerm[],
  fold: 'B' | 'A' = 'B',
): Float32Array {
  const out = w.slice()
  const { outFeatures: m, inFeatures: n } = shape
  if (terms.length === 0) return out
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0
      for (const { coef, rank, loraA, loraB } of terms) {
        for (let t = 0; t < rank; t++) {
          // fold 'A' (a different definition, for sensitivity checks): fl64(B * fl64(c * A))
          acc = fold === 'B' ? acc + coef * loraB[i * rank + t] * loraA[t * n + j] : acc + loraB[i * rank + t] * (coef * loraA[t * n + j])
        }
      }
      out[i * n + j] = Math.fround(w[i * n + j] + acc)
    }
  }
  return out
}

/** S(i,j) = sum over terms of |c B A| (the scale of the float64 rounding error). */
export function absSum(shape: MatrixShape, terms: readonly LowRankTerm[]): Float64Array {
  const { outFeatures: m, inFeatures: n } = shape
  const s = new Float64Array(m * n)
  for (const { coef, rank, loraA, loraB } of terms) {
    for (let i = 0; i < m; i++) {
      for (let t = 0; t < rank; t++) {
        const b = Math.abs(coef * loraB[i * rank + t])
        for (let j = 0; j < n; j++) s[i * n + j] += b * Math.abs(loraA[t * n + j])
      }
    }
  }
  return s
}

/** Spacing of float32 numbers at |x| (at least the smallest subnormal, 2^-149). */
export function ulp32(x: number): number {
  const a = Math.abs(Math.fround(x))
  if (a === 0 || !Number.isFinite(a)) return 2 ** -149
  const e = Math.floor(Math.log2(a))
  // log2 may be off by one near powers of two; fix with exact comparisons
  const exp = 2 ** e > a ? e - 1 : 2 ** (e + 1) <= a ? e + 1 : e
  return Math.max(2 ** (exp - 23), 2 ** -149)
}

export function bytesEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

/** A rank-r module with random factors; scaling = alpha / rank. */
export function randModule(next: () => number, name: string, out: number, inF: number, rank: number, alpha = 2 * rank): LoraModule {
  return {
    name,
    rank,
    inFeatures: inF,
    outFeatures: out,
    alpha,
    scaling: alpha / rank,
    loraA: randF32(next, rank * inF, 1 / Math.sqrt(inF)),
    loraB: randF32(next, out * rank, 0.1),
  }
}

export interface ModuleSpec {
  readonly name: string
  readonly out: number
  readonly in: number
}

/** Clients with the given ranks and sample counts over the same modules. */
export function randUpdates(
  next: () => number,
  modules: readonly ModuleSpec[],
  ranks: readonly number[],
  samples: readonly number[],
  alphaOf: (rank: number) => number = (r) => 2 * r,
): ClientUpdate[] {
  return ranks.map((rank, k) => {
    const adapter: AdapterSet = { modules: modules.map((m) => randModule(next, m.name, m.out, m.in, rank, alphaOf(rank))) }
    return { id: `peer-${String(k).padStart(2, '0')}`, samples: samples[k], adapter }
  })
}

/** Dense float64 s B A of one module, [out, in]. */
export function dense(mod: { rank: number; inFeatures: number; outFeatures: number; loraA: Float32Array; loraB: Float32Array }, scale: number): Float64Array {
  const { rank: r, inFeatures: n, outFeatures: m } = mod
  const d = new Float64Array(m * n)
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < r; t++) {
      const b = scale * mod.loraB[i * r + t]
      for (let j = 0; j < n; j++) d[i * n + j] += b * mod.loraA[t * n + j]
    }
  }
  return d
}

/** Independent float64 target sum_k p_k s_k B_k A_k of one module, p_k from the test's own sums. */
export function exactDelta(updates: readonly ClientUpdate[], name: string): Float64Array {
  let total = 0
  for (const u of updates) total += u.samples
  let acc: Float64Array | undefined
  for (const u of updates) {
    const m = u.adapter.modules.find((x) => x.name === name)
    if (m === undefined) throw new Error(`no module ${name}`)
    const d = dense(m, (u.samples / total) * m.scaling)
    if (acc === undefined) acc = d
    else for (let i = 0; i < d.length; i++) acc[i] += d[i]
  }
  if (acc === undefined) throw new Error('no updates')
  return acc
}

export function frob(x: Float64Array): number {
  let s = 0
  for (const v of x) s += v * v
  return Math.sqrt(s)
}

export function diffFrob(x: Float64Array, y: Float64Array): number {
  let s = 0
  for (let i = 0; i < x.length; i++) s += (x[i] - y[i]) ** 2
  return Math.sqrt(s)
}

/** Fisher-Yates with the given PRNG. */
export function shuffled<T>(xs: readonly T[], next: () => number): T[] {
  const a = [...xs]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1))
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

/**
 * Eigenvalues of the symmetric n x n matrix `g` (row-major) by the classical two-sided
 * Jacobi eigenvalue method, descending. Used to get singular values independently of the
 * one-sided SVD under test (sigma_i = sqrt(lambda_i(dW dW^T))).
 */
export function symmetricEigenvalues(g: Float64Array, n: number): number[] {
  const a = Float64Array.from(g)
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] ** 2
    if (off < 1e-30) break
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]
        if (apq === 0) continue
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1))
        const c = 1 / Math.sqrt(t * t + 1)
        const s = t * c
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]
          const akq = a[k * n + q]
          a[k * n + p] = c * akp - s * akq
          a[k * n + q] = s * akp + c * akq
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]
          const aqk = a[q * n + k]
          a[p * n + k] = c * apk - s * aqk
          a[q * n + k] = s * apk + c * aqk
        }
      }
    }
  }
  const ev: number[] = []
  for (let i = 0; i < n; i++) ev.push(a[i * n + i])
  return ev.sort((x, y) => y - x)
}

/** Singular values of the m x n row-major matrix via eigenvalues of the smaller Gram matrix. */
export function singularValues(x: Float64Array, m: number, n: number): number[] {
  const small = Math.min(m, n)
  const g = new Float64Array(small * small)
  for (let p = 0; p < small; p++) {
    for (let q = 0; q < small; q++) {
      let s = 0
      if (m <= n) for (let j = 0; j < n; j++) s += x[p * n + j] * x[q * n + j]
      else for (let i = 0; i < m; i++) s += x[i * n + p] * x[i * n + q]
      g[p * small + q] = s
    }
  }
  return symmetricEigenvalues(g, small).map((l) => Math.sqrt(Math.max(0, l)))
}
