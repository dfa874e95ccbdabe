/**
 * AdamW for the LoRA parameters, as `torch.optim.AdamW` computes it (decoupled weight decay,
 * bias correction), with global-norm gradient clipping, in one JS pass over all parameters.
 *
 * Why not tf ops: a LoRA adapter is a few dozen small tensors, so the optimizer step is
 * ~15 tiny kernels per tensor (hundreds per training step), each costing more in tfjs
 * dispatch than its arithmetic. Here the moments live in Float32Arrays, the arithmetic is
 * float64 rounded once to float32 per stored value, and each parameter is written back with
 * one `assign`.
 *
 *   g <- clip * grad,  clip = min(1, maxNorm / (||grad||_2 + 1e-6))   (over all parameters)
 *   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
 *   p <- p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 */
import * as tf from '@tensorflow/tfjs'

export interface AdamWOptions {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  readonly weightDecay: number
  /** Clip the global gradient norm to this (0 or Infinity: no clipping). */
  readonly maxGradNorm: number
}

export class AdamW {
  private readonly params: Float32Array[]
  private readonly m: Float32Array[]
  private readonly v: Float32Array[]
  private t = 0

  /**
   * Fresh state for `vars`, starting from their current values (read here, or given as
   * `values` when the caller read them asynchronously, as on a GPU backend).
   */
  constructor(
    private readonly vars: readonly tf.Variable[],
    private readonly o: AdamWOptions,
    values?: readonly Float32Array[],
  ) {
    this.params = vars.map((x, i) => (values?.[i] ?? (x.dataSync() as Float32Array)).slice())
    this.m = vars.map((x) => new Float32Array(x.size))
    this.v = vars.map((x) => new Float32Array(x.size))
  }

  /** One update with `grads` (same order and shapes as the variables); returns the unclipped gradient norm. */
  step(grads: readonly tf.Tensor[], lr: number): number {
    this.#check(grads)
    return this.#update(grads.map((g) => g.dataSync() as Float32Array), lr)
  }

  /** step(), reading the gradients asynchronously (the way values leave a GPU backend). */
  async stepAsync(grads: readonly tf.Tensor[], lr: number): Promise<number> {
    this.#check(grads)
    return this.#update(await Promise.all(grads.map((g) => g.data() as Promise<Float32Array>)), lr)
  }

  #check(grads: readonly tf.Tensor[]): void {
    if (grads.length !== this.vars.length) throw new RangeError(`AdamW: ${grads.length} gradients for ${this.vars.length} parameters`)
    grads.forEach((g, i) => {
      if (g.size !== this.vars[i].size) throw new RangeError(`AdamW: gradient ${i} has ${g.size} values, its parameter ${this.vars[i].size}`)
    })
  }

  #update(gs: readonly Float32Array[], lr: number): number {
    let sq = 0
    for (const g of gs) for (let j = 0; j < g.length; j++) sq += g[j] * g[j]
    const norm = Math.sqrt(sq)
    const { beta1: b1, beta2: b2, eps, weightDecay: wd, maxGradNorm } = this.o
    const clip = maxGradNorm > 0 && Number.isFinite(maxGradNorm) ? Math.min(1, maxGradNorm / (norm + 1e-6)) : 1
    this.t++
    const c1 = 1 - b1 ** this.t
    const c2 = 1 - b2 ** this.t
    const decay = 1 - lr * wd
    for (let i = 0; i < gs.length; i++) {
      const g = gs[i]
      const p = this.params[i]
      const m = this.m[i]
      const v = this.v[i]
      for (let j = 0; j < p.length; j++) {
        const gj = g[j] * clip
        m[j] = b1 * m[j] + (1 - b1) * gj
        v[j] = b2 * v[j] + (1 - b2) * gj * gj
        p[j] = p[j] * decay - (lr * (m[j] / c1)) / (Math.sqrt(v[j] / c2) + eps)
      }
      const next = tf.tensor(p, this.vars[i].shape, 'float32')
      this.vars[i].assign(next)
      next.dispose()
    }
    return norm
  }
}
