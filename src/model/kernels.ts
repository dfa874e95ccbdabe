/**
 * Fused element-wise kernels in plain JS for the wasm and cpu backends.
 *
 * On these backends every tfjs op is a separate pass over memory (and the wasm
 * element-wise kernels are scalar C++), so a chain like RMSNorm's square, mean, add,
 * rsqrt, mul, mul, and its autodiff backward of twice as many ops, costs far more than one
 * JS loop over the same data. Each kernel here is one pass, forward and backward, and is
 * checked against the plain tf-op formulation in the tests (llama.ts keeps that
 * formulation for the other backends). When the native addon runs (native.ts), the same
 * passes run there instead, vectorised and split by rows over all cores.
 *
 *   rope:     y1 = x1 c1 - x2 s1,  y2 = x2 c2 + x1 s2            (x = [x1, x2] halves)
 *             dx1 = dy1 c1 + dy2 s2,  dx2 = dy2 c2 - dy1 s1
 *   rmsnorm:  r = 1 / sqrt(mean(x^2) + eps),  y = x r w
 *             dx = r (w dy) - x r^3 mean(x w dy)                 (w frozen: no dw)
 *   softmax:  y = softmax(scale x) over keys j <= i (query i = row % T), 0 above (causal mask)
 *             dx = scale y (dy - sum(dy y))
 *   swiglu:   h = g s u,  s = sigmoid(g);   du = dy g s,  dg = dy u s (1 + g (1 - s))
 *   xent:     loss = mean_i (logsumexp(z_i) - z_i[t_i]),  dz_i = (softmax(z_i) - onehot(t_i)) / M
 */
import * as tf from '@tensorflow/tfjs'
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm'
import { activeNativeKernels } from './native-state.js'
import type { NativeFrozenHandle, NativeKernels } from './native.js'

const ROPE = 'FloraRope'
const RMS_NORM = 'FloraRmsNorm'
const RMS_NORM_GRAD = 'FloraRmsNormGrad'
const CROSS_ENTROPY = 'FloraCrossEntropy'
const CAUSAL_SOFTMAX = 'FloraCausalSoftmax'
const CAUSAL_SOFTMAX_GRAD = 'FloraCausalSoftmaxGrad'
const ATTENTION = 'FloraAttention'
const ATTENTION_GRAD = 'FloraAttentionGrad'
const SWIGLU = 'FloraSwiglu'
const SWIGLU_GRAD = 'FloraSwigluGrad'
const FROZEN_MATMUL = 'FloraFrozenMatMul'
const BACKENDS = ['wasm', 'cpu'] as const

type KernelArgs = Parameters<tf.KernelFunc>[0]

/** Read access to inputs and a fresh float32 output, per backend. */
interface Io {
  input(t: tf.TensorInfo): Float32Array
  inputInt32(t: tf.TensorInfo): Int32Array
  output(shape: number[]): { info: tf.TensorInfo; values: Float32Array }
}

function io(backendName: string, backend: object): Io {
  if (backendName === 'wasm') {
    const b = backend as BackendWasm
    return {
      // Views into the wasm heap: valid until the next allocation, so outputs are made first.
      input: (t) => b.typedArrayFromHeap(t) as Float32Array,
      inputInt32: (t) => b.typedArrayFromHeap(t) as Int32Array,
      output: (shape) => {
        const info = b.makeOutput(shape, 'float32')
        return { info, values: b.typedArrayFromHeap(info) as Float32Array }
      },
    }
  }
  const b = backend as { readSync(dataId: object): unknown; makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo }
  return {
    input: (t) => b.readSync(t.dataId) as Float32Array,
    inputInt32: (t) => b.readSync(t.dataId) as Int32Array,
    output: (shape) => {
      const values = new Float32Array(shape.reduce((a, d) => a * d, 1))
      return { info: b.makeTensorInfo(shape, 'float32', values), values }
    },
  }
}

let registered = false

/** What a frozen weight held by the native addon passes to its product kernel (frozen-weight.ts). */
export interface FrozenMatMulAttrs {
  readonly kernels: NativeKernels
  readonly handle: NativeFrozenHandle
  /** W is [rows, cols] (HF [out, in]). */
  readonly rows: number
  readonly cols: number
  /** false: y = x W^T; true: y = x W (the input gradient). */
  readonly transposed: boolean
}

