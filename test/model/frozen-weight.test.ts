/**
 * Frozen base weights held by the native addon (src/model/frozen-weight.ts): out of the
 * wasm heap, in BF16/F16 when the values are, with products bit-identical to the float32
 * path (forward, LoRA gradients, training), and merges written exactly.
 */
import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import { createPrng } from '../../src/lora/prng.js'
import { llamaConfig } from '../../src/model/config.js'
import { setNativeKernels } from '../../src/model/backend.js'
import { losslessStorage } from '../../src/model/frozen-weight.js'
import { LlamaModel, randomLlamaWeights, tfjsBaseWeightBytes, WASM_BASE_WEIGHT_CEILING } from '../../src/model/llama.js'
import { loadNativeKernels } from '../../src/model/native.js'
import { adapterGradients, trainLora } from '../../src/model/trainer.js'
import { useWasm } from './helpers.js'

const native = loadNativeKernels()

const CONFIG = llamaConfig({ vocabSize: 53, hiddenSize: 48, intermediateSize: 80, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositionEmbeddings: 64 })

/** Rounds every value to the nearest bf16 (as a BF16 checkpoint decodes). */
function toBf16(x: Float32Array): Float32Array {
  const u = new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength))
  for (let i = 0; i < u.length; i++) u[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) & 0xffff0000
  return new Float32Array(u.buffer)
}

/** Rounds to a float16-representable value (by way of a float16 grid at each magnitude). */
function toF16(x: Float32Array): Float32Array {
  return x.map((v) => {
    if (v === 0) return v
    const e = Math.max(-14, Math.floor(Math.log2(Math.abs(v))))
    const q = 2 ** (e - 10)
    return Math.round(v / q) * q
  })
}

function weightsAs(round: (x: Float32Array) => Float32Array): Map<string, Float32Array> {
  const w = randomLlamaWeights(CONFIG, 'frozen-weights', 0.05)
  for (const [k, v] of w) w.set(k, round(v))
  return w
}

describe('lossless storage of frozen weights', () => {
  it('picks bf16, f16 or float32 by the values, and keeps every value exactly', () => {
    const prng = createPrng('lossless')
    const raw = prng.fillUniform(new Float32Array(1000), -3, 3)
    expect(losslessStorage(raw).dtype).toBe('f32')
    expect(losslessStorage(toBf16(raw)).dtype).toBe('bf16')
    const half = toF16(raw)
    // Edge cases of binary16: zeros, subnormals, the largest finite value, infinities.
    const edges = new Float32Array([0, -0, 2 ** -24, -(2 ** -24), 1023 * 2 ** -24, 2 ** -14, 65504, -65504, Infinity, -Infinity])
    const f16 = new Float32Array([...half, ...edges])
    const s = losslessStorage(f16)
    expect(s.dtype).toBe('f16')
    // Widen the bits back with DataView-free arithmetic and compare value by value.
    const bits = s.data as Uint16Array
    for (let i = 0; i < f16.length; i++) {
      const h = bits[i]
      const sign = h & 0x8000 ? -1 : 1
      const e = (h >> 10) & 0x1f
      const m = h & 0x3ff
      const v = e === 0x1f ? sign * Infinity : e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15)
      expect(Object.is(v, f16[i]) || (v === 0 && f16[i] === 0)).toBe(true)
    }
    // Not binary16: too small, too large, too many mantissa bits, NaN.
    for (const v of [2 ** -25, 65520, 1 + 2 ** -11, Number.NaN]) expect(losslessStorage(new Float32Array([v])).dtype).not.toBe('f16')
  })
})

