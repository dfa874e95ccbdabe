import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { argmax, generate, sampleTopP } from '../../src/model/generate.js'
import { LlamaModel, randomLlamaWeights } from '../../src/model/llama.js'
import { maxAbsDiff, referenceLogits, TINY, useWasm } from './helpers.js'

describe('generate', () => {
  const weights = randomLlamaWeights(TINY, 'gen', 0.3)
  beforeAll(async () => {
    await useWasm()
  })

  it('greedy decoding follows the argmax of the reference logits', async () => {
    const model = new LlamaModel(TINY, weights)
    const prompt = [1, 7, 3]
    const out = await generate(model, prompt, { maxNewTokens: 5 })
    expect(out).toHaveLength(5)
    const seq = [...prompt]
    for (const tok of out) {
      const logits = referenceLogits(TINY, weights, [seq])[0]
      const last = logits.subarray((seq.length - 1) * TINY.vocabSize)
      expect(tok).toBe(argmax(last))
      seq.push(tok)
    }
    model.dispose()
  })

  it('top-p sampling is seeded, stops on a stop id, and leaks nothing', async () => {
    const model = new LlamaModel(TINY, weights)
    await generate(model, [2], { maxNewTokens: 1 }) // builds the model's rope table cache
    const before = tf.memory().numTensors
    const a = await generate(model, [2, 4], { maxNewTokens: 8, strategy: 'top-p', topP: 0.9, temperature: 1.5, seed: 42 })
    const b = await generate(model, [2, 4], { maxNewTokens: 8, strategy: 'top-p', topP: 0.9, temperature: 1.5, seed: 42 })
    expect(a).toEqual(b)
    const stopAt = a[2]
    const c = await generate(model, [2, 4], { maxNewTokens: 8, strategy: 'top-p', topP: 0.9, temperature: 1.5, seed: 42, stopIds: [stopAt] })
    expect(c).toEqual(a.slice(0, a.indexOf(stopAt) + 1))
    expect(tf.memory().numTensors).toBe(before)
    model.dispose()
  })

  it('sampleTopP keeps only the nucleus', () => {
    const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]
    // topP 0.7: nucleus {0, 1} (0.5 + 0.3 >= 0.7); u spans it.
    expect(sampleTopP(logits, 1, 0.7, 0)).toBe(0)
    expect(sampleTopP(logits, 1, 0.7, 0.6)).toBe(0)
    expect(sampleTopP(logits, 1, 0.7, 0.7)).toBe(1)
    expect(sampleTopP(logits, 1, 0.7, 0.999)).toBe(1)
    expect(sampleTopP(logits, 1, 1, 0.999)).toBe(3)
  })

  it('the forward logits of the last position match the reference (slice path)', () => {
    const model = new LlamaModel(TINY, weights)
    const ids = tf.tensor2d([[5, 6, 7, 8]], undefined, 'int32')
    const h = model.hiddenStates(ids as tf.Tensor2D)
    const last = model.lmHead(h.slice([3, 0], [1, -1]))
    const ref = referenceLogits(TINY, weights, [[5, 6, 7, 8]])[0].subarray(3 * TINY.vocabSize)
    expect(maxAbsDiff(last.dataSync(), ref)).toBeLessThan(1e-4)
    tf.dispose([ids, h, last])
    model.dispose()
  })
})
