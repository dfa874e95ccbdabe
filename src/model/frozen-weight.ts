/**
 * A linear layer's frozen base weight W [out, in] kept by the native addon, out of the JS
 * and wasm heaps, in the narrowest precision that holds its values exactly: bf16 or f16
 * bits when every value is one (a checkpoint stored in BF16/F16 decodes to such values),
 * float32 otherwise. The forward product x W^T and the input gradient dy W run in the
 * addon, widening half-precision values exactly as they are packed, so they equal the
 * float32 products of the same values bit for bit (the addon's GEMM is deterministic).
 * The frozen weights need no gradient. Values written later (a merge) are stored exactly
 * too: in float32 where they are not half-precision values.
 *
 * This lifts the wasm backend's 4 GiB ceiling for the base model's non-adapted layers and
 * halves their memory for BF16/F16 checkpoints (src/model/llama.ts decides which layers).
 * The products run as a backend kernel (kernels.ts, FloraFrozenMatMul) that reads and
 * writes the wasm heap in place.
 */
import * as tf from '@tensorflow/tfjs'
import { frozenWeightMatMul } from './kernels.js'
import type { NativeFrozenHandle, NativeKernels } from './native.js'

export type FrozenDtype = 'f32' | 'bf16' | 'f16'

/** A tensor's half-precision bits as stored in a checkpoint (little-endian u16 per value). */
export interface HalfBits {
  readonly dtype: 'bf16' | 'f16'
  readonly bits: Uint16Array
}

const DTYPE_CODE: Record<FrozenDtype, 0 | 1 | 2> = { f32: 0, bf16: 1, f16: 2 }

/** The float32 value's bits as IEEE binary16 when it is exactly one, else undefined. */
function f16Bits(bits: number): number | undefined {
  const sign = (bits >>> 16) & 0x8000
  const exp = (bits >>> 23) & 0xff
  const man = bits & 0x7fffff
  if (exp === 0 && man === 0) return sign
  if (exp === 0xff) return man === 0 ? sign | 0x7c00 : undefined // infinities; NaNs stay float32
  const e = exp - 127
  if (e >= -14 && e <= 15) return (man & 0x1fff) === 0 ? sign | ((e + 15) << 10) | (man >>> 13) : undefined
  if (e >= -24 && e < -14) {
    // subnormal half: (1.man) * 2^e = m * 2^-24 with an integer m < 1024
    const shift = -14 - e // 1..10
    const full = 0x800000 | man
    const drop = 13 + shift
    return (full & ((1 << drop) - 1)) === 0 ? sign | (full >>> drop) : undefined
  }
  return undefined
}

/** The narrowest exact storage of `values`: bf16 or f16 bits when every value fits, else float32. */
export function losslessStorage(values: Float32Array): { dtype: FrozenDtype; data: Float32Array | Uint16Array } {
  const u32 = new Uint32Array(values.buffer, values.byteOffset, values.length)
  let bf16 = true
  for (let i = 0; i < u32.length; i++) {
    if ((u32[i] & 0xffff) !== 0) {
      bf16 = false
      break
    }
  }
  if (bf16) {
    const out = new Uint16Array(u32.length)
    for (let i = 0; i < u32.length; i++) out[i] = u32[i] >>> 16
    return { dtype: 'bf16', data: out }
  }
  const out = new Uint16Array(u32.length)
  for (let i = 0; i < u32.length; i++) {
    const h = f16Bits(u32[i])
    if (h === undefined) return { dtype: 'f32', data: values }
    out[i] = h
  }
  return { dtype: 'f16', data: out }
}

/** Whether the addon can hold frozen weights (a build older than this file cannot). */
export function canHoldFrozenWeights(kernels: NativeKernels | undefined): kernels is NativeKernels {
  return kernels !== undefined && typeof kernels.frozenCreate === 'function'
}

export class NativeFrozenWeight {
  readonly outFeatures: number
  readonly inFeatures: number
  #handle: NativeFrozenHandle | undefined
  #dtype: FrozenDtype = 'f32'
  readonly #kernels: NativeKernels

  /** `weight` in HF layout [out, in], as float32 values or a checkpoint's half bits (copied into the addon). */
  constructor(kernels: NativeKernels, weight: Float32Array | HalfBits, outFeatures: number, inFeatures: number) {
    this.#kernels = kernels
    this.outFeatures = outFeatures
    this.inFeatures = inFeatures
    this.set(weight)
  }

  /** How the addon stores it. */
  get dtype(): FrozenDtype {
    return this.#dtype
  }

  /** Bytes the addon holds for it. */
  get bytes(): number {
    return this.outFeatures * this.inFeatures * (this.#dtype === 'f32' ? 4 : 2)
  }

  /** y = x W^T for x [N, in]; its gradient with respect to x is dy W (W is frozen). */
  matMul(x: tf.Tensor2D): tf.Tensor2D {
    const f = tf.customGrad((...args) => ({
      value: this.product(args[0] as tf.Tensor2D, false),
      gradFunc: (dy: tf.Tensor) => this.product(dy as tf.Tensor2D, true),
    }))
    return f(x) as tf.Tensor2D
  }

  /** x W^T (transposed: x W) for x [N, in] (or [N, out]), with no gradient of its own. */
  product(x: tf.Tensor2D, transposed: boolean): tf.Tensor2D {
    // A backend kernel: on wasm, x is read and y written in the heap in place.
    return frozenWeightMatMul(x, { kernels: this.#kernels, handle: this.#live(), rows: this.outFeatures, cols: this.inFeatures, transposed })
  }

  /** W in HF layout [out, in], widened to float32 (exact). */
  read(): Float32Array {
    const out = new Float32Array(this.outFeatures * this.inFeatures)
    this.#kernels.frozenRead(this.#live(), out)
    return out
  }

  /** Replace W (HF layout [out, in]); stored exactly, in half precision where the values allow. */
  set(weight: Float32Array | HalfBits): void {
    const length = weight instanceof Float32Array ? weight.length : weight.bits.length
    if (length !== this.outFeatures * this.inFeatures) {
      throw new RangeError(`frozen weight of ${length} values, expected ${this.outFeatures} x ${this.inFeatures}`)
    }
    const { dtype, data } = weight instanceof Float32Array ? losslessStorage(weight) : { dtype: weight.dtype, data: weight.bits }
    const handle = this.#kernels.frozenCreate(data, this.outFeatures, this.inFeatures, DTYPE_CODE[dtype])
    this.dispose()
    this.#handle = handle
    this.#dtype = dtype
  }

  dispose(): void {
    if (this.#handle !== undefined) this.#kernels.frozenFree(this.#handle)
    this.#handle = undefined
  }

  #live(): NativeFrozenHandle {
    if (this.#handle === undefined) throw new Error('frozen weight used after dispose()')
    return this.#handle
  }
}
