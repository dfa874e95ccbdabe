/**
 * The token embedding [vocab, hidden], frozen. Small models keep it as a float32 tfjs
 * tensor. When the native addon holds the frozen weights (LlamaModelOptions.frozenWeights),
 * the embedding leaves the wasm heap too: it stays in JS memory in the narrowest exact
 * precision (the checkpoint's BF16/F16 bits as stored), and a lookup widens just the rows
 * asked for. A TinyLlama-sized vocabulary (32,000 x 2,048) then takes 125 MiB instead of
 * 250 MiB of the heap. The values are the same either way: widening is exact.
 */
import * as tf from '@tensorflow/tfjs'
import { f16ToF32Table } from '../lora/float16.js'
import { type FrozenDtype, type HalfBits, losslessStorage } from './frozen-weight.js'

export class FrozenEmbedding {
  readonly vocab: number
  readonly hidden: number
  #tensor: tf.Tensor2D | undefined
  #stored: { dtype: FrozenDtype; data: Float32Array | Uint16Array } | undefined

  /** `values` [vocab, hidden]; `outOfHeap` keeps them in JS memory (see the module comment). */
  constructor(values: Float32Array | HalfBits, vocab: number, hidden: number, outOfHeap: boolean) {
    this.vocab = vocab
    this.hidden = hidden
    if (!outOfHeap && !(values instanceof Float32Array)) throw new TypeError('a float32 embedding tensor needs float32 values')
    this.#set(values, outOfHeap)
  }

  /** Where the table lives: 'tfjs' (a float32 tensor) or its storage in JS memory. */
  get storage(): 'tfjs' | FrozenDtype {
    return this.#stored?.dtype ?? 'tfjs'
  }

  /** The float32 tensor, when the table is one (tied lm_head's backward product). */
  get tensor(): tf.Tensor2D | undefined {
    return this.#tensor
  }

  /** Rows [N, hidden] for int32 token ids [N]. */
  gather(ids: tf.Tensor1D): tf.Tensor2D {
    if (this.#tensor !== undefined) return tf.gather(this.#tensor, ids) as tf.Tensor2D
    const idx = ids.dataSync()
    return tf.tensor2d(this.#rows(idx), [idx.length, this.hidden])
  }

  /** The table as float32 values [vocab, hidden] (exact). */
  read(): Float32Array {
    if (this.#tensor !== undefined) return this.#tensor.dataSync().slice() as Float32Array
    return this.#allRows()
  }

  /** read(), reading asynchronously (the way values leave a GPU backend). */
  async readAsync(): Promise<Float32Array> {
    if (this.#tensor !== undefined) return ((await this.#tensor.data()) as Float32Array).slice()
    return this.#allRows()
  }

  #allRows(): Float32Array {
    return this.#rows(Int32Array.from({ length: this.vocab }, (_, i) => i))
  }

  /** Rows of the JS-memory table, widened to float32. */
  #rows(idx: ArrayLike<number>): Float32Array {
    const { dtype, data } = this.#stored as { dtype: FrozenDtype; data: Float32Array | Uint16Array }
    const d = this.hidden
    const out = new Float32Array(idx.length * d)
    const wide = new Uint32Array(out.buffer)
    const f16 = dtype === 'f16' ? new Uint32Array(f16ToF32Table().buffer) : undefined
    for (let i = 0; i < idx.length; i++) {
      const row = idx[i]
      if (!(row >= 0 && row < this.vocab)) throw new RangeError(`token id ${row} is not in [0, ${this.vocab - 1}]`)
      const o = i * d
      const s = row * d
      if (dtype === 'f32') out.set((data as Float32Array).subarray(s, s + d), o)
      else if (f16 !== undefined) for (let j = 0; j < d; j++) wide[o + j] = f16[data[s + j]]
      else for (let j = 0; j < d; j++) wide[o + j] = data[s + j] << 16
    }
    return out
  }

  /** Replace the table (values copied, exactly). */
  set(values: Float32Array): void {
    this.#set(values, this.#stored !== undefined)
  }

  dispose(): void {
    this.#tensor?.dispose()
    this.#tensor = undefined
    this.#stored = undefined
  }

  #set(values: Float32Array | HalfBits, outOfHeap: boolean): void {
    const n = values instanceof Float32Array ? values.length : values.bits.length
    if (n !== this.vocab * this.hidden) throw new RangeError(`embedding of ${n} values, expected ${this.vocab} x ${this.hidden}`)
    const old = this.#tensor
    if (outOfHeap) {
      this.#stored = values instanceof Float32Array ? losslessStorage(values) : { dtype: values.dtype, data: values.bits.slice() }
      // losslessStorage may return its input: keep a copy the caller cannot change.
      if (this.#stored.data === values) this.#stored = { dtype: 'f32', data: (values as Float32Array).slice() }
      this.#tensor = undefined
    } else {
      this.#tensor = tf.tensor2d(values as Float32Array, [this.vocab, this.hidden])
    }
    old?.dispose()
  }
}
