/**
 * The merge engine shared by the main thread and the worker threads, the memory layout it
 * works in, and the packing of low-rank terms into that layout.
 *
 * Why the engine is a string of plain JS: worker_threads can only run JavaScript, and a
 * worker written as a .ts file would not load under every runner (vitest, tsx, compiled
 * dist). `new Worker(source, { eval: true })` works in all three, and the main thread
 * builds its synchronous engine from the very same source, so the two can never drift.
 *
 * Memory: one shared WebAssembly.Memory per pool (and one for the calling thread) holds
 * the packed operands and a row-padded copy of W. The main thread packs into it, every
 * worker instantiates the SIMD kernel over the same memory and updates its rows of W in
 * place, and the main thread copies W back: nothing is copied per worker.
 *
 * The engine computes, for the row groups it is given, exactly the definition in merge.ts:
 *   acc(i,j) = sum over s = 0..R-1, in order, of Bp(i,s) * Ap(s,j)   (float64, sequential)
 *   W(i,j)   = fround(W(i,j) + acc(i,j))
 * either with the WebAssembly SIMD kernel (wasm-kernel.ts) or with a scalar JS loop that
 * performs the same IEEE operations in the same order (used when SIMD is unavailable and
 * by the tests to prove the two agree bit for bit).
 */
import { ShapeMismatchError } from './errors.js'
import type { LowRankTerm, MatrixShape } from './types.js'
import { KERNEL_MAX_PAGES, KERNEL_MR, KERNEL_NC, KERNEL_NV, buildKernelWasm } from './wasm-kernel.js'

/** Which inner loop runs the merge. 'auto' = wasm when the host has WebAssembly SIMD. */
export type MergeBackend = 'auto' | 'wasm' | 'js'

/** Byte layout of one merge inside the engine memory (all offsets multiples of 8). */
export interface MergeLayout {
  readonly outFeatures: number
  readonly inFeatures: number
  /** R = sum_k r_k, the stacked rank (>= 1). */
  readonly R: number
  /** ceil(in / NC): column panels of Ap; W rows are padded to nPanels * NC columns. */
  readonly nPanels: number
  /** ceil(out / MR): row groups of Bp; W is padded to groups * MR rows. */
  readonly groups: number
  /** Ap at offA: Ap[(q * R + s) * NC + c] = A_stack[s, q * NC + c] (float64, zero-padded columns). */
  readonly offA: number
  /** Bp at offB: Bp[(g * R + s) * MR + r] = B_stack[g * MR + r, s] (float64, coef folded in, zero-padded rows). */
  readonly offB: number
  /** W at offW: float32 [groups * MR, nPanels * NC], row-major. */
  readonly offW: number
  /** Bytes the layout needs. */
  readonly bytes: number
}

/** One merge job: plain data, posted as is to the workers. */
export interface MergeJob extends MergeLayout {
  /** Column panels per cache block (A block of R * NC * 8 * panelsPerBlock bytes stays in L2). */
  readonly panelsPerBlock: number
  /** Row groups a worker claims at a time from the pool's counter. */
  readonly groupsPerClaim: number
  readonly backend: MergeBackend
}

/** The engine as the main thread sees it. */
export interface MergeEngine {
  /** 'wasm' when the SIMD kernel compiled on this host, else 'js'. */
  readonly available: 'wasm' | 'js'
  /** Runs row groups [g0, g1) of a job already laid out in the engine's memory. */
  run(job: MergeJob, g0: number, g1: number): 'wasm' | 'js'
}

/**
 * Plain-JS source defining `createMergeEngine(wasmBytes, memory)`. Keep it ES5-ish and
 * free of anything a bundler or transpiler might rewrite.
 */
