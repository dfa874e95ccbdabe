/**
 * Checkpoints are loaded tensor by tensor (src/model/streamed-weights.ts): headers first,
 * then each tensor read once, copied where the model keeps it, and dropped; a sharded
 * checkpoint the same way; damage named by file and tensor.
 */
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadModel, openCheckpoint, saveCheckpoint } from '../../src/model/checkpoint.js'
import { LlamaModel, randomLlamaWeights } from '../../src/model/llama.js'
import { SafetensorsError } from '../../src/model/safetensors.js'
import { StreamedWeights } from '../../src/model/streamed-weights.js'
import { loadNativeKernels } from '../../src/model/native.js'
import { tempDir, TINY, useWasm } from './helpers.js'

describe('streamed checkpoint loading', () => {
  let dir: string
  let cleanup: () => Promise<void>
  const weights = randomLlamaWeights(TINY, 'streamed')
  beforeAll(async () => {
    await useWasm()
    ;({ dir, cleanup } = await tempDir())
  })
  afterAll(async () => cleanup?.())

  it.each([
    ['one file', undefined],
    ['shards', 20_000],
  ])('%s: headers first, every tensor read exactly once, the same model as from memory', async (_label, maxShardBytes) => {
    const d = path.join(dir, `ckpt-${maxShardBytes ?? 'single'}`)
    await saveCheckpoint(d, TINY, weights, { maxShardBytes })
    const opened = await openCheckpoint(d)
    try {
      expect([...opened.weights.keys()].sort()).toEqual([...weights.keys()].sort())
      expect(opened.weights.shapeOf('model.layers.1.mlp.down_proj.weight')).toEqual([TINY.hiddenSize, TINY.intermediateSize])
      expect(opened.weights.get('model.norm.weight')).toEqual(weights.get('model.norm.weight'))
    } finally {
      opened.weights.close()
    }
    const reads = new Map<string, number>()
    // Count the reads with a wrapper around the real method.
    const real = StreamedWeights.prototype.get
    StreamedWeights.prototype.get = function (this: StreamedWeights, name: string) {
      reads.set(name, (reads.get(name) ?? 0) + 1)
      return real.call(this, name)
    }
    let streamed: LlamaModel
    try {
      streamed = await loadModel(d)
    } finally {
      StreamedWeights.prototype.get = real
    }
    expect([...reads.keys()].sort()).toEqual([...weights.keys()].sort())
    expect([...reads.values()].every((n) => n === 1)).toBe(true)
    const inMemory = new LlamaModel(TINY, weights)
    const ids = tf.tensor2d([[1, 2, 3, 4, 5, 6]], undefined, 'int32')
    const a = streamed.forward(ids)
    const b = inMemory.forward(ids)
    expect(Buffer.from((await a.data()).buffer).equals(Buffer.from((await b.data()).buffer))).toBe(true)
    tf.dispose([a, b, ids])
    streamed.dispose()
    inMemory.dispose()
  })

  it.runIf(loadNativeKernels().kernels !== undefined)('a BF16 checkpoint: frozen layers go from the file\'s bits to the addon; the same logits as the decoded weights in memory', async () => {
    const d = path.join(dir, 'bf16')
    await saveCheckpoint(d, TINY, weights, { dtype: 'BF16', maxShardBytes: 20_000 })
    const opened = await openCheckpoint(d)
    const decoded = new Map([...opened.weights.keys()].map((k) => [k, opened.weights.get(k) as Float32Array]))
    opened.weights.close()
    const streamed = await loadModel(d, { frozenWeights: 'native' })
    const inMemory = new LlamaModel(TINY, decoded, { frozenWeights: 'tfjs' })
    try {
      const storage = streamed.frozenWeightStorage()
      expect(storage.modules['model.layers.0.mlp.up_proj']).toBe('bf16')
      expect(storage.modules.lm_head).toBe('bf16')
      expect(storage.modules.embed_tokens).toBe('bf16')
      expect(storage.modules['model.layers.0.self_attn.q_proj']).toBe('tfjs')
      const ids = tf.tensor2d([[1, 2, 3, 4, 5, 6]], undefined, 'int32')
      const a = streamed.forward(ids)
      const b = inMemory.forward(ids)
      expect(Buffer.from((await a.data()).buffer).equals(Buffer.from((await b.data()).buffer))).toBe(true)
      tf.dispose([a, b, ids])
      expect(streamed.getBaseWeight('lm_head.weight')).toEqual(decoded.get('lm_head.weight'))
    } finally {
      streamed.dispose()
      inMemory.dispose()
    }
  })

  it('names the file and tensor of a truncated tensor, and a file shorter than its header', async () => {
    const d = path.join(dir, 'truncated')
    await saveCheckpoint(d, TINY, weights)
    const f = path.join(d, 'model.safetensors')
    const bytes = await readFile(f)
    await writeFile(f, bytes.subarray(0, bytes.length - 4))
    // The header promises more data than the file holds: refused when opened.
    await expect(openCheckpoint(d)).rejects.toThrow(SafetensorsError)
    await expect(openCheckpoint(d)).rejects.toThrow(/truncated[/\\]model\.safetensors: /)
    await writeFile(f, bytes.subarray(0, 6))
    await expect(openCheckpoint(d)).rejects.toThrow(/shorter than the 8-byte header length/)
  })
})
