/**
 * The hand-written sublayer backward passes (src/model/layer-grad.ts, compute path
 * 'native'): the same logits and LoRA gradients as tfjs's own gradients of the op-by-op
 * formulation (compute 'stock'), with an adapter on every kind of linear layer, LoRA
 * dropout, GQA and attention biases; and the memory they exist for.
 */
import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import { activeNativeKernels } from '../../src/model/backend.js'
import { llamaConfig } from '../../src/model/config.js'
import type { ComputePath } from '../../src/model/kernels.js'
import { LINEAR_MODULES, LlamaModel, randomLlamaWeights } from '../../src/model/llama.js'
import { adapterGradients, type TrainingExample } from '../../src/model/trainer.js'
import { maxAbsDiff, useWasm } from './helpers.js'

const CONFIG = llamaConfig({
  vocabSize: 61,
  hiddenSize: 32,
  intermediateSize: 56,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  maxPositionEmbeddings: 64,
  qkvBias: true,
})

const EXAMPLES: TrainingExample[] = [
  { inputIds: [1, 5, 9, 2, 33, 17, 4, 60, 12, 7], promptLength: 3 },
  { inputIds: [8, 3, 3, 41, 22, 9, 0, 15], promptLength: 2 },
]

let nativeAvailable = false

beforeAll(async () => {
  await useWasm()
  nativeAvailable = activeNativeKernels() !== undefined
})

function modelOn(compute: ComputePath): LlamaModel {
  const model = new LlamaModel(CONFIG, randomLlamaWeights(CONFIG, 'layer-grad', 0.2), { compute, targetModules: [...LINEAR_MODULES] })
  const init = initAdapter({ shapes: model.targetModuleShapes(), rank: 3, alpha: 6, seed: 'layer-grad' })
  // B != 0, so every path through the adapters carries gradient.
  model.setAdapter({ modules: init.modules.map((m) => ({ ...m, loraB: m.loraB.map((_, i) => Math.cos(i) / 5) })) })
  return model
}

function gradientsWithDropout(model: LlamaModel, rate: number): { loss: number; grads: Float32Array[] } {
  const vars = model.trainableVariables()
  const ids = tf.tensor2d([EXAMPLES[0].inputIds.slice(0, 8), EXAMPLES[1].inputIds.slice(0, 8)], [2, 8], 'int32')
  const { value, grads } = tf.variableGrads(() => {
    const logits = model.lmHead(model.hiddenStates(ids, { loraDropout: rate, dropoutSeed: 11 }))
    return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d([...Array(16).keys()].map((i) => (i * 7) % 61), 'int32'), 61), logits) as tf.Scalar
  }, vars)
  const out = { loss: value.dataSync()[0], grads: vars.map((v) => grads[v.name].dataSync().slice() as Float32Array) }
  tf.dispose([ids, value, ...Object.values(grads)])
  return out
}

describe('sublayers with their own backward pass', () => {
  it('give the op-by-op logits and LoRA gradients, on every kind of module', async () => {
    if (!nativeAvailable) return // the 'native' path needs the addon (covered where it is built: CI builds it)
    const layered = modelOn('native')
    const stock = modelOn('stock')
    try {
      const ids = tf.tensor2d([[...EXAMPLES[0].inputIds]], [1, 10], 'int32')
      const a = layered.forward(ids)
      const b = stock.forward(ids)
      expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBeLessThan(1e-5)
      tf.dispose([ids, a, b])
      const ga = await adapterGradients(layered, EXAMPLES, { seqLen: 16 })
      const gb = await adapterGradients(stock, EXAMPLES, { seqLen: 16 })
      expect(ga.modules.map((m) => m.name)).toEqual(gb.modules.map((m) => m.name))
      expect(ga.modules).toHaveLength(2 * 7)
      expect(ga.loss).toBeCloseTo(gb.loss, 5)
      ga.modules.forEach((m, i) => {
        const scale = Math.max(1e-3, ...Array.from(gb.modules[i].dA, Math.abs), ...Array.from(gb.modules[i].dB, Math.abs))
        expect(maxAbsDiff(m.dA, gb.modules[i].dA) / scale, `${m.name} dA`).toBeLessThan(1e-4)
        expect(maxAbsDiff(m.dB, gb.modules[i].dB) / scale, `${m.name} dB`).toBeLessThan(1e-4)
      })
    } finally {
      layered.dispose()
      stock.dispose()
    }
  })

  it('apply LoRA dropout with the same masks, and backpropagate through them', () => {
    if (!nativeAvailable) return
    const layered = modelOn('native')
    const stock = modelOn('stock')
    try {
      const a = gradientsWithDropout(layered, 0.3)
      const b = gradientsWithDropout(stock, 0.3)
      const none = gradientsWithDropout(stock, 0)
      expect(a.loss).toBeCloseTo(b.loss, 5)
      expect(Math.abs(b.loss - none.loss)).toBeGreaterThan(1e-4) // the masks matter
      a.grads.forEach((g, i) => expect(maxAbsDiff(g, b.grads[i]) / Math.max(1e-3, ...Array.from(b.grads[i], Math.abs))).toBeLessThan(1e-4))
    } finally {
      layered.dispose()
      stock.dispose()
    }
  })

  it('hold far less memory at the peak of a gradient computation, and leak nothing', async () => {
    if (!nativeAvailable) return
    const peak = async (compute: ComputePath): Promise<number> => {
      const model = modelOn(compute)
      const long: TrainingExample[] = [{ inputIds: Array.from({ length: 48 }, (_, i) => (i * 13) % 61), promptLength: 4 }]
      await adapterGradients(model, long, { seqLen: 48 }) // makes the model's RoPE tables, which it keeps
      const before = tf.memory().numTensors
      const info = await tf.profile(async () => {
        await adapterGradients(model, long, { seqLen: 48 })
        return []
      })
      expect(tf.memory().numTensors).toBe(before)
      model.dispose()
      return info.peakBytes - info.newBytes
    }
    const layered = await peak('native')
    const opByOp = await peak('fused')
    expect(layered).toBeLessThan(0.5 * opByOp)
  })
})
