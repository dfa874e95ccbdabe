/**
 * The model backend (tfjs wasm): what the harness relies on. Uses the bundled checkpoint
 * when present, else the random-init fallback; a tiny data budget keeps it fast.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseEvalArgs } from '../../src/eval/cli.js'
import { createModelBackend } from '../../src/eval/model-backend.js'
import { freshAdapter } from '../../src/eval/simulate.js'
import type { SimBackend, TrainJob } from '../../src/eval/types.js'

const bits = (x: Float32Array): number[] => [...new Uint32Array(x.buffer, x.byteOffset, x.length)]

describe('model backend', () => {
  let backend: SimBackend
  beforeAll(async () => {
    const config = { ...parseEvalArgs(['--quick', '--out', 'unused']), trainExamples: 24, evalExamples: 6, maxLen: 64, batchSize: 2 }
    backend = await createModelBackend(config)
  })
  afterAll(async () => {
    await backend?.dispose()
  })

  it('adapts every linear module and exposes the skills suite (category = task) by default', () => {
    const kinds = new Set(backend.shapes.map((s) => s.name.split('.').at(-1)))
    expect([...kinds].sort()).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'])
    expect(backend.trainExamples).toHaveLength(24)
    expect(backend.evalExamples).toHaveLength(6)
    expect(backend.trainExamples.every((e) => ['spell', 'first-letter', 'last-letter', 'length', 'synonym', 'kind', 'add'].includes(e.category))).toBe(true)
    expect(backend.ignoreQuestionBaseline).toBeGreaterThanOrEqual(0)
    expect(backend.ignoreQuestionBaseline).toBeLessThan(0.5)
  })

  it('--data wordnet --targets q_proj,v_proj: the WordNet definitions on q_proj and v_proj, no exact match', async () => {
    const wn = await createModelBackend({
      ...parseEvalArgs(['--quick', '--data', 'wordnet', '--targets', 'q_proj,v_proj', '--out', 'unused']),
      trainExamples: 24,
      evalExamples: 4,
      maxLen: 40,
    })
    try {
      expect(wn.shapes.every((s) => /\.(q_proj|v_proj)$/.test(s.name))).toBe(true)
      expect(wn.trainExamples[0].category).toMatch(/^(noun|verb|adj|adv)\./)
      expect(wn.ignoreQuestionBaseline).toBeUndefined()
      expect((await wn.evaluate([0, 1])).exact).toBeUndefined()
    } finally {
      await wn.dispose()
    }
  })

  it('trains deterministically (the job cache relies on it), and FFA leaves A bit-identical', async () => {
    const start = freshAdapter(backend.shapes, 4, 0, 1)
    const job: TrainJob = { start, examples: [0, 1, 2, 3, 4, 5], steps: 2, seed: 'x', freezeA: false }
    const a = await backend.train(job)
    const b = await backend.train(job)
    expect(a.meanLoss).toBe(b.meanLoss)
    expect(bits(a.adapter.modules[0].loraB)).toEqual(bits(b.adapter.modules[0].loraB))
    expect(bits(a.adapter.modules[0].loraA)).not.toEqual(bits(start.modules[0].loraA))
    const frozen = await backend.train({ ...job, freezeA: true })
    for (const [i, m] of frozen.adapter.modules.entries()) {
      expect(bits(m.loraA)).toEqual(bits(start.modules[i].loraA))
      expect(m.loraB.some((v) => v !== 0)).toBe(true)
    }
  })

  it('scores held-out examples per example with the base weights it is given', async () => {
    const idx = [0, 1, 2, 3, 4, 5]
    const s = await backend.evaluate(idx)
    expect(s.tokens.every((t) => t > 0)).toBe(true)
    expect([...(s.exact ?? [])].every((x) => x === 0 || x === 1)).toBe(true)
    expect(s.exact).toHaveLength(6)
    expect(s.lossSum.every((l) => Number.isFinite(l) && l > 0)).toBe(true)
    const name = backend.shapes[0].name
    const w = backend.getBaseWeight(name)
    backend.setBaseWeight(name, w.map((v) => v * 3))
    const changed = await backend.evaluate(idx)
    backend.setBaseWeight(name, w)
    expect(changed.lossSum).not.toEqual(s.lossSum)
    expect((await backend.evaluate(idx)).lossSum).toEqual(s.lossSum)
  })
})