/**
 * x [m, k] times a frozen weight held by the native addon, as a backend kernel: on wasm it
 * reads x and writes y in the heap in place, so no activation is copied out and back.
 */
export function frozenWeightMatMul(x: tf.Tensor2D, attrs: FrozenMatMulAttrs): tf.Tensor2D {
  registerFusedKernels()
  return tf.engine().runKernel(FROZEN_MATMUL, { x }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D
}

function registerFusedKernels(): void {
  if (registered) return
  registered = true
  for (const backendName of BACKENDS) {
    tf.registerKernel({
      kernelName: FROZEN_MATMUL,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { x } = args.inputs as { x: tf.TensorInfo }
        const a = args.attrs as unknown as FrozenMatMulAttrs
        const m = x.shape[0]
        const k = io(backendName, args.backend)
        const { info, values: y } = k.output([m, a.transposed ? a.cols : a.rows])
        a.kernels.frozenMatMul(a.handle, k.input(x), y, m, a.transposed)
        return info
      },
    })
    tf.registerKernel({
      kernelName: ROPE,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { x, cos, sin } = args.inputs as { x: tf.TensorInfo; cos: tf.TensorInfo; sin: tf.TensorInfo }
        const transposed = (args.attrs as { transposed: boolean }).transposed
        const k = io(backendName, args.backend)
        const { info, values: y } = k.output(x.shape)
        const native = nativeFor(backendName)
        if (native !== undefined) {
          const r = x.shape.length
          const hd = x.shape[r - 1]
          native.rope(k.input(x), k.input(cos), k.input(sin), y, tf.util.sizeFromShape(x.shape) / hd, x.shape[r - 3], x.shape[r - 2], hd, transposed)
        } else {
          ropeLoop(k.input(x), k.input(cos), k.input(sin), y, x.shape, transposed)
        }
        return info
      },
    })
    tf.registerKernel({
      kernelName: RMS_NORM,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { x, w } = args.inputs as { x: tf.TensorInfo; w: tf.TensorInfo }
        const eps = (args.attrs as { eps: number }).eps
        const k = io(backendName, args.backend)
        const { info, values: y } = k.output(x.shape)
        const xs = k.input(x)
        const ws = k.input(w)
        const d = x.shape[x.shape.length - 1]
        const native = nativeFor(backendName)
        if (native !== undefined) {
          native.rmsNorm(xs, ws, y, xs.length / d, d, eps)
          return info
        }
        for (let o = 0; o < xs.length; o += d) {
          let ss = 0
          for (let j = 0; j < d; j++) ss += xs[o + j] * xs[o + j]
          const r = 1 / Math.sqrt(ss / d + eps)
          for (let j = 0; j < d; j++) y[o + j] = xs[o + j] * r * ws[j]
        }
        return info
      },
    })
    tf.registerKernel({
      kernelName: RMS_NORM_GRAD,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { dy, x, w } = args.inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; w: tf.TensorInfo }
        const eps = (args.attrs as { eps: number }).eps
        const k = io(backendName, args.backend)
        const { info, values: dx } = k.output(x.shape)
        const xs = k.input(x)
        const ws = k.input(w)
        const g = k.input(dy)
        const d = x.shape[x.shape.length - 1]
        const native = nativeFor(backendName)
        if (native !== undefined) {
          native.rmsNormGrad(g, xs, ws, dx, xs.length / d, d, eps)
          return info
        }
        for (let o = 0; o < xs.length; o += d) {
          let ss = 0
          let dot = 0
          for (let j = 0; j < d; j++) {
            ss += xs[o + j] * xs[o + j]
            dot += xs[o + j] * ws[j] * g[o + j]
          }
          const r = 1 / Math.sqrt(ss / d + eps)
          const c = (r * r * r * dot) / d
          for (let j = 0; j < d; j++) dx[o + j] = r * ws[j] * g[o + j] - xs[o + j] * c
        }
        return info
      },
    })
    tf.registerKernel({
      kernelName: CAUSAL_SOFTMAX,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { x } = args.inputs as { x: tf.TensorInfo }
        const scale = (args.attrs as { scale: number }).scale
        const k = io(backendName, args.backend)
        const { info, values: y } = k.output(x.shape)
        causalSoftmaxLoop(k.input(x), y, x.shape[x.shape.length - 1], scale)
        return info
      },
    })
    tf.registerKernel({
      kernelName: CAUSAL_SOFTMAX_GRAD,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { dy, y } = args.inputs as { dy: tf.TensorInfo; y: tf.TensorInfo }
        const scale = (args.attrs as { scale: number }).scale
        const k = io(backendName, args.backend)
        const { info, values: dx } = k.output(y.shape)
        const g = k.input(dy)
        const ys = k.input(y)
        const t = y.shape[y.shape.length - 1]
        for (let o = 0; o < ys.length; o += t) {
          const n = ((o / t) % t) + 1
          let dot = 0
          for (let j = 0; j < n; j++) dot += g[o + j] * ys[o + j]
          for (let j = 0; j < n; j++) dx[o + j] = scale * ys[o + j] * (g[o + j] - dot)
          dx.fill(0, o + n, o + t)
        }
        return info
      },
    })
    tf.registerKernel({
      kernelName: ATTENTION,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { q, k, v } = args.inputs as { q: tf.TensorInfo; k: tf.TensorInfo; v: tf.TensorInfo }
        const scale = (args.attrs as { scale: number }).scale
        const native = requireNative(backendName)
        const [b, t, h, hd] = q.shape
        const kv = k.shape[2]
        const x = io(backendName, args.backend)
        const out = x.output(q.shape)
        const probs = x.output([b, h, t, t])
        native.attention(x.input(q), x.input(k), x.input(v), x.input(out.info), x.input(probs.info), b, t, h, kv, hd, scale)
        return [out.info, probs.info]
      },
    })
    tf.registerKernel({
      kernelName: ATTENTION_GRAD,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { dy, q, k, v, probs } = args.inputs as Record<'dy' | 'q' | 'k' | 'v' | 'probs', tf.TensorInfo>
        const scale = (args.attrs as { scale: number }).scale
        const native = requireNative(backendName)
        const [b, t, h, hd] = q.shape
        const kv = k.shape[2]
        const x = io(backendName, args.backend)
        const dq = x.output(q.shape)
        const dk = x.output(k.shape)
        const dv = x.output(v.shape)
        native.attentionGrad(
          x.input(dy), x.input(q), x.input(k), x.input(v), x.input(probs),
          x.input(dq.info), x.input(dk.info), x.input(dv.info),
          b, t, h, kv, hd, scale,
        )
        return [dq.info, dk.info, dv.info]
      },
    })
    tf.registerKernel({
      kernelName: SWIGLU,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { g, u } = args.inputs as { g: tf.TensorInfo; u: tf.TensorInfo }
        const k = io(backendName, args.backend)
        const { info, values: h } = k.output(g.shape)
        const gs = k.input(g)
        const us = k.input(u)
        const native = nativeFor(backendName)
        if (native !== undefined) {
          native.swiglu(gs, us, h, h.length)
          return info
        }
        for (let i = 0; i < h.length; i++) {
          const s = 1 / (1 + Math.exp(-gs[i]))
          h[i] = gs[i] * s * us[i]
        }
        return info
      },
    })
    tf.registerKernel({
      kernelName: SWIGLU_GRAD,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { dy, g, u } = args.inputs as { dy: tf.TensorInfo; g: tf.TensorInfo; u: tf.TensorInfo }
        const k = io(backendName, args.backend)
        const dgOut = k.output(g.shape)
        const duOut = k.output(g.shape)
        const wasm = backendName === 'wasm'
        const dg = wasm ? k.input(dgOut.info) : dgOut.values
        const du = wasm ? k.input(duOut.info) : duOut.values
        const d = k.input(dy)
        const gs = k.input(g)
        const us = k.input(u)
        const native = wasm ? nativeFor(backendName) : undefined
        if (native !== undefined) {
          native.swigluGrad(d, gs, us, dg, du, dg.length)
        } else {
          for (let i = 0; i < dg.length; i++) {
            const s = 1 / (1 + Math.exp(-gs[i]))
            du[i] = d[i] * gs[i] * s
            dg[i] = d[i] * us[i] * s * (1 + gs[i] * (1 - s))
          }
        }
        return [dgOut.info, duOut.info]
      },
    })
    tf.registerKernel({
      kernelName: CROSS_ENTROPY,
      backendName,
      kernelFunc: (args: KernelArgs) => {
        const { logits, targets } = args.inputs as { logits: tf.TensorInfo; targets: tf.TensorInfo }
        const withGrad = (args.attrs as { withGrad: boolean }).withGrad
        const [m, v] = logits.shape
        const k = io(backendName, args.backend)
        const lossOut = k.output([])
        const gradOut = withGrad ? k.output([m, v]) : undefined
        // Views after every allocation (wasm heap growth detaches older ones).
        const wasm = backendName === 'wasm'
        const z = k.input(logits)
        const t = k.inputInt32(targets)
        const grad = gradOut === undefined ? null : wasm ? k.input(gradOut.info) : gradOut.values
        const native = wasm ? nativeFor(backendName) : undefined
        const loss = native !== undefined ? native.crossEntropy(z, t, grad, m, v) : crossEntropyLoop(z, t, grad, m, v)
        ;(wasm ? k.input(lossOut.info) : lossOut.values)[0] = loss
        return gradOut === undefined ? [lossOut.info] : [lossOut.info, gradOut.info]
      },
    })
  }
}

