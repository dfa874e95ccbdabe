/**
 * Exact-match evaluation of questions with accepted answers (the skills suite): the model
 * answers each held-out question greedily, in the instruction format, and an answer counts
 * only when it is exactly one of the accepted ones (data/skills.ts normalizeAnswer).
 *
 * Two ways to score it:
 *  - `exactMatchAccuracy` decodes each answer greedily (one forward pass per new token);
 *  - `strictExactByTeacherForcing` needs one forward pass per accepted answer: the greedy
 *    answer is token for token an accepted answer a exactly when, with a (and the end
 *    token) forced, every next-token argmax is a's next token. Greedy decoding is unique, so
 *    this is exact for answers written as the tokenizer writes them; it misses only
 *    answers that differ in case or a final period, or come out as another tokenization of
 *    the same text, which normalizeAnswer would accept. The evaluation harness uses it.
 */
import * as tf from '@tensorflow/tfjs'
import { scoreAnswers, type SkillExample, type SkillTask } from './data/skills.js'
import { formatPrompt, tokenizeExample } from './data/template.js'
import { generate } from './generate.js'
import type { LlamaModel } from './llama.js'
import type { LlamaTokenizer } from './tokenizer.js'
import { makeBatch, type TrainingExample } from './trainer.js'

/** Whether every example carries accepted answers (is a skills-suite question). */
export function isSkillQuestions(examples: readonly object[]): examples is readonly SkillExample[] {
  return examples.length > 0 && examples.every((e) => Array.isArray((e as Partial<SkillExample>).accept))
}

export interface ExactMatchResult {
  /** Share of questions answered exactly right. */
  readonly all: number
  readonly byTask: ReadonlyMap<SkillTask, { correct: number; total: number }>
  readonly answers: readonly string[]
}

/** Greedy answers to `questions` and their exact-match score; tokens per answer: the longest accepted answer's, plus 4. */
export async function exactMatchAccuracy(
  model: LlamaModel,
  tok: LlamaTokenizer,
  questions: readonly SkillExample[],
  options: { readonly signal?: AbortSignal } = {},
): Promise<ExactMatchResult> {
  const budget = Math.max(1, ...questions.flatMap((q) => q.accept.map((a) => tok.encode(a).length))) + 4
  const answers: string[] = []
  for (const q of questions) {
    options.signal?.throwIfAborted()
    const prompt = [...(tok.bosId !== undefined ? [tok.bosId] : []), ...tok.encode(formatPrompt(q))]
    const out = await generate(model, prompt, { maxNewTokens: budget, stopIds: [tok.eosId], ...(options.signal !== undefined ? { signal: options.signal } : {}) })
    answers.push(tok.decode(out.filter((id) => id !== tok.eosId)))
  }
  const s = scoreAnswers(questions, answers)
  return { all: s.all, byTask: s.byTask, answers }
}

/**
 * Per question, 1 when the greedy answer is token for token one of its accepted answers,
 * else 0 (see the module comment), in batches of `batchSize` rows. Throws when `maxLen`
 * would cut an answer (a cut answer has no end token to check).
 */
export async function strictExactByTeacherForcing(
  model: LlamaModel,
  tok: LlamaTokenizer,
  questions: readonly SkillExample[],
  options: { readonly maxLen: number; readonly batchSize?: number },
): Promise<Float64Array> {
  const rows: { q: number; ex: TrainingExample }[] = []
  questions.forEach((q, i) => {
    for (const a of new Set(q.accept)) {
      const t = tokenizeExample({ ...q, output: a }, tok, options.maxLen)
      if (t.truncated) throw new RangeError(`maxLen ${options.maxLen} cuts the answer '${a}' of '${q.instruction}'; use a longer sequence length`)
      rows.push({ q: i, ex: { inputIds: t.inputIds, promptLength: t.promptLength } })
    }
  })
  const exact = new Float64Array(questions.length)
  const batchSize = options.batchSize ?? 32
  const c = model.config
  for (let i = 0; i < rows.length; i += batchSize) {
    const group = rows.slice(i, i + batchSize)
    const batch = makeBatch(group.map((r) => r.ex), options.maxLen, tok.padId, c.vocabSize)
    const hit = tf.tidy(() => {
      const ids = tf.tensor2d(batch.ids, [batch.batchSize, batch.seqLen], 'int32')
      const logits = model.lmHead(tf.gather(model.hiddenStates(ids), tf.tensor1d(batch.rows, 'int32')) as tf.Tensor2D)
      return tf.equal(tf.argMax(logits, 1), tf.tensor1d(batch.targets, 'int32'))
    })
    const hits = (await hit.data()) as Uint8Array
    hit.dispose()
    const misses = new Int32Array(group.length)
    batch.rows.forEach((row, j) => {
      if (hits[j] === 0) misses[Math.floor(row / batch.seqLen)]++
    })
    group.forEach((r, b) => {
      if (misses[b] === 0) exact[r.q] = 1
    })
  }
  return exact
}
