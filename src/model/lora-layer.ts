/**
 * A frozen linear layer with an optional LoRA adapter, after HF PEFT's
 * `tuners/lora/layer.py` (same names: loraA, loraB, scaling, rank, alpha):
 *
 *   y = x W^T + scaling * (dropout(x) A^T) B^T,    W [out, in], A [rank, in], B [out, rank]
 *
 * W is frozen: it is stored as a plain tensor, pre-transposed (W^T [in, out]) so the
 * forward product is a plain matmul, and optionally also as W [out, in] so the backward
 * product dx = dy W is one as well (wasm/cpu: a transposed operand costs a transpose and
 * an XNNPACK re-pack on every step). A and B are the only tf.Variables.
 */
import * as tf from '@tensorflow/tfjs'
import type { LoraModule } from '../lora/types.js'
import { NativeFrozenWeight, type FrozenDtype, type HalfBits } from './frozen-weight.js'
import type { NativeKernels } from './native.js'

export interface LoraState {
  readonly rank: number
  readonly alpha: number
  readonly scaling: number
  /** [rank, in] */
  readonly loraA: tf.Variable
  /** [out, rank] */
  readonly loraB: tf.Variable
}

/** Applies LoRA dropout to the adapter input (identity when training without dropout). */
export type DropoutFn = (x: tf.Tensor2D) => tf.Tensor2D

/**
 * LoRA dropout as explicit masks, one per adapted module and call, seeded in call order.
 * x * nextMask(x.shape) is exactly tf.dropout(x, rate, undefined, seed): the same
 * multiplier floor(U + keep) / keep, where a layer that writes its own backward pass needs it.
 */
export class LoraDropout {
  #seed: number
  constructor(
    readonly rate: number,
    seed: number,
  ) {
    if (!(rate > 0 && rate < 1)) throw new RangeError(`LoRA dropout rate must be in (0, 1), got ${rate}`)
    this.#seed = seed
  }