/** The native kernels when they serve this backend's fused ops (wasm only), else undefined. */
function nativeFor(backendName: string): NativeKernels | undefined {
  return backendName === 'wasm' ? activeNativeKernels() : undefined
}

function requireNative(backendName: string): NativeKernels {
  const native = nativeFor(backendName)
  if (native === undefined) throw new Error('the fused attention kernel runs only on the native kernels (compute path native)')
  return native
}

function causalSoftmaxLoop(x: Float32Array, y: Float32Array, t: number, scale: number): void {
  for (let o = 0; o < x.length; o += t) {
    const n = ((o / t) % t) + 1
    let max = -Infinity
    for (let j = 0; j < n; j++) if (x[o + j] > max) max = x[o + j]
    let sum = 0
    for (let j = 0; j < n; j++) {
      const e = Math.exp(scale * (x[o + j] - max))
      y[o + j] = e
      sum += e
    }
    for (let j = 0; j < n; j++) y[o + j] /= sum
    y.fill(0, o + n, o + t) // outputs are not zeroed on wasm
  }
}

/** The cross-entropy pass in JS (also the trainer's path on the TensorFlow backends). */
export function crossEntropyLoop(z: Float32Array, targets: Int32Array, grad: Float32Array | null, m: number, v: number): number {
  let total = 0
  for (let i = 0; i < m; i++) {
    const t = targets[i]
    if (!(t >= 0 && t < v)) throw new RangeError(`cross-entropy: target ${t} is outside [0, ${v})`)
    const o = i * v
    let max = -Infinity
    for (let j = 0; j < v; j++) if (z[o + j] > max) max = z[o + j]
    let sum = 0
    if (grad === null) {
      for (let j = 0; j < v; j++) sum += Math.exp(z[o + j] - max)
    } else {
      for (let j = 0; j < v; j++) {
        const e = Math.exp(z[o + j] - max)
        grad[o + j] = e
        sum += e
      }
      const scale = 1 / (sum * m)
      for (let j = 0; j < v; j++) grad[o + j] *= scale
      grad[o + t] -= 1 / m
    }
    total += Math.log(sum) + max - z[o + t]
  }
  return m === 0 ? 0 : total / m
}

