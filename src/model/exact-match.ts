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
import { scoreAnswers, type SkillExample, type SkillTask } from './data/skills.js'
import { formatPrompt, tokenizeExample } from './data/template.js'
import { generate } from './generate.js'
import type { LlamaModel } from './llama.js'
import type { LlamaTokenizer } from './tokenizer.js'
import { allHit, type ResponseScores, scoreResponses } from './response-scores.js'
import type { TrainingExample } from './trainer.js'

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
 *
 * `referenceScores`: the questions' reference answers (`output`) already scored by
 * teacher forcing (scoreResponses, row i = question i, same `maxLen`); their bits are read
 * from there and only the other accepted answers are forwarded.
 */
export async function strictExactByTeacherForcing(
  model: LlamaModel,
  tok: LlamaTokenizer,
  questions: readonly SkillExample[],
  options: { readonly maxLen: number; readonly batchSize?: number; readonly referenceScores?: Pick<ResponseScores, 'tokens' | 'correct'> },
): Promise<Float64Array> {
  const known = options.referenceScores
  if (known !== undefined && (known.tokens.length !== questions.length || known.correct.length !== questions.length)) {
    throw new RangeError(`referenceScores has ${known.tokens.length} rows for ${questions.length} questions`)
  }
  const exact = new Float64Array(questions.length)
  const rows: { q: number; ex: TrainingExample }[] = []
  questions.forEach((q, i) => {
    for (const a of new Set(q.accept)) {
      const t = tokenizeExample({ ...q, output: a }, tok, options.maxLen)
      if (t.truncated) throw new RangeError(`maxLen ${options.maxLen} cuts the answer '${a}' of '${q.instruction}'; use a longer sequence length`)
      if (known !== undefined && a === q.output) {
        if (allHit(known, i)) exact[i] = 1
      } else {
        rows.push({ q: i, ex: { inputIds: t.inputIds, promptLength: t.promptLength } })
      }
    }
  })
  const scores = await scoreResponses(model, rows.map((r) => r.ex), { seqLen: options.maxLen, padId: tok.padId, batchSize: options.batchSize ?? 32 })
  rows.forEach((r, k) => {
    if (allHit(scores, k)) exact[r.q] = 1
  })
  return exact
}
