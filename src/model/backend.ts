/**
 * Backend selection for tfjs: tfjs-node-gpu -> webgpu -> tfjs-node -> wasm -> cpu.
 *
 * The native backends download libtensorflow at install time, so they are optional
 * and only ever loaded by dynamic import. The webgpu backend runs on the optional `webgpu`
 * package (Dawn) where a GPU adapter exists (webgpu-node.ts); `auto` takes it only on a real
 * GPU, never on a software renderer. The wasm backend ships its binaries in the
 * package; in Node it runs single-threaded (tfjs disables wasm threads under Node).
 *
 * The stock wasm kernels have slow paths that a transformer hits all the time:
 *  - BatchMatMul only reaches XNNPACK for a plain, unbatched product; a transposed
 *    operand or a batch > 1 falls back to a naive loop that is 10-20x slower;
 *  - Slice copies its whole input out of the heap on every call (readSync), so
 *    cutting a tensor into n pieces costs O(n * size);
 *  - GatherV2 (the embedding lookup) copies element by element;
 *  - Identity (tf.clone, used to save every activation for backprop) and a Cast to the
 *    same dtype (in every Multiply gradient) copy the buffer.
 * `installWasmKernelPatches` replaces them with versions that compute the same float32
 * products but route every matmul to the fast path (explicit transposes, batch folding
 * or a per-batch loop), and slice/gather with heap-view copies. When the optional native
 * addon is built (native.ts), the matmuls go to its multithreaded AVX2 GEMM instead,
 * which reads transposed and batched operands in place. See docs/TRAINING.md for the
 * measurements.
 */
import { createRequire } from 'node:module'
import path from 'node:path'
import * as tf from '@tensorflow/tfjs'
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm'
import { loadNativeKernels } from './native.js'
import { describeAdapter, openWebgpu, type WebgpuAdapterInfo } from './webgpu-node.js'
import { markWasmPatchesInstalled, nativeKernelsSet, setNativeKernels, wasmPatchesInstalled } from './native-state.js'

export { activeNativeKernels, nativeKernelsActive, setNativeKernels } from './native-state.js'

import { BACKEND_ORDER as ORDER, type BackendName, type BackendPreference } from './backend-names.js'

export { BACKEND_CHOICES, type BackendName, type BackendPreference } from './backend-names.js'

export interface SkippedBackend {
  readonly backend: BackendName
  readonly reason: string
}

export interface BackendSelection {
  /** The backend that now runs. */
  readonly backend: BackendName
  /** tfjs's own name for it (`tensorflow`, `webgpu`, `wasm`, `cpu`). */
  readonly tfBackend: string
  /** Better backends that were tried and why they were not used, best first. */
  readonly skipped: readonly SkippedBackend[]
  /** The GPU adapter (webgpu only). */
  readonly adapter?: WebgpuAdapterInfo
  /** Compute threads of the backend where known (wasm: 1 under Node). */
  readonly threads?: number
  /** Kernels replaced by faster equivalents (wasm only). */
  readonly patchedKernels: readonly string[]
  /**
   * The native kernels (multithreaded GEMM and fused ops, wasm only; see native.ts), or why
   * they do not run: `{ isa: 'avx2-fma', threads: 2 }` / `{ reason: 'the native addon is not built ...' }`.
   */
  /** The native kernels in use (with the addon file: a local build or the package's prebuilt one), or why not. */
  readonly native?: { readonly isa: string; readonly threads: number; readonly file?: string; readonly prebuilt?: boolean } | { readonly reason: string }
}

export interface SelectBackendOptions {
  /** When the preferred backend fails, fall back to the next one (default true). */
  readonly fallback?: boolean
  /** Replace slow wasm kernels (default true). */
  readonly patchWasmKernels?: boolean
  /**
   * Run the wasm matmuls and fused ops on the native kernels when the addon is built
   * (default true; the environment variable FLORA_NATIVE=0 also turns them off).
   */
  readonly nativeKernels?: boolean
}

