/**
 * The one way to open a model for training (src/model/open-model.ts) and the one recipe
 * (src/model/recipe.ts): `flora train`, the peer's model trainer and eval share both, and
 * the compute path is fixed when the model is made.
 */
import { copyFile, mkdir, rm } from 'node:fs/promises'
import path from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { setNativeKernels, activeNativeKernels } from '../../src/model/backend.js'
import { defaultModelDir } from '../../src/model/bundled.js'
import { saveCheckpoint } from '../../src/model/checkpoint.js'
import { llamaConfig } from '../../src/model/config.js'
import { availableComputePath } from '../../src/model/kernels.js'
import { LlamaModel, randomLlamaWeights } from '../../src/model/llama.js'
import { ModelOpenError, openModelForTraining } from '../../src/model/open-model.js'
import { TRAINING_RECIPE } from '../../src/model/recipe.js'
import { TRAIN_DEFAULTS } from '../../src/model/train-command.js'
import { LORA_DROPOUT } from '../../src/eval/model-backend.js'
import { MODEL_TRAINER_DEFAULTS } from '../../src/node/model-defaults.js'
import { tempDir, useWasm } from './helpers.js'

const CONFIG = llamaConfig({ vocabSize: 4096, hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositionEmbeddings: 64 })

let dir: string
let cleanup: () => Promise<void>
let modelDir: string

beforeAll(async () => {
  ;({ dir, cleanup } = await tempDir())
  modelDir = path.join(dir, 'model')
  await mkdir(modelDir)
  await saveCheckpoint(modelDir, CONFIG, randomLlamaWeights(CONFIG, 'open-model-test', 0.05))
  await copyFile(path.join(defaultModelDir(), 'tokenizer.json'), path.join(modelDir, 'tokenizer.json'))
})
afterAll(() => cleanup())

describe('the training recipe', () => {
  it('is the one set of defaults of flora train, the peer and eval', () => {
    for (const [key, value] of Object.entries(TRAINING_RECIPE)) {
      expect(TRAIN_DEFAULTS[key as keyof typeof TRAIN_DEFAULTS], `flora train ${key}`).toEqual(value)
      expect(MODEL_TRAINER_DEFAULTS[key as keyof typeof MODEL_TRAINER_DEFAULTS], `peer ${key}`).toEqual(value)
    }
    expect(LORA_DROPOUT).toBe(TRAINING_RECIPE.loraDropout)
  })
})

describe('openModelForTraining', () => {
  it('opens a checkpoint with the recipe targets, the fastest compute path and its tokenizer', async () => {
    await useWasm()
    const opened = await openModelForTraining(modelDir, { backend: 'wasm' })
    try {
      expect(opened.bundled).toBe(false)
      expect(opened.backend.backend).toBe('wasm')
      expect(opened.model.targetModules).toEqual(TRAINING_RECIPE.targets)
      expect(opened.model.compute).toBe(availableComputePath())
      expect(opened.tokenizerSha256).toMatch(/^[0-9a-f]{64}$/)
      // The default sequence length is the recipe's, capped at the model's positions; a longer one asked for is refused.
      expect(opened.seqLen(undefined)).toBe(Math.min(TRAINING_RECIPE.seqLen, CONFIG.maxPositionEmbeddings))
      expect(opened.seqLen(32)).toBe(32)
      expect(() => opened.seqLen(65)).toThrow(ModelOpenError)
      expect(() => opened.seqLen(65)).toThrow(/--seq-len 65 exceeds the model's max_position_embeddings \(64\)/)
      const long = { instruction: 'Define the word '.repeat(20), input: '', output: 'a word' }
      const short = { instruction: 'Define cat.', input: '', output: 'a cat' }
      const shortLength = opened.tokenize([short], 1000).examples[0].inputIds.length
      const { examples, truncated } = opened.tokenize([long, short], shortLength)
      expect(truncated).toBe(1)
      expect(examples[0].inputIds).toHaveLength(shortLength)
      expect(examples[1].inputIds).toHaveLength(shortLength)
    } finally {
      opened.model.dispose()
    }
  })

  it('says what is missing, before loading anything', async () => {
    await expect(openModelForTraining(path.join(dir, 'nope'))).rejects.toThrow(/--model .*nope: no such directory/)
    const noTok = path.join(dir, 'no-tokenizer')
    await mkdir(noTok)
    await saveCheckpoint(noTok, CONFIG, randomLlamaWeights(CONFIG, 'x', 0.05))
    await expect(openModelForTraining(noTok)).rejects.toThrow(ModelOpenError)
    await expect(openModelForTraining(noTok)).rejects.toThrow(/tokenizer.json is missing \(training needs it/)
    await rm(noTok, { recursive: true })
  })

  it('refuses a tokenizer larger than the model vocabulary', async () => {
    const small = path.join(dir, 'small-vocab')
    await mkdir(small)
    const c = { ...CONFIG, vocabSize: 100 }
    await saveCheckpoint(small, c, randomLlamaWeights(c, 'y', 0.05))
    await copyFile(path.join(defaultModelDir(), 'tokenizer.json'), path.join(small, 'tokenizer.json'))
    await expect(openModelForTraining(small, { backend: 'wasm' })).rejects.toThrow(/the tokenizer has 4096 tokens but config.json says vocab_size 100/)
  })
})

describe('the compute path', () => {
  /** The Flora kernels one forward pass runs. */
  async function floraKernels(model: LlamaModel): Promise<string[]> {
    const ids = tf.tensor2d([[1, 2, 3, 4, 5, 6]], [1, 6], 'int32')
    const info = await tf.profile(() => model.forward(ids))
    ids.dispose()
    tf.dispose(info.result as tf.Tensor)
    return [...new Set(info.kernelNames.filter((k) => k.startsWith('Flora')))].sort()
  }

  it('is chosen once, when the model is made: stock runs no fused kernel, fused and native do, with the same logits', async () => {
    await useWasm()
    const w = randomLlamaWeights(CONFIG, 'compute', 0.05)
    const stock = new LlamaModel(CONFIG, w, { compute: 'stock' })
    const fused = new LlamaModel(CONFIG, w, { compute: 'fused' })
    try {
      expect(await floraKernels(stock)).toEqual([])
      const fusedKernels = await floraKernels(fused)
      expect(fusedKernels).toContain('FloraRmsNorm')
      expect(fusedKernels).not.toContain('FloraAttention')
      if (activeNativeKernels() !== undefined) {
        const native = new LlamaModel(CONFIG, w, { compute: 'native' })
        expect(await floraKernels(native)).toContain('FloraAttention')
        native.dispose()
      }
      const ids = tf.tensor2d([[7, 8, 9, 10]], [1, 4], 'int32')
      const a = stock.forward(ids)
      const b = fused.forward(ids)
      expect(tf.max(tf.abs(a.sub(b))).dataSync()[0]).toBeLessThan(1e-5)
      tf.dispose([ids, a, b])
    } finally {
      stock.dispose()
      fused.dispose()
    }
  })

  it('refuses a path the backend cannot run, naming it', async () => {
    await useWasm()
    const kernels = activeNativeKernels()
    setNativeKernels(undefined)
    try {
      expect(availableComputePath()).toBe('fused')
      expect(() => new LlamaModel(CONFIG, randomLlamaWeights(CONFIG, 'z', 0.05), { compute: 'native' })).toThrow(/compute path 'native' needs the native kernels/)
    } finally {
      setNativeKernels(kernels)
    }
  })
})