/** x [..., T, H, hd] (positions on axis -3), tables [T, hd]. */
function ropeLoop(x: Float32Array, cos: Float32Array, sin: Float32Array, y: Float32Array, shape: readonly number[], transposed: boolean): void {
  const r = shape.length
  const hd = shape[r - 1]
  const heads = shape[r - 2]
  const t = shape[r - 3]
  const half = hd / 2
  const rows = x.length / hd
  for (let row = 0; row < rows; row++) {
    const p = Math.floor(row / heads) % t
    const o = row * hd
    const to = p * hd
    for (let j = 0; j < half; j++) {
      const x1 = x[o + j]
      const x2 = x[o + half + j]
      const c1 = cos[to + j]
      const c2 = cos[to + half + j]
      const s1 = sin[to + j]
      const s2 = sin[to + half + j]
      if (transposed) {
        y[o + j] = x1 * c1 + x2 * s2
        y[o + half + j] = x2 * c2 - x1 * s1
      } else {
        y[o + j] = x1 * c1 - x2 * s1
        y[o + half + j] = x2 * c2 + x1 * s2
      }
    }
  }
}

/** Whether the fused kernels run on the active backend. */
export function fusedKernelsAvailable(): boolean {
  registerFusedKernels()
  return (BACKENDS as readonly string[]).includes(tf.getBackend())
}

