import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import { LlamaModel, randomLlamaWeights } from '../../src/model/llama.js'
import {
  adapterGradients,
  evaluate,
  exampleTargets,
  IGNORE_INDEX,
  learningRate,
  makeBatch,
  trainLora,
  explainWasmAbort,
  TrainingAbortedError,
  TrainingError,
  type TrainingExample,
} from '../../src/model/trainer.js'
import { referenceLogits, TINY, useWasm } from './helpers.js'

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const
const weights = randomLlamaWeights(TINY, 'trainer-base', 0.1)

/** Four sequences to memorize; the first 3 tokens are prompt. */
const DATA: TrainingExample[] = [
  [1, 2, 3, 10, 11, 12, 13, 14, 15, 16],
  [1, 2, 4, 20, 21, 22, 23, 24, 25, 26],
  [1, 2, 5, 30, 31, 32, 33, 34, 35, 36],
  [1, 2, 6, 9, 8, 7, 6, 5, 4, 3],
].map((inputIds) => ({ inputIds, promptLength: 3 }))

function freshModel(rank = 8): LlamaModel {
  const model = new LlamaModel(TINY, weights, { targetModules: ALL })
  model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank, alpha: 2 * rank, seed: 5 }))
  return model
}

describe('batching', () => {
  it('puts targets on response tokens only (promptLength), shifted by one', () => {
    const t = exampleTargets({ inputIds: [5, 6, 7, 8], promptLength: 2 }, 4)
    // position 0 predicts 6 (prompt: ignored), 1 predicts 7, 2 predicts 8, 3 has no next token
    expect([...t]).toEqual([IGNORE_INDEX, 7, 8, IGNORE_INDEX])
  })

  it('accepts HF-style labels', () => {
    const t = exampleTargets({ inputIds: [5, 6, 7, 8], labels: [-100, -100, 7, -100] }, 4)
    expect([...t]).toEqual([IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX])
  })

  it('pads right to the longest example and cuts to seqLen', () => {
    const b = makeBatch(
      [
        { inputIds: [1, 2, 3], promptLength: 1 },
        { inputIds: [4, 5, 6, 7, 8, 9], promptLength: 1 },
      ],
      5,
      0,
    )
    expect(b.seqLen).toBe(5)
    expect([...b.ids]).toEqual([1, 2, 3, 0, 0, 4, 5, 6, 7, 8])
    expect([...b.rows]).toEqual([0, 1, 5, 6, 7, 8])
    expect([...b.targets]).toEqual([2, 3, 5, 6, 7, 8])
    expect(() => makeBatch([{ inputIds: [1, 99] }], 4, 0, 37)).toThrow(TrainingError)
  })

  it('schedules the learning rate', () => {
    const o = { lr: 1, steps: 10, warmupSteps: 2, schedule: 'cosine' as const }
    expect(learningRate(o, 1)).toBe(0.5)
    expect(learningRate(o, 2)).toBe(1)
    expect(learningRate(o, 10)).toBeCloseTo(0)
    expect(learningRate({ lr: 3, steps: 5 }, 4)).toBe(3)
  })
})

describe('trainLora', () => {
  beforeAll(async () => {
    await useWasm()
  })

  it("explains the wasm backend's bare Aborted() (its heap ran out) and leaves other errors alone", () => {
    const explained = explainWasmAbort(new Error('Aborted(). Build with -sASSERTIONS for more info.'), { batchSize: 16, seqLen: 64 })
    expect(explained).toBeInstanceOf(TrainingError)
    expect((explained as Error).message).toMatch(/ran out of memory .* 16 x 64 tokens\): lower the batch size or the sequence length/)
    const other = new Error('something else')
    expect(explainWasmAbort(other, { batchSize: 1, seqLen: 1 })).toBe(other)
  })

  it('memorizes a few sequences: loss and held-out eval drop, no tensor leaks', async () => {
    const model = freshModel()
    const before = await evaluate(model, DATA, { seqLen: 16 })
    const counts: number[] = []
    const result = await trainLora(model, DATA, {
      steps: 40,
      batchSize: 4,
      seqLen: 16,
      lr: 1e-2,
      seed: 1,
      weightDecay: 0.01,
      evalExamples: DATA,
      onStep: () => counts.push(tf.memory().numTensors),
    })
    expect(result.losses).toHaveLength(40)
    expect(result.finalLoss).toBeLessThan(0.3 * result.losses[0])
    expect(result.eval?.loss).toBeLessThan(0.3 * before.loss)
    expect(result.eval?.perplexity).toBeCloseTo(Math.exp(result.eval?.loss ?? 0), 6)
    // No leaks: as many live tensors after step 10 as after the last step.
    expect(counts[counts.length - 1]).toBe(counts[9])
    model.dispose()
  })

  it('is deterministic for a seed', async () => {
    const run = async () => {
      const model = freshModel(2)
      const r = await trainLora(model, DATA, { steps: 3, batchSize: 2, seqLen: 16, lr: 1e-2, seed: 'det' })
      const a = model.getAdapter()
      model.dispose()
      return { losses: r.losses, a }
    }
    const [x, y] = [await run(), await run()]
    expect(x.losses).toEqual(y.losses)
    expect(x.a).toEqual(y.a)
  })

  it('stops on abort, keeping the steps done', async () => {
    const model = freshModel(2)
    const ac = new AbortController()
    const p = trainLora(model, DATA, {
      steps: 50,
      batchSize: 2,
      seqLen: 16,
      lr: 1e-2,
      seed: 1,
      signal: ac.signal,
      onStep: (i) => {
        if (i.step === 3) ac.abort()
      },
    })
    await expect(p).rejects.toBeInstanceOf(TrainingAbortedError)
    await expect(p).rejects.toMatchObject({ name: 'AbortError', stepsCompleted: 3 })
    model.dispose()
  })

  it('refuses a model without adapter and data without targets', async () => {
    const model = new LlamaModel(TINY, weights)
    await expect(trainLora(model, DATA, { steps: 1, batchSize: 1, seqLen: 8, lr: 1e-3, seed: 0 })).rejects.toThrow(/setAdapter/)
    model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: 2, alpha: 4, seed: 0 }))
    const noTargets = [{ inputIds: [1, 2, 3], promptLength: 3 }]
    await expect(trainLora(model, noTargets, { steps: 1, batchSize: 1, seqLen: 8, lr: 1e-3, seed: 0 })).rejects.toThrow(/no training example/)
    model.dispose()
  })
})

