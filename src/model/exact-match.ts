/**
 * Exact-match evaluation of questions with accepted answers (the skills suite): the model
 * answers each held-out question greedily, in the instruction format, and an answer counts
 * only when it is exactly one of the accepted ones (data/skills.ts normalizeAnswer).
 */
import { scoreAnswers, type SkillExample, type SkillTask } from './data/skills.js'
import { formatPrompt } from './data/template.js'
import { generate } from './generate.js'
import type { LlamaModel } from './llama.js'
import type { LlamaTokenizer } from './tokenizer.js'

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
