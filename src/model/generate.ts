/**
 * Text generation: greedy decoding or nucleus (top-p) sampling with a seeded PRNG, so the
 * same (model, prompt, seed) gives the same tokens. Each new token re-runs the model over
 * the whole context (no KV cache): simple and exact, fine for the small models trained here.
 */
import * as tf from '@tensorflow/tfjs'
import { createPrng, type SeedLike } from '../lora/prng.js'
import type { LlamaModel } from './llama.js'

export interface GenerateOptions {
  readonly maxNewTokens: number
  /** 'greedy' (default) or 'top-p'. */
  readonly strategy?: 'greedy' | 'top-p'
  /** Softmax temperature for top-p (default 1). */
  readonly temperature?: number
  /** Nucleus mass for top-p (default 0.9). */
  readonly topP?: number
  readonly seed?: SeedLike
  /** Stop after emitting any of these ids (the stop id is included in the output). */
  readonly stopIds?: readonly number[]
  readonly signal?: AbortSignal
}

export class GenerationError extends Error {
  override readonly name = 'GenerationError'
}

/** The new token ids after `prompt`. */
export async function generate(model: LlamaModel, prompt: readonly number[], options: GenerateOptions): Promise<number[]> {
  const { maxNewTokens } = options
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new GenerationError(`maxNewTokens must be a non-negative integer, got ${maxNewTokens}`)
  if (prompt.length === 0) throw new GenerationError('prompt is empty')
  const strategy = options.strategy ?? 'greedy'
  const temperature = options.temperature ?? 1
  const topP = options.topP ?? 0.9
  if (strategy === 'top-p' && (!(temperature > 0) || !(topP > 0 && topP <= 1))) {
    throw new GenerationError(`top-p needs temperature > 0 and 0 < topP <= 1, got ${temperature}, ${topP}`)
  }
  const prng = createPrng(options.seed ?? 0).fork('generate')
  const stop = new Set(options.stopIds ?? [])
  const maxCtx = model.config.maxPositionEmbeddings
  const context = [...prompt]
  const out: number[] = []
  for (let i = 0; i < maxNewTokens; i++) {
    if (options.signal?.aborted === true) break
    const window = context.slice(-maxCtx)
    const logits = tf.tidy(() => {
      const ids = tf.tensor2d(window, [1, window.length], 'int32')
      const hidden = model.hiddenStates(ids)
      return model.lmHead(hidden.slice([window.length - 1, 0], [1, -1]))
    })
    const values = (await logits.data()) as Float32Array
    logits.dispose()
    const next = strategy === 'greedy' ? argmax(values) : sampleTopP(values, temperature, topP, prng.nextFloat())
    out.push(next)
    context.push(next)
    if (stop.has(next)) break
  }
  return out
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i
  return best
}

/**
 * Nucleus sampling: the smallest set of most likely tokens whose probability reaches topP,
 * renormalised, sampled with the uniform draw `u` in [0, 1).
 */
export function sampleTopP(logits: ArrayLike<number>, temperature: number, topP: number, u: number): number {
  const n = logits.length
  let max = -Infinity
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i] / temperature)
  const probs = new Float64Array(n)
  let sum = 0
  for (let i = 0; i < n; i++) {
    probs[i] = Math.exp(logits[i] / temperature - max)
    sum += probs[i]
  }
  // Stable order: by probability, then by id.
  const order = [...Array(n).keys()].sort((a, b) => probs[b] - probs[a] || a - b)
  let kept = 0
  let mass = 0
  while (kept < n && mass < topP * sum) mass += probs[order[kept++]]
  let r = u * mass
  for (let k = 0; k < kept; k++) {
    r -= probs[order[k]]
    if (r < 0) return order[k]
  }
  return order[kept - 1]
}