describe.runIf(native.kernels !== undefined)('frozen weights in the native addon', () => {
  beforeAll(async () => {
    await useWasm()
  })

  it.each([
    ['bf16', toBf16],
    ['f16', toF16],
    ['f32', (x: Float32Array) => x],
  ] as const)('%s checkpoint: stored as %s out of the wasm heap; logits, LoRA gradients and training bit-identical to float32 tensors', async (dtype, round) => {
    const weights = weightsAs(round)
    const held = new LlamaModel(CONFIG, weights, { frozenWeights: 'native' })
    const plain = new LlamaModel(CONFIG, weights, { frozenWeights: 'tfjs' })
    try {
      const storage = held.frozenWeightStorage()
      expect(storage.modules['model.layers.0.self_attn.q_proj']).toBe('tfjs') // a LoRA target: float32 tensors
      expect(storage.modules['model.layers.0.mlp.down_proj']).toBe(dtype)
      expect(plain.frozenWeightStorage().nativeBytes).toBe(0)
      // Non-target weights: k, o, gate, up, down of every layer, no longer tfjs tensors.
      const d = CONFIG.hiddenSize
      const perLayer = 2 * d * CONFIG.numKvHeads * CONFIG.headDim / 2 + d * d + 3 * d * CONFIG.intermediateSize
      // ... and the lm_head.
      expect(storage.modules.lm_head).toBe(dtype)
      // The embedding leaves the heap too, for JS memory in its precision (embedding.ts).
      expect(storage.modules.embed_tokens).toBe(dtype)
      expect(plain.frozenWeightStorage().modules.embed_tokens).toBe('tfjs')
      expect(held.getBaseWeight('model.embed_tokens.weight')).toEqual(weights.get('model.embed_tokens.weight'))
      expect(storage.nativeBytes).toBe((CONFIG.numLayers * perLayer + CONFIG.vocabSize * d) * (dtype === 'f32' ? 4 : 2))
      const ids = tf.tensor2d([[1, 5, 9, 2, 44, 17, 3, 8], [4, 4, 30, 12, 50, 6, 7, 1]], undefined, 'int32')
      const a = held.forward(ids)
      const b = plain.forward(ids)
      expect(Buffer.from((await a.data()).buffer).equals(Buffer.from((await b.data()).buffer))).toBe(true)
      tf.dispose([a, b, ids])
      const adapter = initAdapter({ shapes: held.targetModuleShapes(), rank: 4, alpha: 8, seed: 2 })
      // B != 0, so that both factors get gradients.
      for (const m of adapter.modules) createPrng(`b-${m.name}`).fillUniform(m.loraB, -0.1, 0.1)
      held.setAdapter(adapter)
      plain.setAdapter(adapter)
      const batch = [{ inputIds: [1, 5, 9, 2, 44, 17, 3, 8] }, { inputIds: [4, 4, 30, 12, 50, 6] }]
      const ga = await adapterGradients(held, batch, { seqLen: 8 })
      const gb = await adapterGradients(plain, batch, { seqLen: 8 })
      expect(ga.loss).toBe(gb.loss)
      expect(ga.modules.map((g) => g.name)).toEqual(gb.modules.map((g) => g.name))
      ga.modules.forEach((g, i) => {
        expect(Buffer.from(g.dA.buffer).equals(Buffer.from(gb.modules[i].dA.buffer)), g.name).toBe(true)
        expect(Buffer.from(g.dB.buffer).equals(Buffer.from(gb.modules[i].dB.buffer)), g.name).toBe(true)
      })
      const ra = await trainLora(held, batch, { steps: 3, batchSize: 2, seqLen: 8, lr: 1e-2, seed: 4 })
      const rb = await trainLora(plain, batch, { steps: 3, batchSize: 2, seqLen: 8, lr: 1e-2, seed: 4 })
      expect(ra.losses).toEqual(rb.losses)
      // Read back exactly, as saved and exported.
      expect(held.getBaseWeight('model.layers.1.mlp.up_proj.weight')).toEqual(weights.get('model.layers.1.mlp.up_proj.weight'))
    } finally {
      held.dispose()
      plain.dispose()
    }
  })

  it('a weight written later is stored exactly (float32 where its values are not half precision)', () => {
    const weights = weightsAs(toBf16)
    const model = new LlamaModel(CONFIG, weights, { frozenWeights: 'native' })
    try {
      const name = 'model.layers.0.mlp.gate_proj.weight'
      const values = createPrng('write').fillUniform(new Float32Array((weights.get(name) as Float32Array).length), -1, 1)
      model.setBaseWeight(name, values)
      expect(model.getBaseWeight(name)).toEqual(values)
      expect(model.frozenWeightStorage().modules['model.layers.0.mlp.gate_proj']).toBe('f32')
    } finally {
      model.dispose()
    }
  })
})

/** TinyLlama-1.1B's shapes (no weights are made: the ceiling is checked from the config). */
const TINYLLAMA = llamaConfig({ vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKvHeads: 4, maxPositionEmbeddings: 2048 })

describe('the wasm heap ceiling', () => {
  beforeAll(async () => {
    await useWasm()
  })

  it('a model whose float32 tensors cannot fit is refused with the way out, before any weight is read', () => {
    expect(tfjsBaseWeightBytes(TINYLLAMA, ['q_proj', 'v_proj'], false, true)).toBeGreaterThan(WASM_BASE_WEIGHT_CEILING)
    expect(tfjsBaseWeightBytes(TINYLLAMA, ['q_proj', 'v_proj'], true, false)).toBeLessThan(WASM_BASE_WEIGHT_CEILING)
    setNativeKernels(undefined)
    try {
      expect(() => new LlamaModel(TINYLLAMA, new Map())).toThrow(/1\.10B-parameter model needs \d+\.\d GiB .*npm run build:native/)
    } finally {
      setNativeKernels(native.kernels)
    }
    if (native.kernels !== undefined) {
      expect(() => new LlamaModel(TINYLLAMA, new Map(), { frozenWeights: 'tfjs' })).toThrow(/frozenWeights 'native'/)
      // With the addon holding the frozen layers it fits: the constructor goes on to the weights.
      expect(() => new LlamaModel(TINYLLAMA, new Map())).toThrow(/weight 'model.embed_tokens.weight': missing/)
    }
  })
})

describe.runIf(native.kernels === undefined)('frozen weights without the native addon', () => {
  it(`stay tfjs tensors (${native.reason ?? ''})`, async () => {
    await useWasm()
    const model = new LlamaModel(CONFIG, weightsAs((x) => x))
    expect(model.frozenWeightStorage().nativeBytes).toBe(0)
    model.dispose()
    expect(() => new LlamaModel(CONFIG, weightsAs((x) => x), { frozenWeights: 'native' })).toThrow(/native kernels/)
  })
})
