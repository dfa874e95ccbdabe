import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import type { AdapterSet } from '../../src/lora/types.js'
import { CheckpointError, loadModel, loadPeftAdapter, readCheckpoint, saveCheckpoint, saveModel, savePeftAdapter } from '../../src/model/checkpoint.js'
import { fromHfConfig, llamaConfig, ModelConfigError, toHfConfig, UnsupportedModelError } from '../../src/model/config.js'
import { expectedWeightShapes, LlamaModel, randomLlamaWeights } from '../../src/model/llama.js'
import { parseSafetensors, SafetensorsError, serializeSafetensors } from '../../src/model/safetensors.js'
import { tempDir, TINY, useWasm } from './helpers.js'

const HF = toHfConfig(TINY)

describe('HF config', () => {
  it('round-trips through toHfConfig / fromHfConfig', () => {
    expect(fromHfConfig(HF)).toEqual(TINY)
    expect(HF).toMatchObject({ model_type: 'llama', architectures: ['LlamaForCausalLM'], num_key_value_heads: 2 })
  })

  it('fills HF defaults (kv heads, head_dim, rope theta)', () => {
    const c = fromHfConfig({
      model_type: 'llama',
      vocab_size: 100,
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      eos_token_id: [2, 3],
    })
    expect(c).toMatchObject({ numKvHeads: 4, headDim: 16, ropeTheta: 10000, tieWordEmbeddings: false, eosTokenId: 2 })
  })

  it('accepts mistral without a sliding window', () => {
    expect(fromHfConfig({ ...HF, model_type: 'mistral', architectures: ['MistralForCausalLM'], sliding_window: null }).hiddenSize).toBe(32)
  })

  it.each([
    [{ ...HF, model_type: 'gemma', architectures: ['GemmaForCausalLM'] }, /unsupported model_type 'gemma'/],
    [{ ...HF, model_type: undefined, architectures: ['GPT2LMHeadModel'] }, /unsupported architecture 'GPT2LMHeadModel'/],
    [{ ...HF, rope_scaling: { rope_type: 'yarn', factor: 8 } }, /rope_scaling type 'yarn'/],
    [{ ...HF, model_type: 'mistral', architectures: ['MistralForCausalLM'], attention_bias: true }, /attention_bias/],
    [{ ...HF, hidden_act: 'gelu' }, /hidden_act 'gelu'/],
    [{ ...HF, sliding_window: 16 }, /sliding_window 16 is not part of model_type llama/],
    [{ vocab_size: 3 }, /neither model_type nor architectures/],
  ])('refuses unsupported models (%#)', (json, msg) => {
    expect(() => fromHfConfig(json)).toThrow(UnsupportedModelError)
    expect(() => fromHfConfig(json)).toThrow(msg)
  })

  it('reports malformed fields by name', () => {
    expect(() => fromHfConfig({ ...HF, hidden_size: 'big' })).toThrow(/hidden_size/)
    expect(() => fromHfConfig({ ...HF, num_key_value_heads: 3 })).toThrow(ModelConfigError)
    expect(() => llamaConfig({ vocabSize: 10, hiddenSize: 30, intermediateSize: 8, numLayers: 1, numHeads: 2, headDim: 15 })).toThrow(/even/)
  })
})