  nextMask(shape: readonly [number, number]): tf.Tensor2D {
    const keep = 1 - this.rate
    return tf.tidy(() => tf.div(tf.floor(tf.add(tf.randomUniform([...shape], 0, 1, 'float32', this.#seed++), keep)), keep)) as tf.Tensor2D
  }

  /** As a DropoutFn. */
  get fn(): DropoutFn {
    return (x) => x.mul(this.nextMask(x.shape))
  }
}

/** What LoraLinear.backward needs of a forward pass (forwardKeep). */
export interface LoraKeep {
  /** The adapter's input after dropout (the layer's input without dropout); with an adapter only. */
  readonly xd?: tf.Tensor2D
  /** The dropout mask, when there was one. */
  readonly mask?: tf.Tensor2D
  /** scaling * xd A^T [N, rank]; with an adapter only. */
  readonly h?: tf.Tensor2D
}

/** Gradients of one LoRA linear layer: its input, and A and B when it has an adapter. */
export interface LoraGrads {
  readonly dx: tf.Tensor2D
  readonly dA?: tf.Tensor2D
  readonly dB?: tf.Tensor2D
}

export class LoraLinear {
  /** Module name, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly name: string
  readonly inFeatures: number
  readonly outFeatures: number
  private wT: tf.Tensor2D | undefined // [in, out] (undefined when the addon holds W)
  private w: tf.Tensor2D | undefined // [out, in], backward only
  private native: NativeFrozenWeight | undefined // W held by the native addon (frozen-weight.ts)
  private lora: LoraState | undefined
  private bias: tf.Tensor1D | undefined // [out], frozen (Qwen2's q/k/v, Llama's attention_bias)

  /**
   * `weight` in HF layout [out, in]; `backwardCopy` keeps W for the backward product; `bias`
   * [out] if the layer has one; with `nativeKernels` the addon holds W instead of tfjs.
   */
  constructor(
    name: string,
    weight: Float32Array | HalfBits,
    outFeatures: number,
    inFeatures: number,
    private readonly backwardCopy: boolean,
    bias?: Float32Array,
    nativeKernels?: NativeKernels,
  ) {
    this.name = name
    this.inFeatures = inFeatures
    this.outFeatures = outFeatures
    if (nativeKernels !== undefined) this.native = new NativeFrozenWeight(nativeKernels, weight, outFeatures, inFeatures)
    else if (weight instanceof Float32Array) this.setTfWeight(weight)
    else throw new TypeError(`${name}: half-precision bits need the native addon`)
    if (bias !== undefined) this.setBias(bias)
  }

  /** Where W lives: 'tfjs' (float32 tensors) or the addon's storage ('f32', 'bf16', 'f16'). */
  get weightStorage(): 'tfjs' | FrozenDtype {
    return this.native?.dtype ?? 'tfjs'
  }

  /** Bytes the native addon holds for W (0 when tfjs does). */
  get nativeBytes(): number {
    return this.native?.bytes ?? 0
  }

  /** y = x W^T (+ b) + scaling * (dropout(x) A^T) B^T for x [N, in]. */
  forward(x: tf.Tensor2D, dropout?: DropoutFn): tf.Tensor2D {
    const base = this.native !== undefined ? this.native.matMul(x) : frozenMatMul(x, this.wT as tf.Tensor2D, this.w)
    const y = this.bias === undefined ? base : (base.add(this.bias) as tf.Tensor2D)
    if (this.lora === undefined) return y
    const { loraA, loraB, scaling } = this.lora
    // Scale the rank-r intermediate rather than the output: r << out.
    const h = tf.matMul(dropout === undefined ? x : dropout(x), loraA, false, true).mul(scaling)
    return y.add(tf.matMul(h, loraB, false, true))
  }

  /**
   * forward() without a gradient tape, keeping what backward() needs: for a layer that writes
   * its own backward pass (layer-grad.ts). Same values as forward() with the same mask.
   */
  forwardKeep(x: tf.Tensor2D, dropout: LoraDropout | undefined): { y: tf.Tensor2D; keep: LoraKeep } {
    const base = this.#product(x, false)
    const y = this.bias === undefined ? base : (base.add(this.bias) as tf.Tensor2D)
    if (this.lora === undefined) return { y, keep: {} }
    const { loraA, loraB, scaling } = this.lora
    const mask = dropout?.nextMask(x.shape)
    const xd = mask === undefined ? x : (x.mul(mask) as tf.Tensor2D)
    const h = tf.matMul(xd, loraA, false, true).mul(scaling) as tf.Tensor2D
    return { y: y.add(tf.matMul(h, loraB, false, true)) as tf.Tensor2D, keep: { xd, mask, h } }
  }

  /**
   * The gradients for dy = dL/dy of a forwardKeep pass, in the products tfjs's own gradients
   * of forward() use: dx = dy W (+ the adapter's path, through the dropout mask),
   * dB = dy^T h, dA = scaling (dy B)^T xd.
   */
  backward(dy: tf.Tensor2D, keep: LoraKeep): LoraGrads {
    const base = this.#product(dy, true)
    if (this.lora === undefined) return { dx: base }
    const { loraA, loraB, scaling } = this.lora
    const { xd, mask, h } = keep as Required<Pick<LoraKeep, 'xd' | 'h'>> & LoraKeep
    const dB = tf.matMul(dy, h, true, false) as tf.Tensor2D
    const dm = tf.matMul(dy, loraB).mul(scaling) as tf.Tensor2D
    const dA = tf.matMul(dm, xd, true, false) as tf.Tensor2D
    const dxd = tf.matMul(dm, loraA) as tf.Tensor2D
    return { dx: (mask === undefined ? dxd : dxd.mul(mask)).add(base), dA, dB }
  }

  /** x W^T (transposed: x W), with no gradient of its own. */
  #product(x: tf.Tensor2D, transposed: boolean): tf.Tensor2D {
    if (this.native !== undefined) return this.native.product(x, transposed)
    const wT = this.wT as tf.Tensor2D
    if (!transposed) return tf.matMul(x, wT)
    return this.w !== undefined ? tf.matMul(x, this.w) : tf.matMul(x, wT, false, true)
  }

  get hasAdapter(): boolean {
    return this.lora !== undefined
  }

  /** Replace the adapter by a copy of `m` (shapes checked by the caller). */
  setAdapter(m: LoraModule): void {
    this.clearAdapter()
    this.lora = {
      rank: m.rank,
      alpha: m.alpha,
      scaling: m.scaling,
      // tidy frees the initial-value tensors; variables survive it.
      loraA: tf.tidy(() => tf.variable(tf.tensor2d(m.loraA, [m.rank, m.inFeatures]), true)),
      loraB: tf.tidy(() => tf.variable(tf.tensor2d(m.loraB, [m.outFeatures, m.rank]), true)),
    }
  }

  clearAdapter(): void {
    if (this.lora === undefined) return
    this.lora.loraA.dispose()
    this.lora.loraB.dispose()
    this.lora = undefined
  }

  /** The adapter as plain arrays, or undefined. */
  getAdapter(): LoraModule | undefined {
    if (this.lora === undefined) return undefined
    return this.#module(this.lora.loraA.dataSync() as Float32Array, this.lora.loraB.dataSync() as Float32Array)
  }

  /** getAdapter(), reading the factors asynchronously (the way values leave a GPU backend). */
  async readAdapter(): Promise<LoraModule | undefined> {
    if (this.lora === undefined) return undefined
    const [a, b] = await Promise.all([this.lora.loraA.data(), this.lora.loraB.data()])
    return this.#module(a as Float32Array, b as Float32Array)
  }

  #module(loraA: Float32Array, loraB: Float32Array): LoraModule {
    const { rank, alpha, scaling } = this.lora as LoraState
    return { name: this.name, rank, inFeatures: this.inFeatures, outFeatures: this.outFeatures, alpha, scaling, loraA: loraA.slice(), loraB: loraB.slice() }
  }

  /** [loraA, loraB], or [] without an adapter. */
  variables(): tf.Variable[] {
    return this.lora === undefined ? [] : [this.lora.loraA, this.lora.loraB]
  }

  /** W in HF layout [out, in] (exact float32 values). */
  getWeight(): Float32Array {
    if (this.native !== undefined) return this.native.read()
    if (this.w !== undefined) return this.w.dataSync().slice() as Float32Array
    return transpose2d((this.wT as tf.Tensor2D).dataSync() as Float32Array, this.inFeatures, this.outFeatures)
  }

  /** getWeight(), reading asynchronously (the way values leave a GPU backend). */
  async readWeight(): Promise<Float32Array> {
    if (this.native !== undefined) return this.native.read()
    if (this.w !== undefined) return ((await this.w.data()) as Float32Array).slice()
    return transpose2d((await (this.wT as tf.Tensor2D).data()) as Float32Array, this.inFeatures, this.outFeatures)
  }

  /** Replace W (HF layout [out, in]); the values are copied, exactly. */
  setWeight(weight: Float32Array): void {
    if (this.native !== undefined) this.native.set(weight)
    else this.setTfWeight(weight)
  }

  private setTfWeight(weight: Float32Array): void {
    const old = [this.wT, this.w]
    this.wT = tf.tensor2d(transpose2d(weight, this.outFeatures, this.inFeatures), [this.inFeatures, this.outFeatures])
    this.w = this.backwardCopy ? tf.tensor2d(weight.slice(), [this.outFeatures, this.inFeatures]) : undefined
    tf.dispose(old.filter((t): t is tf.Tensor2D => t !== undefined))
  }

  /** The bias [out] (a copy), or undefined when the layer has none. */
  getBias(): Float32Array | undefined {
    return this.bias === undefined ? undefined : (this.bias.dataSync().slice() as Float32Array)
  }

  /** getBias(), reading asynchronously. */
  async readBias(): Promise<Float32Array | undefined> {
    return this.bias === undefined ? undefined : ((await this.bias.data()) as Float32Array).slice()
  }

  /** Set the frozen bias [out]; the values are copied. */
  setBias(bias: Float32Array): void {
    if (bias.length !== this.outFeatures) throw new RangeError(`${this.name}: bias of ${bias.length} values, expected ${this.outFeatures}`)
    this.bias?.dispose()
    this.bias = tf.tensor1d(bias.slice())
  }

  dispose(): void {
    this.clearAdapter()
    this.wT?.dispose()
    this.w?.dispose()
    this.native?.dispose()
    this.bias?.dispose()
  }
}

/**
 * x @ wT for a frozen weight. With `w` (= wT^T) the gradient dx = dy @ w is a plain matmul
 * on a persistent tensor instead of dy @ wT^T (a transpose and a re-pack every step).
 */
export function frozenMatMul(x: tf.Tensor2D, wT: tf.Tensor2D, w: tf.Tensor2D | undefined): tf.Tensor2D {
  if (w === undefined) return tf.matMul(x, wT)
  const f = tf.customGrad((...args) => ({
    value: tf.matMul(args[0] as tf.Tensor2D, wT),
    gradFunc: (dy: tf.Tensor) => tf.matMul(dy as tf.Tensor2D, w),
  }))
  return f(x) as tf.Tensor2D
}

/** Row-major [rows, cols] -> [cols, rows] (cache-blocked). */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const dst = new Float32Array(src.length)
  const bs = 32
  for (let i0 = 0; i0 < rows; i0 += bs) {
    const i1 = Math.min(i0 + bs, rows)
    for (let j0 = 0; j0 < cols; j0 += bs) {
      const j1 = Math.min(j0 + bs, cols)
      for (let i = i0; i < i1; i++) {
        const row = i * cols
        for (let j = j0; j < j1; j++) dst[j * rows + i] = src[row + j]
      }
    }
  }
  return dst
}
