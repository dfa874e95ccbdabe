/**
 * The optional native kernels (`native/flora_kernels.cc`, built by node-gyp at install time):
 * a multithreaded, cache-blocked single-precision GEMM with AVX2/FMA micro-kernels, and
 * row-parallel versions of the fused ops (causal attention, RMSNorm, RoPE, SwiGLU, cross-entropy) and of
 * the element-wise Add/Sub/Multiply and attention's head transpose.
 *
 * The wasm backend's matmuls run on one core with 128-bit SIMD (about 24 GFLOP/s here);
 * this kernel runs on every core with 256-bit FMA (about 100 GFLOP/s on 2 cores here), and
 * takes transposed and batched operands without copies. `installWasmKernelPatches` routes
 * the wasm BatchMatMul through it when it loads; the model then needs no pre-transposed
 * weight copies.
 *
 * A missing or broken addon is not an error: when the addon was not built (no compiler at install time, an
 * unsupported platform) or is disabled with `FLORA_NATIVE=0`, `loadNativeKernels()`
 * returns `{ kernels: undefined, reason }` and the wasm kernels run. `FLORA_THREADS=n`
 * sets the thread count (default: every core the OS offers this process; a malformed value
 * throws a RangeError).
 *
 * Results are deterministic for a given machine and ISA path: each output element is one
 * thread's fixed-order sum, independent of the thread count (tested).
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** An opaque handle to a frozen weight the addon owns. */
export type NativeFrozenHandle = { readonly __nativeFrozen: unique symbol }

/** The addon's functions (see native/flora_kernels.cc). */
export interface NativeKernels {
  /**
   * For each batch item b: C[b] = op(A[b]) op(B[b]) (C += ... with `accumulate`), row-major,
   * op(A) m x k, op(B) k x n; a stride of 0 broadcasts that operand over the batch.
   */
  gemm(
    a: Float32Array,
    b: Float32Array,
    c: Float32Array,
    batch: number,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    strideA: number,
    strideB: number,
    accumulate: boolean,
  ): void
  /** RMSNorm of `rows` rows of `d`: y = x / sqrt(mean(x^2) + eps) * w. */
  rmsNorm(x: Float32Array, w: Float32Array, y: Float32Array, rows: number, d: number, eps: number): void
  /** Its input gradient with w frozen (kernels.ts has the formula). */
  rmsNormGrad(dy: Float32Array, x: Float32Array, w: Float32Array, dx: Float32Array, rows: number, d: number, eps: number): void
  /** Rotary embedding of `rows` rows of `hd` at positions (row / heads) % t; `transposed` is the backward. */
  rope(x: Float32Array, cos: Float32Array, sin: Float32Array, y: Float32Array, rows: number, t: number, heads: number, hd: number, transposed: boolean): void
  /** Mean cross-entropy of logits [m, v]; fills grad with (softmax - onehot) / m when given. */
  crossEntropy(logits: Float32Array, targets: Int32Array, grad: Float32Array | null, m: number, v: number): number
  /**
   * Causal attention on the projections' layout: q [b, t, h, hd], k, v [b, t, kv, hd] ->
   * out [b, t, h, hd], with the softmax probabilities [b, h, t, t] kept for the backward.
   */
  attention(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, probs: Float32Array, b: number, t: number, h: number, kv: number, hd: number, scale: number): void
  /** Its gradients dq, dk, dv for the upstream dout. */
  attentionGrad(dout: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, probs: Float32Array, dq: Float32Array, dk: Float32Array, dv: Float32Array, b: number, t: number, h: number, kv: number, hd: number, scale: number): void
  /** h = silu(g) u, element-wise over n. */
  swiglu(g: Float32Array, u: Float32Array, h: Float32Array, n: number): void
  /** Its gradients dg, du for the upstream dy. */
  swigluGrad(dy: Float32Array, g: Float32Array, u: Float32Array, dg: Float32Array, du: Float32Array, n: number): void
  /** out = a op b over n elements (op 0 add, 1 sub, 2 mul); b has n elements or 1 (broadcast). */
  binary(op: 0 | 1 | 2, a: Float32Array, b: Float32Array, out: Float32Array, n: number): void
  /** x [d0, d1, d2, d3] -> [d0, d2, d1, d3]. */
  transpose0213(x: Float32Array, y: Float32Array, d0: number, d1: number, d2: number, d3: number): void
  /**
   * Copies a frozen base weight W [rows, cols] into memory the addon owns (out of the JS and
   * wasm heaps), as float32 (dtype 0) or as bf16 (1) / f16 (2) bits; returns its handle.
   */
  frozenCreate(values: Float32Array | Uint16Array, rows: number, cols: number, dtype: 0 | 1 | 2): NativeFrozenHandle
  /** Releases a frozen weight's memory now (its handle is unusable afterwards). */
  frozenFree(handle: NativeFrozenHandle): void
  /** y[m, rows] = x[m, cols] W^T, or with `transposed` y[m, cols] = x[m, rows] W (half precision widened exactly). */
  frozenMatMul(handle: NativeFrozenHandle, x: Float32Array, y: Float32Array, m: number, transposed: boolean): void
  /** W widened to float32 into `out` [rows, cols]. */
  frozenRead(handle: NativeFrozenHandle, out: Float32Array): void
  setThreads(n: number): void
  /** 'generic' forces the portable micro-kernel; 'avx2-fma' or 'avx512' a SIMD one (where the CPU has it; the default is the widest). */
  setIsa(isa: 'generic' | 'avx2-fma' | 'avx512'): void
  info(): { readonly isa: string; readonly threads: number }
}