describe('adapter gradients', () => {
  beforeAll(async () => {
    await useWasm()
  })

  it('match central finite differences of the float64 reference loss', async () => {
    const w = randomLlamaWeights(TINY, 'gradcheck', 0.3)
    const model = new LlamaModel(TINY, w, { targetModules: ['q_proj', 'k_proj', 'v_proj', 'down_proj'] })
    // Non-zero A and B everywhere, so every path (rope, attention, frozen backward, gather, CE) carries gradient.
    const init = initAdapter({ shapes: model.targetModuleShapes(), rank: 2, alpha: 4, seed: 9 })
    const adapter = {
      modules: init.modules.map((m, i) => ({ ...m, loraB: m.loraA.slice(0, m.loraB.length).map((x) => x * (1 + (i % 3))) })),
    }
    for (const m of adapter.modules) if (m.loraB.length > m.loraA.length) throw new Error('test setup')
    model.setAdapter(adapter)
    const examples: TrainingExample[] = [
      { inputIds: [3, 8, 1, 30, 2, 17, 5, 9], promptLength: 3 },
      { inputIds: [7, 7, 21, 4, 11], promptLength: 1 },
    ]
    const { loss, modules } = await adapterGradients(model, examples, { seqLen: 16 })

    // Reference loss: mean over target tokens of logsumexp - logit[target], in float64.
    const refLoss = (a: typeof adapter): number => {
      const seqs = examples.map((e) => [...e.inputIds])
      const logits = referenceLogits(TINY, w, seqs, a)
      let sum = 0
      let n = 0
      examples.forEach((e, b) => {
        const tg = exampleTargets(e, e.inputIds.length)
        for (let i = 0; i < tg.length; i++) {
          if (tg[i] === IGNORE_INDEX) continue
          const row = logits[b].subarray(i * TINY.vocabSize, (i + 1) * TINY.vocabSize)
          const mx = Math.max(...row)
          const lse = mx + Math.log(row.reduce((acc, z) => acc + Math.exp(z - mx), 0))
          sum += lse - row[tg[i]]
          n++
        }
      })
      return sum / n
    }
    expect(loss).toBeCloseTo(refLoss(adapter), 4)

    const probes: [string, 'loraA' | 'loraB', number][] = [
      ['model.layers.0.self_attn.q_proj', 'loraA', 5],
      ['model.layers.0.self_attn.k_proj', 'loraB', 3],
      ['model.layers.0.self_attn.v_proj', 'loraA', 40],
      ['model.layers.0.mlp.down_proj', 'loraB', 17],
      ['model.layers.1.self_attn.q_proj', 'loraB', 20],
      ['model.layers.1.mlp.down_proj', 'loraA', 60],
    ]
    for (const [name, field, idx] of probes) {
      const mi = adapter.modules.findIndex((m) => m.name === name)
      const perturbed = (delta: number) => {
        const mods = adapter.modules.map((m) => ({ ...m, loraA: m.loraA.slice(), loraB: m.loraB.slice() }))
        mods[mi][field][idx] += delta
        return { value: refLoss({ modules: mods }), step: mods[mi][field][idx] }
      }
      const hi = perturbed(1e-3)
      const lo = perturbed(-1e-3)
      const numeric = (hi.value - lo.value) / (hi.step - lo.step)
      const g = modules.find((m) => m.name === name) as (typeof modules)[number]
      const analytic = (field === 'loraA' ? g.dA : g.dB)[idx]
      expect(Math.abs(analytic - numeric), `${name}.${field}[${idx}]: ${analytic} vs ${numeric}`).toBeLessThan(2e-3 * Math.max(1, Math.abs(numeric)) + 1e-5)
      expect(Math.abs(numeric)).toBeGreaterThan(1e-5) // the probe is not a dead entry
    }
    model.dispose()
  })
})