describe('model directories', () => {
  let dir: string
  let cleanup: () => Promise<void>
  const weights = randomLlamaWeights(TINY, 'ckpt', 0.1)

  beforeAll(async () => {
    await useWasm()
    ;({ dir, cleanup } = await tempDir())
  })
  afterAll(async () => cleanup?.())

  /** A checkpoint dir with the given weights (HF shapes) and config. */
  async function writeDir(name: string, w: Map<string, Float32Array>, config: unknown = HF): Promise<string> {
    const d = path.join(dir, name)
    await mkdir(d, { recursive: true })
    await writeFile(path.join(d, 'config.json'), JSON.stringify(config))
    const shapes = expectedWeightShapes(TINY)
    const t = new Map([...w].map(([n, data]) => [n, { shape: shapes.get(n) ?? [data.length], data }]))
    await writeFile(path.join(d, 'model.safetensors'), serializeSafetensors(t))
    return d
  }

  it('saveModel / loadModel round-trip exactly (F32), also when sharded', async () => {
    const model = new LlamaModel(TINY, weights)
    const single = path.join(dir, 'single')
    await saveModel(model, single)
    const sharded = path.join(dir, 'sharded')
    await saveModel(model, sharded, { maxShardBytes: 20_000 })
    const files = await readdir(sharded)
    expect(files).toContain('model.safetensors.index.json')
    expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1)
    for (const d of [single, sharded]) {
      const ck = await readCheckpoint(d)
      expect(ck.config).toEqual(TINY)
      for (const [n, v] of weights) expect(ck.weights.get(n), n).toEqual(v)
      const loaded = await loadModel(d)
      expect(loaded.getBaseWeight('model.layers.1.mlp.gate_proj.weight')).toEqual(weights.get('model.layers.1.mlp.gate_proj.weight'))
      loaded.dispose()
    }
    model.dispose()
  })

  it('saves BF16 when asked (values rounded, loadable)', async () => {
    const d = path.join(dir, 'bf16')
    await saveCheckpoint(d, TINY, weights, { dtype: 'BF16' })
    const st = parseSafetensors(new Uint8Array(await readFile(path.join(d, 'model.safetensors'))))
    expect(st.tensors.get('model.norm.weight')?.dtype).toBe('BF16')
    const ck = await readCheckpoint(d)
    const w = ck.weights.get('model.embed_tokens.weight') as Float32Array
    expect(Math.abs(w[0] - (weights.get('model.embed_tokens.weight') as Float32Array)[0])).toBeLessThan(1e-3)
  })

  it('ignores rotary inv_freq buffers and a redundant lm_head when tied', async () => {
    const tied = { ...HF, tie_word_embeddings: true }
    const w = new Map(weights)
    w.set('model.layers.0.self_attn.rotary_emb.inv_freq', new Float32Array(4))
    const d = await writeDir('tied', w, tied)
    const ck = await readCheckpoint(d)
    expect(ck.config.tieWordEmbeddings).toBe(true)
    expect(ck.weights.has('lm_head.weight')).toBe(false)
  })

  it('names the problem in bad directories', async () => {
    await expect(readCheckpoint(path.join(dir, 'nope'))).rejects.toThrow(/directory does not exist/)
    const noConfig = path.join(dir, 'noconfig')
    await mkdir(noConfig)
    await expect(readCheckpoint(noConfig)).rejects.toThrow(/config\.json: file is missing/)
    await writeFile(path.join(noConfig, 'config.json'), JSON.stringify(HF))
    await expect(readCheckpoint(noConfig)).rejects.toThrow(/no model\.safetensors or model\.safetensors\.index\.json/)

    const missing = new Map(weights)
    missing.delete('model.layers.1.self_attn.o_proj.weight')
    await expect(readCheckpoint(await writeDir('missing', missing))).rejects.toThrow(/tensor 'model\.layers\.1\.self_attn\.o_proj\.weight' is missing/)

    const extra = new Map(weights)
    extra.set('model.layers.7.mlp.up_proj.weight', new Float32Array(4))
    await expect(readCheckpoint(await writeDir('extra', extra))).rejects.toThrow(/unexpected tensor 'model\.layers\.7\.mlp\.up_proj\.weight'/)

    const d = await writeDir('shape', weights, { ...HF, intermediate_size: 40 })
    await expect(readCheckpoint(d)).rejects.toThrow(/gate_proj\.weight' has shape \[48, 32\], config\.json implies \[40, 32\]/)

    const arch = await writeDir('arch', weights, { ...HF, model_type: 'gpt_neox', architectures: ['GPTNeoXForCausalLM'] })
    await expect(readCheckpoint(arch)).rejects.toBeInstanceOf(UnsupportedModelError)
    await expect(readCheckpoint(arch)).rejects.toThrow(/arch[/\\]config\.json: unsupported model_type 'gpt_neox'/)

    const corrupt = await writeDir('corrupt', weights)
    const f = path.join(corrupt, 'model.safetensors')
    const bytes = await readFile(f)
    await writeFile(f, bytes.subarray(0, bytes.length - 4))
    await expect(readCheckpoint(corrupt)).rejects.toBeInstanceOf(SafetensorsError)
    await expect(readCheckpoint(corrupt)).rejects.toThrow(/corrupt[/\\]model\.safetensors: /)

    const shardDir = path.join(dir, 'sharded-bad')
    await saveCheckpoint(shardDir, TINY, weights, { maxShardBytes: 20_000 })
    const shards = (await readdir(shardDir)).filter((x) => x.startsWith('model-'))
    await rm(path.join(shardDir, shards[1]))
    await expect(readCheckpoint(shardDir)).rejects.toThrow(CheckpointError)
  })
})