export class BackendUnavailableError extends Error {
  override name = 'BackendUnavailableError'
  constructor(
    message: string,
    readonly skipped: readonly SkippedBackend[],
  ) {
    super(message)
  }
}

/**
 * Select and initialise the fastest available backend, starting at `preferred`
 * ('auto' = the best one) and falling down the order tensorflow-gpu, webgpu, tensorflow,
 * wasm, cpu. Returns what runs and why the ones before it were skipped. Under 'auto',
 * webgpu is taken only on a GPU (a software adapter is skipped, saying so); asked for by
 * name, any adapter will do.
 */
export async function selectBackend(
  preferred: BackendPreference = 'auto',
  options: SelectBackendOptions = {},
): Promise<BackendSelection> {
  const fallback = options.fallback ?? true
  const start = preferred === 'auto' ? 0 : ORDER.indexOf(preferred)
  if (start < 0) throw new BackendUnavailableError(`unknown backend '${String(preferred)}'`, [])
  const candidates = fallback ? ORDER.slice(start) : [ORDER[start]]
  const skipped: SkippedBackend[] = []
  for (const name of candidates) {
    let adapter: WebgpuAdapterInfo | undefined
    try {
      adapter = await activate(name, { requireHardware: preferred === 'auto' })
    } catch (err) {
      skipped.push({ backend: name, reason: err instanceof Error ? err.message : String(err) })
      continue
    }
    // Outside the try: a bad FLORA_THREADS is the user's error, not a reason to fall back.
    const patch = name === 'wasm' && (options.patchWasmKernels ?? true)
    const patchedKernels = patch ? installWasmKernelPatches() : []
    let native: BackendSelection['native']
    if (patch) {
      const loaded = options.nativeKernels === false ? { kernels: undefined, reason: 'turned off by the caller' } : loadNativeKernels()
      setNativeKernels(loaded.kernels)
      native =
        loaded.kernels !== undefined
          ? { ...loaded.kernels.info(), ...(loaded.file != null ? { file: loaded.file, prebuilt: isPrebuilt(loaded.file) } : {}) }
          : { reason: loaded.reason ?? 'unavailable' }
    }
    return {
      backend: name,
      tfBackend: tf.getBackend(),
      skipped,
      ...(adapter !== undefined ? { adapter } : {}),
      threads: name === 'wasm' ? await wasmThreads() : undefined,
      patchedKernels,
      ...(native !== undefined ? { native } : {}),
    }
  }
  throw new BackendUnavailableError(
    skipped.length === 1 ? `${skipped[0].backend}: ${skipped[0].reason}` : `no tfjs backend could be initialised: ${skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ')}`,
    skipped,
  )
}

/** Whether an addon file is one of the package's prebuilt binaries (native/prebuilds/...). */
function isPrebuilt(file: string): boolean {
  return file.split(/[\\/]/).includes('prebuilds')
}

/**
 * One line for logs: `wasm + native avx2-fma x2 threads` (`(prebuilt)` when the package's binary is used), `wasm (1 thread; native kernels
 * off: <why>)`, `tensorflow`.
 */
export function describeBackend(s: BackendSelection): string {
  if (s.native !== undefined && 'isa' in s.native) {
    return `${s.backend} + native ${s.native.isa} x${s.native.threads} thread${s.native.threads === 1 ? '' : 's'}${s.native.prebuilt === true ? ' (prebuilt)' : ''}`
  }
  const extra: string[] = []
  if (s.adapter !== undefined) extra.push(`${describeAdapter(s.adapter)}${s.adapter.software ? ', software renderer' : ''}`)
  if (s.threads !== undefined) extra.push(`${s.threads} thread${s.threads === 1 ? '' : 's'}`)
  if (s.native !== undefined && 'reason' in s.native) extra.push(`native kernels off: ${s.native.reason}`)
  return extra.length > 0 ? `${s.backend} (${extra.join('; ')})` : s.backend
}

