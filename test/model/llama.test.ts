import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import { createPrng } from '../../src/lora/prng.js'
import type { AdapterSet } from '../../src/lora/types.js'
import { setNativeKernels } from '../../src/model/backend.js'
import { loadModel } from '../../src/model/checkpoint.js'
import { llamaConfig, type LlamaConfig } from '../../src/model/config.js'
import { LlamaModel, ModelWeightError, randomLlamaWeights } from '../../src/model/llama.js'
import { loadNativeKernels } from '../../src/model/native.js'
import { serializeSafetensors } from '../../src/model/safetensors.js'
import { adapterGradients } from '../../src/model/trainer.js'
import { maxAbsDiff, referenceLogits, tempDir, TINY, useWasm } from './helpers.js'

const SEQS = [
  [1, 5, 9, 2, 33, 7, 0],
  [4, 4, 18, 36, 3, 11, 25],
]

function logitsOf(model: LlamaModel, seqs: number[][]): Float32Array {
  const ids = tf.tensor2d(seqs, undefined, 'int32')
  const out = model.forward(ids as tf.Tensor2D)
  const v = out.dataSync() as Float32Array
  tf.dispose([ids, out])
  return v
}

function flat(rows: Float64Array[]): Float64Array {
  const out = new Float64Array(rows.reduce((n, r) => n + r.length, 0))
  let o = 0
  for (const r of rows) {
    out.set(r, o)
    o += r.length
  }
  return out
}

/** An adapter with random (non-zero) B on the given kinds, one rank per kind. */
function randomAdapter(model: LlamaModel, kinds: Record<string, number>, seed: number): AdapterSet {
  const prng = createPrng(seed)
  const shapes = model.moduleShapes().filter((s) => Object.keys(kinds).some((k) => s.name.endsWith(`.${k}`)))
  return {
    modules: shapes.map((s) => {
      const rank = kinds[s.name.split('.').pop() as string]
      const alpha = 2 * rank
      return {
        name: s.name,
        rank,
        inFeatures: s.inFeatures,
        outFeatures: s.outFeatures,
        alpha,
        scaling: alpha / rank,
        loraA: prng.fork(`${s.name}.A`).fillUniform(new Float32Array(rank * s.inFeatures), -0.3, 0.3),
        loraB: prng.fork(`${s.name}.B`).fillUniform(new Float32Array(s.outFeatures * rank), -0.3, 0.3),
      }
    }),
  }
}