export const ENGINE_SOURCE = `
'use strict';
function createMergeEngine(wasmBytes, memory) {
  var MR = ${KERNEL_MR}, NC = ${KERNEL_NC};
  var tile = null;
  if (wasmBytes) {
    try {
      var inst = new WebAssembly.Instance(new WebAssembly.Module(wasmBytes), { env: { memory: memory } });
      tile = inst.exports.tile;
    } catch (e) { tile = null; }
  }
  function runWasm(job, g0, g1) {
    var R = job.R, nPanels = job.nPanels, inPad = nPanels * NC, ppb = job.panelsPerBlock;
    // Column blocks outermost so one block of A is reused by every row group from cache.
    for (var q0 = 0; q0 < nPanels; q0 += ppb) {
      var np = Math.min(ppb, nPanels - q0);
      for (var g = g0; g < g1; g++) {
        tile(job.offA + q0 * R * NC * 8, job.offB + g * R * MR * 8, job.offW + (g * MR * inPad + q0 * NC) * 4, R, np, inPad * 4);
      }
    }
  }
  function runJs(job, g0, g1) {
    var R = job.R, nPanels = job.nPanels, inPad = nPanels * NC;
    var f64 = new Float64Array(memory.buffer), f32 = new Float32Array(memory.buffer);
    var ap = job.offA / 8, bp = job.offB / 8, wp = job.offW / 4;
    var acc = new Float64Array(MR * NC), r, c, s;
    for (var g = g0; g < g1; g++) {
      var bBase = bp + g * R * MR;
      for (var q = 0; q < nPanels; q++) {
        var aBase = ap + q * R * NC;
        acc.fill(0);
        for (s = 0; s < R; s++) {
          for (r = 0; r < MR; r++) {
            var b = f64[bBase + s * MR + r];
            for (c = 0; c < NC; c++) acc[r * NC + c] = acc[r * NC + c] + b * f64[aBase + s * NC + c];
          }
        }
        for (r = 0; r < MR; r++) {
          var o = wp + (g * MR + r) * inPad + q * NC;
          for (c = 0; c < NC; c++) f32[o + c] = Math.fround(f32[o + c] + acc[r * NC + c]);
        }
      }
    }
  }
  return {
    available: tile ? 'wasm' : 'js',
    run: function (job, g0, g1) {
      if (job.backend === 'js' || (job.backend === 'auto' && !tile)) { runJs(job, g0, g1); return 'js'; }
      if (!tile) throw new Error('merge backend "wasm" requested but WebAssembly SIMD is not available');
      runWasm(job, g0, g1);
      return 'wasm';
    },
  };
}
`

/**
 * The slice of the WebAssembly JS API used on the TypeScript side (this project's lib has
 * no WebAssembly typings; the engine source itself is plain JS).
 */
export interface WasmMemory {
  readonly buffer: ArrayBufferLike
  grow(deltaPages: number): number
}
interface WasmApi {
  readonly Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => WasmMemory
}
const wasmApi = (globalThis as unknown as { readonly WebAssembly: WasmApi }).WebAssembly

let kernelBytes: Uint8Array | undefined
/** The SIMD kernel's module bytes (built once). */
export function kernelWasmBytes(): Uint8Array {
  kernelBytes ??= buildKernelWasm(KERNEL_MR, KERNEL_NV)
  return kernelBytes
}

/** A fresh shared memory for an engine (grown on demand by ensureMemory). */
export function createEngineMemory(): WasmMemory {
  return new wasmApi.Memory({ initial: 1, maximum: KERNEL_MAX_PAGES, shared: true })
}

/** Grows `memory` to at least `bytes`. */
export function ensureMemory(memory: WasmMemory, bytes: number): void {
  const have = memory.buffer.byteLength
  if (bytes > KERNEL_MAX_PAGES * 65536) {
    throw new ShapeMismatchError(`merge needs ${bytes} bytes of working memory, above the 4 GiB WebAssembly limit`)
  }
  if (bytes > have) memory.grow(Math.ceil((bytes - have) / 65536))
}

type EngineFactory = (wasm: Uint8Array | null, memory: WasmMemory) => MergeEngine
let factory: EngineFactory | undefined
/** Builds an engine from ENGINE_SOURCE on the calling thread (the workers do the same). */
export function createEngine(memory: WasmMemory): MergeEngine {
  factory ??= new Function(`${ENGINE_SOURCE}\nreturn createMergeEngine;`)() as EngineFactory
  return factory(kernelWasmBytes(), memory)
}

let probe: MergeEngine | undefined
/** True when this host runs the WebAssembly SIMD kernel. */
export function wasmSimdAvailable(): boolean {
  probe ??= createEngine(createEngineMemory())
  return probe.available === 'wasm'
}

/** Bytes of cache one A block should occupy (L2 here is 512 KiB per core). */
const A_BLOCK_BYTES = 128 * 1024

/** Checks every term against the weight shape; returns R = sum_k r_k. */
export function validateTerms(weight: Float32Array, shape: MatrixShape, terms: readonly LowRankTerm[]): number {
  const { outFeatures: out, inFeatures: inF } = shape
  if (!Number.isInteger(out) || !Number.isInteger(inF) || out < 1 || inF < 1) {
    throw new ShapeMismatchError(`weight shape must be positive integers, got [${out}, ${inF}]`)
  }
  if (weight.length !== out * inF) {
    throw new ShapeMismatchError(`weight has ${weight.length} elements, shape [${out}, ${inF}] needs ${out * inF}`)
  }
  let R = 0
  terms.forEach((t, k) => {
    if (!Number.isInteger(t.rank) || t.rank < 1) throw new ShapeMismatchError(`term ${k}: rank must be an integer >= 1, got ${t.rank}`)
    if (t.loraA.length !== t.rank * inF) {
      throw new ShapeMismatchError(`term ${k}: loraA has ${t.loraA.length} elements, [${t.rank}, ${inF}] needs ${t.rank * inF}`)
    }
    if (t.loraB.length !== out * t.rank) {
      throw new ShapeMismatchError(`term ${k}: loraB has ${t.loraB.length} elements, [${out}, ${t.rank}] needs ${out * t.rank}`)
    }
    if (!Number.isFinite(t.coef)) throw new ShapeMismatchError(`term ${k}: coef must be finite, got ${t.coef}`)
    R += t.rank
  })
  return R
}