/** Make `name` tfjs's backend; for webgpu, returns the adapter it runs on. */
async function activate(name: BackendName, o: { requireHardware: boolean }): Promise<WebgpuAdapterInfo | undefined> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow': {
      const pkg = name === 'tensorflow-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node'
      try {
        // A variable specifier keeps TypeScript and bundlers from requiring the package.
        const specifier: string = pkg
        await import(specifier)
      } catch (err) {
        throw new Error(`${pkg} is not installed or failed to load (${firstLine(err)})`)
      }
      await setBackendOrThrow('tensorflow')
      return undefined
    }
    case 'webgpu': {
      const adapter = await openWebgpu(o)
      // The package registers the backend on import where navigator.gpu exists (openWebgpu sees to that).
      await import('@tensorflow/tfjs-backend-webgpu')
      await setBackendOrThrow('webgpu')
      return adapter
    }
    case 'wasm': {
      configureWasmPaths(await import('@tensorflow/tfjs-backend-wasm'))
      await setBackendOrThrow('wasm')
      return undefined
    }
    case 'cpu':
      await setBackendOrThrow('cpu')
      return undefined
  }
}

async function setBackendOrThrow(tfName: string): Promise<void> {
  if (tf.findBackendFactory(tfName) == null) throw new Error(`tfjs backend '${tfName}' is not registered`)
  const ok = await tf.setBackend(tfName)
  if (!ok) throw new Error(`tfjs backend '${tfName}' failed to initialise`)
  await tf.ready()
}

let wasmPathsSet = false

/** Point the wasm loader at the package's dist folder (it holds the .wasm binaries). */
function configureWasmPaths(wasm: typeof import('@tensorflow/tfjs-backend-wasm')): void {
  if (wasmPathsSet) return
  const dist = path.dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'))
  try {
    wasm.setWasmPaths(dist + path.sep)
  } catch {
    // Already initialised by someone else: its paths evidently worked.
  }
  wasmPathsSet = true
}

async function wasmThreads(): Promise<number> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm')
  try {
    return wasm.getThreadsCount()
  } catch {
    return 1
  }
}

function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err)
  return msg.split('\n')[0]
}

// ---------------------------------------------------------------------------------
// wasm kernel patches
// ---------------------------------------------------------------------------------

type KernelArgs = Parameters<tf.KernelFunc>[0]

/**
 * Replace the wasm BatchMatMul, Slice, GatherV2, Identity and Cast kernels with fast-path
 * versions, and Add, Sub, Multiply and Transpose with ones that hand large float32 work to
 * the native kernels when those are set (setNativeKernels). Idempotent.
 */