describe('LlamaModel forward', () => {
  let cleanup: () => Promise<void>
  let dir: string
  const weights = randomLlamaWeights(TINY, 'forward-test', 0.3)

  beforeAll(async () => {
    await useWasm()
    ;({ dir, cleanup } = await tempDir())
    // Written by hand (not by saveCheckpoint): an HF-style config and one safetensors file.
    const hf = {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: TINY.vocabSize,
      hidden_size: TINY.hiddenSize,
      intermediate_size: TINY.intermediateSize,
      num_hidden_layers: TINY.numLayers,
      num_attention_heads: TINY.numHeads,
      num_key_value_heads: TINY.numKvHeads,
      max_position_embeddings: TINY.maxPositionEmbeddings,
      rms_norm_eps: TINY.rmsNormEps,
      rope_theta: TINY.ropeTheta,
      tie_word_embeddings: false,
      hidden_act: 'silu',
    }
    await writeFile(path.join(dir, 'config.json'), JSON.stringify(hf))
    const tensors = new Map([...weights].map(([name, data]) => [name, { shape: shapeOf(TINY, name), data }]))
    await writeFile(path.join(dir, 'model.safetensors'), serializeSafetensors(tensors))
  })
  afterAll(async () => cleanup?.())

  it('matches the float64 reference on a checkpoint loaded from disk (GQA, untied)', async () => {
    const model = await loadModel(dir)
    const got = logitsOf(model, SEQS)
    const want = flat(referenceLogits(TINY, weights, SEQS))
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-4)
    // The logits are not trivially small: the comparison means something.
    expect(Math.max(...want.map(Math.abs))).toBeGreaterThan(0.5)
    model.dispose()
  })

  it('matches the reference with tied embeddings and plain multi-head attention', () => {
    const cfg = llamaConfig({ ...TINY, numKvHeads: TINY.numHeads, tieWordEmbeddings: true, ropeTheta: 500 })
    const w = randomLlamaWeights(cfg, 'tied', 0.3)
    const model = new LlamaModel(cfg, w)
    const seqs = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]]
    expect(maxAbsDiff(logitsOf(model, seqs), flat(referenceLogits(cfg, w, seqs)))).toBeLessThan(1e-4)
    model.dispose()
  })

  it('a fresh adapter (B = 0) leaves the logits bit-identical', () => {
    const model = new LlamaModel(TINY, weights, { targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] })
    const base = logitsOf(model, SEQS)
    model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: 4, alpha: 8, seed: 1 }))
    expect(model.trainableVariables()).toHaveLength(2 * 7 * TINY.numLayers)
    expect(logitsOf(model, SEQS)).toEqual(base)
    model.dispose()
  })

  it('matches the reference with heterogeneous LoRA on every kind of layer', () => {
    const model = new LlamaModel(TINY, weights)
    const adapter = randomAdapter(model, { q_proj: 4, k_proj: 2, v_proj: 8, o_proj: 1, gate_proj: 3, up_proj: 4, down_proj: 2 }, 7)
    model.setAdapter(adapter)
    expect(maxAbsDiff(logitsOf(model, SEQS), flat(referenceLogits(TINY, weights, SEQS, adapter)))).toBeLessThan(1e-4)
    model.dispose()
  })

  it('merging s * B @ A into W via setBaseWeight equals the unmerged adapter', () => {
    const model = new LlamaModel(TINY, weights)
    const adapter = randomAdapter(model, { q_proj: 4, v_proj: 2, down_proj: 3 }, 11)
    model.setAdapter(adapter)
    const unmerged = logitsOf(model, SEQS)
    for (const m of adapter.modules) {
      const w = model.getBaseWeight(`${m.name}.weight`)
      for (let o = 0; o < m.outFeatures; o++) {
        for (let i = 0; i < m.inFeatures; i++) {
          let acc = 0
          for (let k = 0; k < m.rank; k++) acc += m.loraB[o * m.rank + k] * m.loraA[k * m.inFeatures + i]
          w[o * m.inFeatures + i] = Math.fround(w[o * m.inFeatures + i] + m.scaling * acc)
        }
      }
      model.setBaseWeight(`${m.name}.weight`, w)
    }
    model.clearAdapter()
    expect(maxAbsDiff(logitsOf(model, SEQS), unmerged)).toBeLessThan(1e-4)
    model.dispose()
  })
})

describe('LlamaModel adapter and weight plumbing', () => {
  const weights = randomLlamaWeights(TINY, 'plumbing')
  beforeAll(async () => {
    await useWasm()
  })

  it('targetModuleShapes lists the configured targets in canonical order', () => {
    const model = new LlamaModel(TINY, weights)
    const shapes = model.targetModuleShapes()
    expect(shapes.map((s) => s.name)).toEqual([
      'model.layers.0.self_attn.q_proj',
      'model.layers.0.self_attn.v_proj',
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.self_attn.v_proj',
    ])
    expect(shapes[0]).toMatchObject({ inFeatures: 32, outFeatures: 32 })
    expect(shapes[1]).toMatchObject({ inFeatures: 32, outFeatures: 16 }) // 2 kv heads x 8
    expect(model.moduleShapes()).toHaveLength(7 * TINY.numLayers)
    model.dispose()
  })

  it('getAdapter returns exactly what setAdapter was given', () => {
    const model = new LlamaModel(TINY, weights)
    const adapter = randomAdapter(model, { q_proj: 3, up_proj: 5 }, 3)
    model.setAdapter(adapter)
    const back = model.getAdapter()
    expect(back.modules.map((m) => m.name)).toEqual(adapter.modules.map((m) => m.name).sort())
    for (const m of back.modules) {
      const src = adapter.modules.find((x) => x.name === m.name)
      expect(m).toEqual(src)
    }
    model.dispose()
  })

  it('setAdapter rejects unknown modules and wrong shapes', () => {
    const model = new LlamaModel(TINY, weights)
    const ok = initAdapter({ shapes: model.targetModuleShapes(), rank: 2, alpha: 4, seed: 0 })
    const unknown = { modules: [{ ...ok.modules[0], name: 'model.layers.9.self_attn.q_proj' }] }
    expect(() => model.setAdapter(unknown)).toThrow(/not in the base model/)
    const wrong = { modules: [{ ...ok.modules[0], inFeatures: 31, loraA: new Float32Array(2 * 31) }] }
    expect(() => model.setAdapter(wrong)).toThrow(/SHAPE_MISMATCH/)
    model.dispose()
  })

  it('getBaseWeight / setBaseWeight round-trip exactly in HF layout', () => {
    const model = new LlamaModel(TINY, weights)
    for (const name of model.baseWeightNames()) expect(model.getBaseWeight(name)).toEqual(weights.get(name))
    // Module names without ".weight" are accepted for linear layers.
    expect(model.getBaseWeight('model.layers.1.mlp.down_proj')).toEqual(weights.get('model.layers.1.mlp.down_proj.weight'))
    const w = model.getBaseWeight('model.layers.0.self_attn.k_proj.weight').map((x) => x * 2)
    model.setBaseWeight('model.layers.0.self_attn.k_proj.weight', w)
    expect(model.getBaseWeight('model.layers.0.self_attn.k_proj.weight')).toEqual(w)
    const n = new Float32Array(TINY.hiddenSize).fill(0.5)
    model.setBaseWeight('model.norm.weight', n)
    expect(model.getBaseWeight('model.norm.weight')).toEqual(n)
    expect(() => model.getBaseWeight('model.layers.0.self_attn.x_proj.weight')).toThrow(ModelWeightError)
    expect(() => model.setBaseWeight('model.norm.weight', new Float32Array(3))).toThrow(/expected shape \[32\]/)
    model.dispose()
  })

  it('rejects missing and wrongly sized weights', () => {
    const missing = new Map(weights)
    missing.delete('model.layers.1.mlp.up_proj.weight')
    expect(() => new LlamaModel(TINY, missing)).toThrow(/model\.layers\.1\.mlp\.up_proj\.weight.*missing/)
    const bad = new Map(weights)
    bad.set('model.embed_tokens.weight', new Float32Array(10))
    expect(() => new LlamaModel(TINY, bad)).toThrow(ModelWeightError)
  })

  it('dispose frees every tensor', () => {
    const before = tf.memory().numTensors
    const model = new LlamaModel(TINY, weights)
    model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: 2, alpha: 4, seed: 0 }))
    logitsOf(model, SEQS)
    model.dispose()
    expect(tf.memory().numTensors).toBe(before)
  })
})

