/**
 * The harness's strict exact match (teacher forcing, one pass per accepted answer) against
 * real greedy decoding, on the bundled model after a LoRA has learned some answers: per
 * question, "the greedy answer is token for token an accepted answer" must be the same
 * bit under both, and some questions must be right (else the check would be vacuous).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import { loadModel } from '../../src/model/checkpoint.js'
import { skillsSuite, type SkillExample } from '../../src/model/data/skills.js'
import { formatPrompt, tokenizeExample } from '../../src/model/data/template.js'
import { strictExactByTeacherForcing } from '../../src/model/exact-match.js'
import { generate } from '../../src/model/generate.js'
import { scoreResponses } from '../../src/model/response-scores.js'
import type { LlamaModel } from '../../src/model/llama.js'
import { LlamaTokenizer } from '../../src/model/tokenizer.js'
import { trainLora } from '../../src/model/trainer.js'
import { useWasm } from './helpers.js'

const MODEL_DIR = new URL('../../models/flora-tiny/', import.meta.url).pathname
const MAX_LEN = 64

describe('strict exact match by teacher forcing', () => {
  let model: LlamaModel
  let tok: LlamaTokenizer
  let questions: SkillExample[]
  let asked: SkillExample[]

  beforeAll(async () => {
    await useWasm()
    tok = await LlamaTokenizer.fromDir(MODEL_DIR)
    model = await loadModel(MODEL_DIR, { targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] })
    const suite = skillsSuite()
    // Two questions of every task; one synonym question has several accepted answers.
    questions = []
    for (const task of ['spell', 'first-letter', 'last-letter', 'length', 'synonym', 'kind', 'add']) {
      questions.push(...suite.train.filter((q) => q.category === task).slice(0, 2))
    }
    expect(questions.some((q) => q.accept.length > 1)).toBe(true)
    model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: 8, alpha: 16, seed: 'exact-match-test' }))
    const data = questions.map((q) => {
      const t = tokenizeExample(q, tok, MAX_LEN)
      return { inputIds: t.inputIds, promptLength: t.promptLength }
    })
    // Learn some of the 14 answers by heart; the held-out questions stay mostly wrong, so
    // both outcomes get checked.
    await trainLora(model, data, { steps: 40, batchSize: 7, seqLen: MAX_LEN, lr: 1e-2, seed: 'exact-match-test', padId: tok.padId })
    asked = [...questions, ...suite.eval.slice(0, 14)]
  }, 120_000)

  afterAll(() => model?.dispose())

  it('marks a question right exactly when greedy decoding produces an accepted answer token for token', async () => {
    const strict = await strictExactByTeacherForcing(model, tok, asked, { maxLen: MAX_LEN, batchSize: 5 })
    const greedy: number[] = []
    for (const q of asked) {
      const prompt = [tok.bosId ?? 1, ...tok.encode(formatPrompt(q))]
      const longest = Math.max(...q.accept.map((a) => tok.encode(a).length))
      const out = await generate(model, prompt, { maxNewTokens: longest + 1, stopIds: [tok.eosId] })
      const hit = q.accept.some((a) => {
        const want = [...tok.encode(a), tok.eosId]
        return want.length === out.length && want.every((id, i) => id === out[i])
      })
      greedy.push(hit ? 1 : 0)
    }
    expect([...strict]).toEqual(greedy)
    const right = greedy.reduce((a, b) => a + b, 0)
    expect(right).toBeGreaterThan(0)
    expect(right).toBeLessThan(asked.length)
  }, 120_000)

  it('reads the reference answers\' bits from a loss pass (scoreResponses) and gives the same result', async () => {
    const full = await strictExactByTeacherForcing(model, tok, asked, { maxLen: MAX_LEN, batchSize: 5 })
    const reference = asked.map((q) => {
      const t = tokenizeExample(q, tok, MAX_LEN)
      return { inputIds: t.inputIds, promptLength: t.promptLength }
    })
    const scores = await scoreResponses(model, reference, { seqLen: MAX_LEN, padId: tok.padId, batchSize: 16 })
    expect(scores.lossSum.every((l) => Number.isFinite(l) && l > 0)).toBe(true)
    const withScores = await strictExactByTeacherForcing(model, tok, asked, { maxLen: MAX_LEN, batchSize: 5, referenceScores: scores })
    expect([...withScores]).toEqual([...full])
    // Only the multi-answer question's other answers decide anything beyond the loss pass.
    const fromLossPassOnly = asked.map((_, i) => (scores.correct[i] === scores.tokens[i] ? 1 : 0))
    expect(fromLossPassOnly.reduce((a: number, b) => a + b, 0)).toBeGreaterThan(0)
    await expect(strictExactByTeacherForcing(model, tok, asked, { maxLen: MAX_LEN, referenceScores: { tokens: scores.tokens.slice(1), correct: scores.correct } })).rejects.toThrow(
      /rows for/,
    )
  }, 120_000)

  it('refuses a sequence length that would cut an answer', async () => {
    const spell = questions.find((q) => q.category === 'spell') as SkillExample
    await expect(strictExactByTeacherForcing(model, tok, [spell], { maxLen: 12 })).rejects.toThrow(/cuts the answer/)
  })
})
