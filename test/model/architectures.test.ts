/**
 * The architectures flora loads besides plain Llama: Llama 3.x RoPE scaling (llama3,
 * linear), attention biases (Llama attention_bias, Qwen2), Mistral's sliding window,
 * SmolLM2. Each fixture in test/fixtures/arch is a small random checkpoint in Hugging Face
 * layout with the logits of an independent float64 forward pass (scripts/golden-logits.py,
 * written from transformers' formulas); flora's forward must match them to 1e-5.
 */
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { fromHfConfig, toHfConfig, UnsupportedModelError } from '../../src/model/config.js'
import { loadModel, readCheckpoint, saveModel } from '../../src/model/checkpoint.js'
import { LlamaModel } from '../../src/model/llama.js'
import type { LlamaConfig } from '../../src/model/config.js'
import { useWasm } from './helpers.js'
import { initAdapter } from '../../src/lora/init.js'
import { evaluate, trainLora } from '../../src/model/trainer.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'arch')
const MODELS = ['llama3.2', 'llama-linear', 'llama-bias', 'qwen2', 'mistral', 'smollm2']
const TOLERANCE = 1e-5

function golden(name: string): { input_ids: number[][]; logits: number[][][] } {
  return JSON.parse(readFileSync(join(FIXTURES, name, 'golden.json'), 'utf8')) as { input_ids: number[][]; logits: number[][][] }
}

/** The largest |logit - golden logit| of `model` on fixture `name`'s inputs; the model is disposed. */
async function modelLogitError(model: LlamaModel, name: string): Promise<number> {
  const g = golden(name)
  try {
    const ids = tf.tensor2d(g.input_ids, undefined, 'int32')
    const logits = model.forward(ids)
    const got = (await logits.array()) as number[][][]
    tf.dispose([ids, logits])
    let worst = 0
    for (let b = 0; b < got.length; b++)
      for (let t = 0; t < got[b].length; t++)
        for (let v = 0; v < got[b][t].length; v++) worst = Math.max(worst, Math.abs(got[b][t][v] - g.logits[b][t][v]))
    return worst
  } finally {
    model.dispose()
  }
}

async function maxLogitError(dir: string, name: string, fusedKernels: boolean): Promise<number> {
  return modelLogitError(await loadModel(dir, { compute: fusedKernels ? undefined : 'stock' }), name)
}

describe('architectures: golden logits of an independent reference', () => {
  beforeAll(async () => {
    await useWasm()
  })

  it.each(MODELS)('%s: logits within 1e-5 (fused kernels and stock tfjs ops)', async (name) => {
    const dir = join(FIXTURES, name)
    expect(await maxLogitError(dir, name, true)).toBeLessThan(TOLERANCE)
    expect(await maxLogitError(dir, name, false)).toBeLessThan(TOLERANCE)
  })

  it.each(MODELS)('%s: saved by flora, loads back as the same network', async (name) => {
    const out = await mkdtemp(join(tmpdir(), `flora-arch-${name}-`))
    try {
      const model = await loadModel(join(FIXTURES, name))
      await saveModel(model, out)
      model.dispose()
      const again = await readCheckpoint(out)
      const original = await readCheckpoint(join(FIXTURES, name))
      expect(again.config).toEqual(original.config)
      expect([...again.weights.keys()].sort()).toEqual([...original.weights.keys()].sort())
      expect(await maxLogitError(out, name, true)).toBeLessThan(TOLERANCE)
    } finally {
      await rm(out, { recursive: true, force: true })
    }
  })

  it.each([
    ['mistral', { slidingWindow: undefined }],
    ['llama3.2', { ropeScaling: undefined }],
    ['llama-linear', { ropeScaling: undefined }],
  ] as Array<[string, Partial<LlamaConfig>]>)('%s: the feature matters (without it the logits are far from the reference)', async (name, change) => {
    const ckpt = await readCheckpoint(join(FIXTURES, name))
    expect(await modelLogitError(new LlamaModel({ ...ckpt.config, ...change }, ckpt.weights), name)).toBeGreaterThan(1e-2)
  })

  it('maps HF configs both ways and refuses what it cannot compute, by name', () => {
    const q = JSON.parse(readFileSync(join(FIXTURES, 'qwen2', 'config.json'), 'utf8')) as Record<string, unknown>
    const qc = fromHfConfig(q)
    expect(qc).toMatchObject({ modelType: 'qwen2', qkvBias: true, oBias: false, tieWordEmbeddings: true })
    expect(fromHfConfig(toHfConfig(qc))).toEqual(qc)
    const l = JSON.parse(readFileSync(join(FIXTURES, 'llama3.2', 'config.json'), 'utf8')) as Record<string, unknown>
    const lc = fromHfConfig(l)
    expect(lc.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 })
    expect(fromHfConfig(toHfConfig(lc))).toEqual(lc)
    const refused: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...l, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope_scaling type 'yarn'/],
      [{ ...l, rope_scaling: { type: 'dynamic', factor: 2 } }, /rope_scaling type 'dynamic'/],
      [{ ...l, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /llama3.*low_freq_factor/],
      [{ ...l, mlp_bias: true }, /mlp_bias/],
      [{ ...q, use_sliding_window: true }, /use_sliding_window/],
      [{ ...l, model_type: 'gemma', architectures: ['GemmaForCausalLM'] }, /unsupported model_type 'gemma'/],
      [{ ...l, hidden_act: 'gelu' }, /hidden_act 'gelu'/],
    ]
    for (const [cfg, message] of refused) {
      expect(() => fromHfConfig(cfg)).toThrow(UnsupportedModelError)
      expect(() => fromHfConfig(cfg)).toThrow(message)
    }
  })

  it.each(['qwen2', 'mistral', 'llama3.2'])('%s: a LoRA trains on it (loss falls, every gradient finite)', async (name) => {
    const model = await loadModel(join(FIXTURES, name), { targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] })
    try {
      model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: 4, alpha: 8, seed: 3 }))
      // Sequences longer than Mistral's window (5), so the windowed path is the one trained.
      const data = golden(name).input_ids.map((ids) => ({ inputIds: [...ids, ...ids.slice(0, 4)] }))
      const before = await evaluate(model, data, { seqLen: 16 })
      const result = await trainLora(model, data, { steps: 30, batchSize: 2, seqLen: 16, lr: 2e-2, seed: 1 })
      expect(result.losses.every((l) => Number.isFinite(l))).toBe(true)
      expect((await evaluate(model, data, { seqLen: 16 })).loss).toBeLessThan(0.8 * before.loss)
    } finally {
      model.dispose()
    }
  })
})