function shapeOf(c: LlamaConfig, name: string): number[] {
  const d = c.hiddenSize
  if (name.endsWith('norm.weight')) return [d]
  if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') return [c.vocabSize, d]
  const kind = name.split('.').at(-2) as string
  const q = c.numHeads * c.headDim
  const kv = c.numKvHeads * c.headDim
  const shapes: Record<string, number[]> = {
    q_proj: [q, d],
    k_proj: [kv, d],
    v_proj: [kv, d],
    o_proj: [d, q],
    gate_proj: [c.intermediateSize, d],
    up_proj: [c.intermediateSize, d],
    down_proj: [d, c.intermediateSize],
  }
  return shapes[kind]
}

describe('fused kernels', () => {
  beforeAll(async () => {
    await useWasm()
  })

  it('give the same logits and LoRA gradients as the tf-op formulation', async () => {
    const w = randomLlamaWeights(TINY, 'fused', 0.3)
    const run = async (fusedKernels: boolean, backwardWeightCopies: boolean) => {
      const model = new LlamaModel(TINY, w, { compute: fusedKernels ? undefined : 'stock', backwardWeightCopies, targetModules: ['q_proj', 'k_proj', 'o_proj', 'up_proj'] })
      const init = initAdapter({ shapes: model.targetModuleShapes(), rank: 3, alpha: 6, seed: 4 })
      model.setAdapter({ modules: init.modules.map((m) => ({ ...m, loraB: m.loraB.map((_, i) => Math.sin(i) / 4) })) })
      const logits = logitsOf(model, SEQS)
      const g = await adapterGradients(model, SEQS.map((inputIds) => ({ inputIds, promptLength: 2 })), { seqLen: 16 })
      model.dispose()
      return { logits, g }
    }
    const native = loadNativeKernels().kernels
    const b = await run(false, false)
    // The fused kernels in JS, and (when the addon is built) in native code.
    for (const kernels of native !== undefined ? [undefined, native] : [undefined]) {
      setNativeKernels(kernels)
      const a = await run(true, true)
      expect(maxAbsDiff(a.logits, b.logits)).toBeLessThan(1e-5)
      expect(a.g.loss).toBeCloseTo(b.g.loss, 5)
      a.g.modules.forEach((m, i) => {
        expect(maxAbsDiff(m.dA, b.g.modules[i].dA)).toBeLessThan(1e-5)
        expect(maxAbsDiff(m.dB, b.g.modules[i].dB)).toBeLessThan(1e-5)
      })
    }
    setNativeKernels(native)
  })
})