/** Where a merge of this shape and stacked rank lives in engine memory. */
export function mergeLayout(shape: MatrixShape, R: number): MergeLayout {
  const nPanels = Math.ceil(shape.inFeatures / KERNEL_NC)
  const groups = Math.ceil(shape.outFeatures / KERNEL_MR)
  const offA = 0
  const offB = offA + nPanels * R * KERNEL_NC * 8
  const offW = offB + groups * R * KERNEL_MR * 8
  const bytes = offW + groups * KERNEL_MR * nPanels * KERNEL_NC * 4
  return { outFeatures: shape.outFeatures, inFeatures: shape.inFeatures, R, nPanels, groups, offA, offB, offW, bytes }
}

/** Cache blocking and work split for a job. */
export function mergeJob(layout: MergeLayout, workers: number, backend: MergeBackend): MergeJob {
  const panelsPerBlock = Math.max(1, Math.floor(A_BLOCK_BYTES / (layout.R * KERNEL_NC * 8)))
  // About 8 claims per worker: evens out a busy core; each claim re-reads A from L3 once.
  const groupsPerClaim = Math.max(1, Math.min(128, Math.ceil(layout.groups / (Math.max(1, workers) * 8))))
  return { ...layout, panelsPerBlock, groupsPerClaim, backend }
}

/**
 * Writes the job's operands into `memory` (grown as needed). With s running over
 * (term k, rank index t) in order:
 *   Ap[s, j] = A_k[t, j]                   (float32 -> float64, exact)
 *   Bp[i, s] = fl64(coef_k * B_k[i, t])    (the coefficient is folded into B: one rounding)
 * Folding into B (not A) keeps A exact, and A is the operand streamed through the cache.
 * W is copied into rows of nPanels * NC floats; padding rows/columns of Ap, Bp are zero so
 * they only ever touch padding of W, which is never copied back.
 */
export function loadJob(memory: WasmMemory, layout: MergeLayout, terms: readonly LowRankTerm[], weight: Float32Array): void {
  ensureMemory(memory, layout.bytes)
  const buf = memory.buffer
  const { outFeatures: out, inFeatures: inF, R, nPanels, groups } = layout
  const NC = KERNEL_NC
  const MR = KERNEL_MR
  const ap = new Float64Array(buf, layout.offA, nPanels * R * NC)
  const bp = new Float64Array(buf, layout.offB, groups * R * MR)
  const padCols = nPanels * NC - inF
  const padRows = groups * MR - out
  let s = 0
  for (const { rank, loraA, loraB, coef } of terms) {
    for (let t = 0; t < rank; t++, s++) {
      const row = t * inF
      for (let q = 0; q < nPanels; q++) {
        const dst = (q * R + s) * NC
        const j0 = q * NC
        const n = Math.min(NC, inF - j0)
        for (let c = 0; c < n; c++) ap[dst + c] = loraA[row + j0 + c]
        for (let c = n; c < NC; c++) ap[dst + c] = 0
      }
      for (let i = 0; i < out; i++) bp[(((i / MR) | 0) * R + s) * MR + (i % MR)] = coef * loraB[i * rank + t]
      for (let i = out; i < out + padRows; i++) bp[(((i / MR) | 0) * R + s) * MR + (i % MR)] = 0
    }
  }
  const w = new Float32Array(buf, layout.offW, groups * MR * nPanels * NC)
  if (padCols === 0) {
    w.set(weight)
  } else {
    const stride = nPanels * NC
    for (let i = 0; i < out; i++) w.set(weight.subarray(i * inF, (i + 1) * inF), i * stride)
  }
}

/** Copies the merged W out of engine memory into `weight`. */
export function storeResult(memory: WasmMemory, layout: MergeLayout, weight: Float32Array): void {
  const { outFeatures: out, inFeatures: inF, nPanels } = layout
  const stride = nPanels * KERNEL_NC
  const w = new Float32Array(memory.buffer, layout.offW, out * stride)
  if (stride === inF) {
    weight.set(w)
  } else {
    for (let i = 0; i < out; i++) weight.set(w.subarray(i * stride, i * stride + inF), i * inF)
  }
}