export interface NativeLoadResult {
  readonly kernels: NativeKernels | undefined
  /** Why the kernels are not available (undefined when they are). */
  readonly reason?: string
  /** The file that was loaded. */
  readonly file?: string
}

const REQUIRED = [
  'gemm', 'attention', 'attentionGrad', 'rmsNorm', 'rmsNormGrad', 'rope', 'swiglu', 'swigluGrad',
  'crossEntropy', 'binary', 'transpose0213', 'setThreads', 'setIsa', 'info',
  'frozenCreate', 'frozenFree', 'frozenMatMul', 'frozenRead',
] as const satisfies readonly (keyof NativeKernels)[]

let cached: NativeLoadResult | undefined

/** Loads the addon once (later calls return the same result). */
export function loadNativeKernels(): NativeLoadResult {
  if (cached !== undefined) return cached
  cached = load()
  return cached
}

function load(): NativeLoadResult {
  const flag = process.env.FLORA_NATIVE
  if (flag === '0' || flag === 'false' || flag === 'off') return { kernels: undefined, reason: 'disabled by FLORA_NATIVE' }
  // node-gyp-build's resolution: a local build (native/build/Release) first, then the
  // prebuilt binary for this platform the package ships (native/prebuilds/<platform>-<arch>).
  const dir = nativeDirCandidates().find((d) => existsSync(d))
  let file: string
  try {
    if (dir === undefined) throw new Error('no native/ directory')
    file = resolveAddon(dir)
  } catch {
    return {
      kernels: undefined,
      reason: `no native addon: no prebuilt binary for ${process.platform}-${process.arch} ships with flora, and none was built (npm install builds one with node-gyp where a C++ toolchain exists; run \`npm run build:native\` to see why it failed)`,
    }
  }
  let kernels: NativeKernels
  try {
    kernels = createRequire(import.meta.url)(file) as NativeKernels
  } catch (err) {
    return { kernels: undefined, reason: `the native addon failed to load: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`, file }
  }
  // A binary built from an older native/flora_kernels.cc lacks newer entry points.
  const missing = REQUIRED.filter((name) => typeof (kernels as unknown as Record<string, unknown>)[name] !== 'function')
  if (missing.length > 0) {
    return { kernels: undefined, reason: `the native addon is out of date (no ${missing.join(', ')}): run \`npm run build:native\``, file }
  }
  const threads = parseThreads(process.env.FLORA_THREADS) ?? os.availableParallelism()
  kernels.setThreads(threads)
  return { kernels, file }
}

function parseThreads(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new RangeError(`FLORA_THREADS must be an integer in [1, 256], got '${value}'`)
  return n
}

/** The package root holds native/; this file sits in src/model or dist/src/model. */
function nativeDirCandidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url))
  return [path.resolve(here, '..', '..', 'native'), path.resolve(here, '..', '..', '..', 'native')]
}

/** node-gyp-build's `path(dir)`: the addon file it would load from `dir` (throws when there is none). */
function resolveAddon(dir: string): string {
  const nodeGypBuild = createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string }
  return nodeGypBuild.path(dir)
}
