/**
 * Per-example teacher-forced scores of the response tokens: summed next-token loss, token
 * count and argmax hits, one row per example (the trainer's `evaluate` pools them into one
 * mean). An example is answered token for token by greedy decoding exactly when its hits
 * equal its tokens: the evaluation harness reads the reference answer's exact-match bit
 * from here instead of forwarding it a second time (strictExactByTeacherForcing's
 * `referenceScores`).
 */
import * as tf from '@tensorflow/tfjs'
import type { LlamaModel } from './llama.js'
import { makeBatch, type TrainingExample } from './trainer.js'

export interface ResponseScores {
  /** Summed next-token loss (nats) over the response tokens, per example. */
  readonly lossSum: Float64Array
  /** Response tokens (end token included), per example. */
  readonly tokens: Float64Array
  /** Response tokens whose argmax is the target, per example. */
  readonly correct: Float64Array
}

/** Whether every response token of example `i` was the argmax (and it has any). */
export function allHit(scores: Pick<ResponseScores, 'tokens' | 'correct'>, i: number): boolean {
  return (scores.tokens[i] as number) > 0 && scores.correct[i] === scores.tokens[i]
}

/**
 * Scores `examples` in batches of `batchSize`, yielding to the event loop between batches.
 * Examples longer than `seqLen` are scored on their first `seqLen` tokens.
 */
export async function scoreResponses(
  model: LlamaModel,
  examples: readonly TrainingExample[],
  options: { readonly seqLen: number; readonly padId: number; readonly batchSize: number },
): Promise<ResponseScores> {
  const out = {
    lossSum: new Float64Array(examples.length),
    tokens: new Float64Array(examples.length),
    correct: new Float64Array(examples.length),
  }
  const vocab = model.config.vocabSize
  for (let offset = 0; offset < examples.length; offset += options.batchSize) {
    const batch = makeBatch(examples.slice(offset, offset + options.batchSize), options.seqLen, options.padId, vocab)
    if (batch.rows.length > 0) {
      const [nll, hit] = tf.tidy(() => {
        const ids = tf.tensor2d(batch.ids, [batch.batchSize, batch.seqLen], 'int32')
        const targets = tf.tensor1d(batch.targets, 'int32')
        const logits = model.lmHead(tf.gather(model.hiddenStates(ids), tf.tensor1d(batch.rows, 'int32')) as tf.Tensor2D)
        // nll_i = logsumexp(z_i) - z_i[t_i];  hit_i = [argmax z_i == t_i]
        const m = batch.rows.length
        const picked = tf.gatherND(logits, tf.stack([tf.range(0, m, 1, 'int32'), targets], 1))
        return [tf.logSumExp(logits, 1).sub(picked), tf.equal(tf.argMax(logits, 1), targets)]
      })
      const [nllV, hitV] = await Promise.all([nll.data(), hit.data()])
      tf.dispose([nll, hit])
      batch.rows.forEach((row, i) => {
        const e = offset + Math.floor(row / batch.seqLen)
        out.lossSum[e] += nllV[i] as number
        out.tokens[e] += 1
        out.correct[e] += hitV[i] as number
      })
    }
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  return out
}