export function installWasmKernelPatches(): string[] {
  const patched = ['BatchMatMul', 'Slice', 'GatherV2', 'Identity', 'Cast', 'Add', 'Sub', 'Multiply', 'Transpose']
  if (wasmPatchesInstalled()) return patched
  const matMul = tf.getKernel('BatchMatMul', 'wasm')
  const slice = tf.getKernel('Slice', 'wasm')
  const transpose = tf.getKernel('Transpose', 'wasm')
  const gather = tf.getKernel('GatherV2', 'wasm')
  const identity = tf.getKernel('Identity', 'wasm')
  const cast = tf.getKernel('Cast', 'wasm')
  if (matMul == null || slice == null || transpose == null || gather == null || identity == null || cast == null) return []
  const stockMatMul = matMul.kernelFunc
  const stockSlice = slice.kernelFunc
  const stockTranspose = transpose.kernelFunc
  const stockGather = gather.kernelFunc

  const transposeLast2 = (x: tf.TensorInfo, backend: BackendWasm): tf.TensorInfo => {
    const r = x.shape.length
    const perm = [...Array(r).keys()]
    perm[r - 2] = r - 1
    perm[r - 1] = r - 2
    return stockTranspose({ inputs: { x }, backend, attrs: { perm } }) as tf.TensorInfo
  }

  const fastMatMul = (args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] => {
    const backend = args.backend as BackendWasm
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
    const attrs = args.attrs as { transposeA: boolean; transposeB: boolean }
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) {
      return stockMatMul(args)
    }
    const batchShape = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2))
    const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2))
    const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2))
    const batch = tf.util.sizeFromShape(batchShape)
    // Broadcasting over more than "one side has a single batch" is left to the stock kernel.
    if ((batchA !== batch && batchA !== 1) || (batchB !== batch && batchB !== 1)) return stockMatMul(args)
    const tA = attrs.transposeA
    const tB = attrs.transposeB
    const ra = a.shape.length
    const rb = b.shape.length
    const m = tA ? a.shape[ra - 1] : a.shape[ra - 2]
    const k = tA ? a.shape[ra - 2] : a.shape[ra - 1]
    const kb = tB ? b.shape[rb - 1] : b.shape[rb - 2]
    const n = tB ? b.shape[rb - 2] : b.shape[rb - 1]
    if (k !== kb) return stockMatMul(args) // let the stock kernel raise its error
    const native = nativeKernelsSet()
    if (native !== undefined) {
      // One call, any transposes, no copies: the addon reads the operands in the heap.
      const out = backend.makeOutput([...batchShape, m, n], 'float32')
      native.gemm(
        backend.typedArrayFromHeap(a) as Float32Array,
        backend.typedArrayFromHeap(b) as Float32Array,
        backend.typedArrayFromHeap(out) as Float32Array,
        batch, m, n, k, tA, tB,
        batchA === 1 ? 0 : m * k,
        batchB === 1 ? 0 : k * n,
        false,
      )
      return out
    }
    const sizeA = batchA * m * k
    const sizeB = batchB * k * n
    const sizeC = batch * m * n
    // Plan: compute C = op(A) op(B) with explicit transposes, or C^T = op(B)^T op(A)^T
    // and transpose C; pick whichever moves fewer elements.
    const direct = (tA ? sizeA : 0) + (tB ? sizeB : 0)
    const swapped = (tA ? 0 : sizeA) + (tB ? 0 : sizeB) + sizeC
    let out: tf.TensorInfo
    if (direct <= swapped) {
      const a2 = tA ? transposeLast2(a, backend) : a
      const b2 = tB ? transposeLast2(b, backend) : b
      out = plainMatMul(a2, b2, m, k, n, batchA, batchB, batch, backend)
      if (a2 !== a) backend.disposeData(a2.dataId)
      if (b2 !== b) backend.disposeData(b2.dataId)
    } else {
      const bT = tB ? b : transposeLast2(b, backend)
      const aT = tA ? a : transposeLast2(a, backend)
      const cT = plainMatMul(bT, aT, n, k, m, batchB, batchA, batch, backend)
      if (bT !== b) backend.disposeData(bT.dataId)
      if (aT !== a) backend.disposeData(aT.dataId)
      out = transposeLast2(cT, backend)
      backend.disposeData(cT.dataId)
    }
    return { dataId: out.dataId, dtype: out.dtype, shape: [...batchShape, m, n] }
  }

  /** [batchA|1, m, k] @ [batchB|1, k, n] with no transposes, only through the fast path. */
  const plainMatMul = (
    a: tf.TensorInfo,
    b: tf.TensorInfo,
    m: number,
    k: number,
    n: number,
    batchA: number,
    batchB: number,
    batch: number,
    backend: BackendWasm,
  ): tf.TensorInfo => {
    const stock = (x: tf.TensorInfo, y: tf.TensorInfo): tf.TensorInfo =>
      stockMatMul({ inputs: { a: x, b: y }, backend, attrs: { transposeA: false, transposeB: false } }) as tf.TensorInfo
    if (batchB === 1) {
      // One shared right operand: fold the batch into the rows, one big product.
      const res = stock(
        { dataId: a.dataId, dtype: a.dtype, shape: [1, batchA * m, k] },
        { dataId: b.dataId, dtype: b.dtype, shape: [1, k, n] },
      )
      if (batchA === batch) return res
      // a had a single batch but the output has `batch` copies (b broadcast too): cannot happen
      // since batchB === 1 implies batch === batchA.
      return res
    }
    const out = backend.makeOutput([batch, m, n], 'float32')
    for (let i = 0; i < batch; i++) {
      const ai = batchA === 1 ? { dataId: a.dataId, dtype: a.dtype, shape: [1, m, k] } : copyRange(a, i * m * k, [1, m, k], backend)
      const bi = copyRange(b, i * k * n, [1, k, n], backend)
      const ci = stock(ai, bi)
      // Fresh views after every allocation: heap growth detaches old ones.
      backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(ci), i * m * n)
      if (ai.dataId !== a.dataId) backend.disposeData(ai.dataId)
      backend.disposeData(bi.dataId)
      backend.disposeData(ci.dataId)
    }
    return out
  }

  const copyRange = (x: tf.TensorInfo, offset: number, shape: number[], backend: BackendWasm): tf.TensorInfo => {
    const out = backend.makeOutput(shape, x.dtype)
    const size = tf.util.sizeFromShape(shape)
    backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(x).subarray(offset, offset + size))
    return out
  }

  const fastSlice = (args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] => {
    const backend = args.backend as BackendWasm
    const { x } = args.inputs as { x: tf.TensorInfo }
    const attrs = args.attrs as { begin: number | number[]; size: number | number[] }
    if (x.dtype === 'string') return stockSlice(args)
    const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, attrs.begin, attrs.size)
    const out = backend.makeOutput(size, x.dtype)
    const count = tf.util.sizeFromShape(size)
    if (count === 0) return out
    const src = backend.typedArrayFromHeap(x)
    const dst = backend.typedArrayFromHeap(out)
    const strides = tf.util.computeStrides(x.shape)
    if (tf.slice_util.isSliceContinous(x.shape, begin, size)) {
      const off = tf.slice_util.computeFlatOffset(begin, strides)
      dst.set(src.subarray(off, off + count))
      return out
    }
    // General case: copy contiguous runs of the innermost dimension.
    const rank = x.shape.length
    const inner = size[rank - 1]
    const outer = count / inner
    const idx = new Array<number>(rank - 1).fill(0)
    for (let o = 0; o < outer; o++) {
      let off = begin[rank - 1]
      for (let d = 0; d < rank - 1; d++) off += (begin[d] + idx[d]) * strides[d]
      dst.set(src.subarray(off, off + inner), o * inner)
      for (let d = rank - 2; d >= 0; d--) {
        if (++idx[d] < size[d]) break
        idx[d] = 0
      }
    }
    return out
  }

  /** Row gather (axis 0, no batch dims): one heap copy per index instead of the per-element C++ loop. */
  const fastGather = (args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] => {
    const backend = args.backend as BackendWasm
    const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo }
    const attrs = args.attrs as { axis: number; batchDims: number }
    const axis = tf.util.parseAxisParam(attrs.axis, x.shape)[0]
    if (axis !== 0 || (attrs.batchDims ?? 0) !== 0 || x.dtype === 'string' || x.dtype === 'complex64' || indices.dtype !== 'int32') {
      return stockGather(args)
    }
    const rows = x.shape[0]
    const rowSize = tf.util.sizeFromShape(x.shape.slice(1))
    const count = tf.util.sizeFromShape(indices.shape)
    const idx = (backend.typedArrayFromHeap(indices) as Int32Array).slice()
    for (let i = 0; i < count; i++) {
      if (!(idx[i] >= 0 && idx[i] < rows)) throw new Error(`GatherV2: the index value ${idx[i]} is not in [0, ${rows - 1}]`)
    }
    const out = backend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype)
    const src = backend.typedArrayFromHeap(x)
    const dst = backend.typedArrayFromHeap(out)
    for (let i = 0; i < count; i++) dst.set(src.subarray(idx[i] * rowSize, (idx[i] + 1) * rowSize), i * rowSize)
    return out
  }

  /**
   * Identity shares the buffer (reference count) instead of copying it, as the cpu backend
   * does. tfjs clones every input it saves for the backward pass, so the copying stock
   * kernel moves each activation once more per training step. Tensors are immutable
   * (variables re-point, never write in place), so sharing is safe.
   */
  const sharedIdentity = (args: KernelArgs): tf.TensorInfo => {
    const backend = args.backend as BackendWasm
    const { x } = args.inputs as { x: tf.TensorInfo }
    if (x.dtype === 'string') return identity.kernelFunc(args) as tf.TensorInfo
    backend.incRef(x.dataId)
    return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype }
  }

  /** Cast to the dtype a tensor already has (every Multiply gradient does it) shares too. */
  const sameTypeCast = (args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] => {
    const { x } = args.inputs as { x: tf.TensorInfo }
    if (x.dtype !== (args.attrs as { dtype: tf.DataType }).dtype) return cast.kernelFunc(args)
    return sharedIdentity(args)
  }

  // Element-wise Add/Sub/Multiply of same-shape (or scalar) float32 tensors and attention's
  // [0, 2, 1, 3] transpose run on the native kernels' threads when those are active; small
  // tensors stay on wasm (a native call costs a few microseconds).
  const NATIVE_MIN = 32768
  const binaryOps = [['Add', 0], ['Sub', 1], ['Multiply', 2]] as const
  const binaryKernels = binaryOps.map(([name, op]) => {
    const stock = tf.getKernel(name, 'wasm')
    if (stock === undefined) throw new Error(`wasm kernel ${name} is missing`)
    const kernelFunc = (args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] => {
      const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
      const n = tf.util.sizeFromShape(a.shape)
      const native = nativeKernelsSet()
      if (native === undefined || a.dtype !== 'float32' || b.dtype !== 'float32' || n < NATIVE_MIN) return stock.kernelFunc(args)
      const nb = tf.util.sizeFromShape(b.shape)
      let x = a
      let y = b
      if (!(nb === 1 || tf.util.arraysEqual(a.shape, b.shape))) {
        // a scalar a: commute Add/Multiply; anything else broadcasts on wasm
        if (op === 1 || tf.util.sizeFromShape(a.shape) !== 1) return stock.kernelFunc(args)
        x = b
        y = a
      }
      const backend = args.backend as BackendWasm
      const out = backend.makeOutput([...x.shape], 'float32')
      native.binary(op, backend.typedArrayFromHeap(x) as Float32Array, backend.typedArrayFromHeap(y) as Float32Array, backend.typedArrayFromHeap(out) as Float32Array, tf.util.sizeFromShape(x.shape))
      return out
    }
    return { ...stock, kernelFunc }
  })
  const fastTranspose = (args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] => {
    const { x } = args.inputs as { x: tf.TensorInfo }
    const perm = (args.attrs as { perm: number[] }).perm
    const native = nativeKernelsSet()
    if (native === undefined || x.dtype !== 'float32' || x.shape.length !== 4 || perm.join() !== '0,2,1,3' || tf.util.sizeFromShape(x.shape) < NATIVE_MIN) {
      return stockTranspose(args)
    }
    const backend = args.backend as BackendWasm
    const [d0, d1, d2, d3] = x.shape
    const out = backend.makeOutput([d0, d2, d1, d3], 'float32')
    native.transpose0213(backend.typedArrayFromHeap(x) as Float32Array, backend.typedArrayFromHeap(out) as Float32Array, d0, d1, d2, d3)
    return out
  }

  for (const k of binaryKernels) {
    tf.unregisterKernel(k.kernelName, 'wasm')
    tf.registerKernel(k)
  }
  tf.unregisterKernel('Transpose', 'wasm')
  tf.registerKernel({ ...transpose, kernelFunc: fastTranspose })
  tf.unregisterKernel('Cast', 'wasm')
  tf.registerKernel({ ...cast, kernelFunc: sameTypeCast })
  tf.unregisterKernel('Identity', 'wasm')
  tf.registerKernel({ ...identity, kernelFunc: sharedIdentity })
  tf.unregisterKernel('GatherV2', 'wasm')
  tf.registerKernel({ ...gather, kernelFunc: fastGather })
  tf.unregisterKernel('BatchMatMul', 'wasm')
  tf.registerKernel({ ...matMul, kernelFunc: fastMatMul })
  tf.unregisterKernel('Slice', 'wasm')
  tf.registerKernel({ ...slice, kernelFunc: fastSlice })
  markWasmPatchesInstalled()
  return patched
}