/**
 * How a model computes its element-wise ops and attention, chosen once when the model is
 * made (LlamaModelOptions.compute) rather than looked up on every call:
 * - 'native': the fused kernels, on the native addon, plus its one-kernel causal attention;
 * - 'fused': the fused kernels below (RMSNorm, RoPE, SwiGLU, causal softmax, cross-entropy);
 * - 'stock': tfjs ops only (the TensorFlow backends, or to check the fused kernels against).
 * All three give the same results within float32 rounding (tests hold them equal).
 */
export type ComputePath = 'native' | 'fused' | 'stock'

const COMPUTE_RANK: Record<ComputePath, number> = { stock: 0, fused: 1, native: 2 }

/** The fastest compute path the active backend offers. */
export function availableComputePath(): ComputePath {
  if (!fusedKernelsAvailable()) return 'stock'
  return activeNativeKernels() !== undefined ? 'native' : 'fused'
}

/** `wanted` if the active backend can run it (else a clear error); the fastest available when undefined. */
export function resolveComputePath(wanted: ComputePath | undefined): ComputePath {
  const available = availableComputePath()
  if (wanted === undefined) return available
  if (COMPUTE_RANK[wanted] > COMPUTE_RANK[available]) {
    const why = wanted === 'native' ? 'needs the native kernels on the wasm backend (npm run build:native)' : 'needs the wasm or cpu backend'
    throw new Error(`compute path '${wanted}' ${why}; the ${tf.getBackend()} backend offers '${available}'`)
  }
  return wanted
}

/** RoPE on x [B, T, H, hd] with cos/sin tables [T, hd] (fused; see fusedKernelsAvailable). */
export function fusedRope(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D {
  const f = tf.customGrad((...args) => {
    const xIn = args[0] as tf.Tensor4D
    const save = args[1] as tf.GradSaveFunc
    save([cos, sin])
    return {
      value: tf.engine().runKernel(ROPE, { x: xIn, cos, sin }, { transposed: false }) as tf.Tensor4D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(ROPE, { x: dy, cos: saved[0], sin: saved[1] }, { transposed: true }) as tf.Tensor,
    }
  })
  return f(x) as tf.Tensor4D
}

/** RMSNorm over the last axis with a frozen weight (fused; see fusedKernelsAvailable). */
export function fusedRmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  const f = tf.customGrad((...args) => {
    const xIn = args[0] as tf.Tensor2D
    const save = args[1] as tf.GradSaveFunc
    save([xIn, w])
    return {
      value: tf.engine().runKernel(RMS_NORM, { x: xIn, w }, { eps }) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(RMS_NORM_GRAD, { dy, x: saved[0], w: saved[1] }, { eps }) as tf.Tensor,
    }
  })
  return f(x) as tf.Tensor2D
}

/**
 * Causally masked softmax of attention scores [..., T, T] with the 1/sqrt(hd) scale folded
 * in (fused; see fusedKernelsAvailable): row r is the query at position r % T. Replaces
 * scale, mask add and softmax, and their backward ops, by one pass each way. (With the
 * native kernels the whole attention is one kernel instead: fusedAttention.)
 */
export function fusedCausalSoftmax<T extends tf.Tensor>(scores: T, scale: number): T {
  const f = tf.customGrad((...args) => {
    const x = args[0] as tf.Tensor
    const save = args[1] as tf.GradSaveFunc
    const y = tf.engine().runKernel(CAUSAL_SOFTMAX, { x }, { scale }) as tf.Tensor
    save([y])
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(CAUSAL_SOFTMAX_GRAD, { dy, y: saved[0] }, { scale }) as tf.Tensor,
    }
  })
  return f(scores) as T
}

/**
 * Causal (GQA) attention straight on the projections' layout, forward and backward in one
 * native kernel each: q [B, T, H, hd], k, v [B, T, KV, hd] -> [B, T, H, hd], query head h
 * reading kv head floor(h / (H / KV)). Replaces the head transposes, both batched products,
 * the softmax and all their gradients, and skips the keys a causal query cannot see.
 */