describe('PEFT adapters', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => {
    await useWasm()
    ;({ dir, cleanup } = await tempDir())
  })
  afterAll(async () => cleanup?.())

  const model = () => new LlamaModel(TINY, randomLlamaWeights(TINY, 'peft'), { targetModules: ['q_proj', 'v_proj', 'down_proj'] })

  it('round-trips heterogeneous ranks and alphas through rank/alpha patterns', async () => {
    const m = model()
    const base = initAdapter({ shapes: m.targetModuleShapes(), rank: 4, alpha: 8, seed: 1 })
    const adapter: AdapterSet = {
      modules: base.modules.map((x, i) => {
        if (i !== 2) return { ...x, loraB: x.loraB.map((_, j) => j / 100) }
        const r = 2
        return { ...x, rank: r, alpha: 3, scaling: 3 / r, loraA: x.loraA.slice(0, r * x.inFeatures), loraB: new Float32Array(x.outFeatures * r).fill(0.5) }
      }),
    }
    const d = path.join(dir, 'hetero')
    await savePeftAdapter(d, adapter, { baseModelNameOrPath: 'tiny' })
    const cfg = JSON.parse(await readFile(path.join(d, 'adapter_config.json'), 'utf8'))
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['down_proj', 'q_proj', 'v_proj'], use_rslora: false })
    expect(Object.values(cfg.rank_pattern)).toEqual([2])
    const st = parseSafetensors(new Uint8Array(await readFile(path.join(d, 'adapter_model.safetensors'))))
    expect(st.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')?.shape).toEqual([4, 32])
    expect(st.tensors.get('base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight')?.shape).toEqual([16, 2]) // the rank-2 module
    const back = await loadPeftAdapter(d, m.moduleShapes())
    expect(back).toEqual(adapter)
    m.setAdapter(back)
    m.dispose()
  })

  it('keeps rsLoRA scaling', async () => {
    const m = model()
    const adapter = initAdapter({ shapes: m.targetModuleShapes(), rank: 4, alpha: 8, seed: 2, rslora: true })
    const d = path.join(dir, 'rslora')
    await savePeftAdapter(d, adapter)
    const back = await loadPeftAdapter(d)
    expect(back.modules[0].scaling).toBe(8 / 2)
    expect(back).toEqual(adapter)
    m.dispose()
  })

  it('rejects what it cannot represent', async () => {
    const m = model()
    const adapter = initAdapter({ shapes: m.targetModuleShapes(), rank: 2, alpha: 4, seed: 3 })
    const d = path.join(dir, 'bad')
    await savePeftAdapter(d, adapter)
    const cfgPath = path.join(d, 'adapter_config.json')
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8'))
    await writeFile(cfgPath, JSON.stringify({ ...cfg, use_dora: true }))
    await expect(loadPeftAdapter(d)).rejects.toThrow(/DoRA/)
    await writeFile(cfgPath, JSON.stringify({ ...cfg, r: 3 }))
    await expect(loadPeftAdapter(d)).rejects.toThrow(/rank 2, adapter_config\.json says 3/)
    await writeFile(cfgPath, JSON.stringify({ ...cfg, peft_type: 'IA3' }))
    await expect(loadPeftAdapter(d)).rejects.toThrow(/peft_type/)
    await writeFile(cfgPath, JSON.stringify(cfg))
    const other = llamaConfig({ ...TINY, hiddenSize: 64, numHeads: 4, numKvHeads: 2 })
    const wrongModel = new LlamaModel(other, randomLlamaWeights(other, 'x'))
    await expect(loadPeftAdapter(d, wrongModel.moduleShapes())).rejects.toThrow(/SHAPE_MISMATCH/)
    wrongModel.dispose()
    await writeFile(
      path.join(d, 'adapter_model.safetensors'),
      serializeSafetensors({ 'base_model.model.lm_head.modules_to_save.weight': { shape: [1], data: new Float32Array(1) } }),
    )
    await expect(loadPeftAdapter(d)).rejects.toThrow(/unexpected tensor/)
    await rm(path.join(d, 'adapter_model.safetensors'))
    await expect(loadPeftAdapter(d)).rejects.toThrow(/adapter_model\.safetensors is missing/)
    m.dispose()
  })
})
