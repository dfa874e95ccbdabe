/**
 * Deterministic merge kernel: W <- W + sum_k c_k B_k A_k  (W [out, in], B_k [out, r_k], A_k [r_k, in]).
 *
 * DEFINITION (what "bit-identical" refers to). Let the terms be given in their canonical
 * order k = 0..K-1 and number the stacked rank index s = (k, t), t = 0..r_k-1, in that
 * order (R = sum_k r_k). Writing fl64(.) for IEEE-754 binary64 round-to-nearest-even and
 * fl32(.) for binary32 round-to-nearest-even, every element (i, j) is computed as
 *
 *   b_s      = fl64(c_k * B_k[i, t])                         coefficient folded into B
 *   acc_0    = +0
 *   acc_s+1  = fl64(acc_s + fl64(b_s * A_k[t, j]))          s = 0..R-1, strictly in order
 *   W'[i, j] = fl32(fl64(W[i, j] + acc_R))                   one float32 rounding per element
 *
 * (float32 inputs convert to float64 exactly; no fused multiply-add anywhere: JavaScript
 * never contracts, and the WebAssembly kernel uses separate mul/add.) With no terms
 * (R = 0) W is left untouched. W' is therefore a pure function of (W, c, A, B, term order),
 * the same on every machine, for any number of workers and for both backends
 * ('wasm' SIMD or scalar 'js'): workers split by output rows, never along s.
 * The guarantee covers finite inputs; NaN payload bits are not specified by WebAssembly.
 *
 * ERROR BOUND against the exact update dW = sum_k c_k B_k A_k (real arithmetic), with
 * u = 2^-53 and S(i,j) = sum_s |c_k B_k[i,t] A_k[t,j]|:
 *   |acc_R - dW| <= (R + 1) u S                            (standard recursive-sum bound)
 *   |W' - (W + dW)| <= ulp32(W')/2 + (R + 2) u (|W| + S)   (+ the final float32 rounding)
 * (to first order in u), and against the float64 reference d = denseDelta(...) below,
 * which satisfies |d - dW| <= (R + K + 1) u S:
 *   |W' - fl32(fl64(W + d))| <= ulp32(max(|W'|, |fl32(W + d)|)) + (2R + K + 4) u (|W| + S)
 * i.e. at most one float32 ulp apart unless cancellation makes |W + dW| << |W| + S
 * (ulp32(x) = spacing of float32 at |x|, at least 2^-149). The tests check exactly this.
 *
 * Throughput: see docs/MERGE.md (bench/merge.ts).
 */
import { availableParallelism } from 'node:os'
import {
  type MergeBackend,
  type MergeEngine,
  type WasmMemory,
  createEngine,
  createEngineMemory,
  loadJob,
  mergeJob,
  mergeLayout,
  storeResult,
  validateTerms,
} from './engine.js'
import { MergePool } from './merge-pool.js'
import type { LowRankTerm, MatrixShape } from './types.js'

export type { MergeBackend } from './engine.js'
export { wasmSimdAvailable } from './engine.js'
export { MergePool, type MergePoolOptions } from './merge-pool.js'

export interface MergeOptions {
  /** Worker threads; 0 runs on the calling thread. Default min(4, availableParallelism()). */
  readonly workers?: number
  /** Run on this pool (its size wins over `workers`) instead of the shared default pool. */
  readonly pool?: MergePool
  /** Inner loop; 'auto' (default) uses WebAssembly SIMD when available. Results are identical. */
  readonly backend?: MergeBackend
}

/** The default worker count: the cores this process may use, capped at 4. */
export function defaultMergeWorkers(): number {
  return Math.max(1, Math.min(4, availableParallelism()))
}

/** Floating-point operations of the stacked product, counted as 2 * out * in * R (one mul + one add each). */
export function mergeFlops(shape: MatrixShape, terms: readonly LowRankTerm[]): number {
  let R = 0
  for (const t of terms) R += t.rank
  return 2 * shape.outFeatures * shape.inFeatures * R
}

/** Synchronous, single-threaded merge (the definition above), in place. */
export function mergeIntoWeightsSync(
  weight: Float32Array,
  shape: MatrixShape,
  terms: readonly LowRankTerm[],
  options: { readonly backend?: MergeBackend } = {},
): void {
  const R = validateTerms(weight, shape, terms)
  if (R === 0) return
  const layout = mergeLayout(shape, R)
  const memory = (syncMemory ??= createEngineMemory())
  syncEngine ??= createEngine(memory)
  loadJob(memory, layout, terms, weight)
  syncEngine.run(mergeJob(layout, 1, options.backend ?? 'auto'), 0, layout.groups)
  storeResult(memory, layout, weight)
}

let syncMemory: WasmMemory | undefined
let syncEngine: MergeEngine | undefined

const defaultPools = new Map<number, MergePool>()

/** The shared pool of `workers` threads (created on first use, unref'd, closed by closeDefaultMergePools). */
export function defaultMergePool(workers: number = defaultMergeWorkers()): MergePool {
  let pool = defaultPools.get(workers)
  if (pool === undefined || pool.isClosed) {
    pool = new MergePool({ workers })
    defaultPools.set(workers, pool)
  }
  return pool
}

/** Closes every default pool (tests, clean shutdown). Later merges create fresh ones. */
export async function closeDefaultMergePools(): Promise<void> {
  const pools = [...defaultPools.values()]
  defaultPools.clear()
  await Promise.all(pools.map((p) => p.close()))
}

/**
 * Multi-threaded merge (the definition above), in place; resolves when W holds the result.
 * Bit-identical to mergeIntoWeightsSync whatever `workers` is.
 */
export async function mergeIntoWeights(
  weight: Float32Array,
  shape: MatrixShape,
  terms: readonly LowRankTerm[],
  options: MergeOptions = {},
): Promise<void> {
  const backend = options.backend ?? 'auto'
  if (options.pool !== undefined) return options.pool.merge(weight, shape, terms, backend)
  const workers = options.workers ?? defaultMergeWorkers()
  if (workers === 0) {
    mergeIntoWeightsSync(weight, shape, terms, { backend })
    return
  }
  return defaultMergePool(workers).merge(weight, shape, terms, backend)
}

/**
 * Float64 reference of dW = sum_k c_k B_k A_k, deliberately in another rounding order than
 * the kernel (coef applied after each term's own product):
 *   P_k[i, j] = sum_t B_k[i, t] A_k[t, j]        (float64, t ascending)
 *   dW[i, j]  = sum_k c_k P_k[i, j]              (float64, k ascending)
 * |dW_ref - dW| <= (max_k r_k + K + 1) u S (u = 2^-53, S as in the header). Row-major [out, in].
 */
export function denseDelta(shape: MatrixShape, terms: readonly LowRankTerm[]): Float64Array {
  const probe = new Float32Array(shape.outFeatures * shape.inFeatures)
  validateTerms(probe, shape, terms)
  const { outFeatures: out, inFeatures: inF } = shape
  const dW = new Float64Array(out * inF)
  const row = new Float64Array(inF)
  for (const { coef, rank, loraA, loraB } of terms) {
    for (let i = 0; i < out; i++) {
      row.fill(0)
      for (let t = 0; t < rank; t++) {
        const b = loraB[i * rank + t]
        const a0 = t * inF
        for (let j = 0; j < inF; j++) row[j] += b * loraA[a0 + j]
      }
      const o = i * inF
      for (let j = 0; j < inF; j++) dW[o + j] += coef * row[j]
    }
  }
  return dW
}