export function fusedAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number): tf.Tensor4D {
  const f = tf.customGrad((...args) => {
    const [qIn, kIn, vIn] = args as tf.Tensor4D[]
    const save = args[3] as unknown as tf.GradSaveFunc
    const [out, probs] = tf.engine().runKernel(ATTENTION, { q: qIn, k: kIn, v: vIn }, { scale }) as tf.Tensor[]
    save([qIn, kIn, vIn, probs])
    return {
      value: out as tf.Tensor4D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(ATTENTION_GRAD, { dy, q: saved[0], k: saved[1], v: saved[2], probs: saved[3] }, { scale }) as tf.Tensor[],
    }
  })
  return f(q, k, v) as tf.Tensor4D
}

/** SwiGLU's gate: silu(g) * u for same-shape g, u (fused; see fusedKernelsAvailable). */
export function fusedSwiglu(g: tf.Tensor2D, u: tf.Tensor2D): tf.Tensor2D {
  const f = tf.customGrad((...args) => {
    const gIn = args[0] as tf.Tensor2D
    const uIn = args[1] as tf.Tensor2D
    const save = args[2] as tf.GradSaveFunc
    save([gIn, uIn])
    return {
      value: tf.engine().runKernel(SWIGLU, { g: gIn, u: uIn }, {}) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(SWIGLU_GRAD, { dy, g: saved[0], u: saved[1] }, {}) as tf.Tensor[],
    }
  })
  return f(g, u) as tf.Tensor2D
}

/**
 * Mean cross-entropy of logits [M, V] against int32 targets [M] (fused; see
 * fusedKernelsAvailable), with its gradient saved in the same pass when `withGrad`.
 */
export function fusedCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D, withGrad: boolean): tf.Scalar {
  const f = tf.customGrad((...args) => {
    const z = args[0] as tf.Tensor2D
    const save = args[1] as tf.GradSaveFunc
    const outs = tf.engine().runKernel(CROSS_ENTROPY, { logits: z, targets }, { withGrad }) as tf.Tensor[]
    if (withGrad) save([outs[1]])
    return {
      value: outs[0] as tf.Scalar,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => saved[0].mul(dy),
    }
  })
  return f(logits) as tf.Scalar
}

/**
 * The fused kernels' forward and backward passes as plain calls, outside any gradient tape:
 * for code that writes a whole layer's backward pass itself (layer-grad.ts), so that only
 * what that backward pass needs is kept alive, not every intermediate tensor.
 */
export const fusedKernelCalls = {
  rope(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D, transposed: boolean): tf.Tensor4D {
    registerFusedKernels()
    return tf.engine().runKernel(ROPE, { x, cos, sin }, { transposed }) as tf.Tensor4D
  },
  rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
    registerFusedKernels()
    return tf.engine().runKernel(RMS_NORM, { x, w }, { eps }) as tf.Tensor2D
  },
  rmsNormGrad(dy: tf.Tensor2D, x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
    return tf.engine().runKernel(RMS_NORM_GRAD, { dy, x, w }, { eps }) as tf.Tensor2D
  },
  /** [output, probabilities] of causal GQA attention (native kernels only). */
  attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number): [tf.Tensor4D, tf.Tensor] {
    registerFusedKernels()
    return tf.engine().runKernel(ATTENTION, { q, k, v }, { scale }) as [tf.Tensor4D, tf.Tensor]
  },
  /** [dq, dk, dv]. */
  attentionGrad(dy: tf.Tensor4D, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, probs: tf.Tensor, scale: number): [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D] {
    return tf.engine().runKernel(ATTENTION_GRAD, { dy, q, k, v, probs }, { scale }) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D]
  },
  swiglu(g: tf.Tensor2D, u: tf.Tensor2D): tf.Tensor2D {
    registerFusedKernels()
    return tf.engine().runKernel(SWIGLU, { g, u }, {}) as tf.Tensor2D
  },
  /** [dg, du]. */
  swigluGrad(dy: tf.Tensor2D, g: tf.Tensor2D, u: tf.Tensor2D): [tf.Tensor2D, tf.Tensor2D] {
    return tf.engine().runKernel(SWIGLU_GRAD, { dy, g, u }, {}) as [tf.Tensor2D, tf.Tensor2D]
  },
}
