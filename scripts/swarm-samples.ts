/**
 * The end of `npm run swarm` on the model trainer: a few held-out questions, answered greedily
 * by the base model and by the federated one (the swarm's exported `federated/model`), so a
 * user sees what the federation learned. Skills-suite questions (one per task) with the right
 * answer, or WordNet held-out definitions.
 */
import { selectBackend } from '../src/model/backend.js'
import { defaultModelDir } from '../src/model/bundled.js'
import { loadModel } from '../src/model/checkpoint.js'
import { SKILL_TASKS, type SkillExample, skillsSuite } from '../src/model/data/skills.js'
import type { InstructionExample } from '../src/model/data/types.js'
import { wordnetTask } from '../src/model/data/wordnet.js'
import { exactMatchAccuracy } from '../src/model/exact-match.js'
import { formatPrompt } from '../src/model/data/template.js'
import { generate } from '../src/model/generate.js'
import { LlamaTokenizer } from '../src/model/tokenizer.js'

export interface SampleAnswer {
  readonly question: string
  readonly reference: string
  readonly base: string
  readonly federated: string
}

/** Whether the swarm's `--data` has bundled held-out questions to sample: the skills suite or WordNet (a JSONL file's are the user's). */
export function hasSampleQuestions(data: string | undefined): boolean {
  return data === undefined || data === 'wordnet' || data === 'skills'
}

/** Held-out questions of `data` ('skills', else WordNet's), answered by the base and the federated model. */
export async function sampleAnswers(baseDir: string | undefined, federatedDir: string, data: string | undefined): Promise<SampleAnswer[]> {
  await selectBackend('auto')
  const skills = data === 'skills'
  const held = skills ? skillsSuite().eval : []
  const questions: InstructionExample[] = skills
    ? SKILL_TASKS.map((t) => held.find((e) => e.category === t)).filter((e): e is SkillExample => e !== undefined)
    : wordnetTask({ maxTrain: 0, maxEval: 3 }).eval
  const answer = async (dir: string): Promise<string[]> => {
    const model = await loadModel(dir)
    const tok = await LlamaTokenizer.fromDir(dir)
    try {
      if (skills) return [...(await exactMatchAccuracy(model, tok, questions as SkillExample[])).answers]
      const out: string[] = []
      for (const q of questions) {
        const ids = await generate(model, [...(tok.bosId !== undefined ? [tok.bosId] : []), ...tok.encode(formatPrompt(q))], { maxNewTokens: 24, stopIds: [tok.eosId] })
        out.push(tok.decode(ids.filter((id) => id !== tok.eosId)))
      }
      return out
    } finally {
      model.dispose()
    }
  }
  const base = await answer(baseDir ?? defaultModelDir())
  const federated = await answer(federatedDir)
  return questions.map((q, i) => ({
    question: [q.instruction, q.input].filter((s) => s !== '').join(' '),
    reference: q.output,
    base: base[i] ?? '',
    federated: federated[i] ?? '',
  }))
}
