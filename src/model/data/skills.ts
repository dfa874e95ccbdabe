/**
 * The skills suite: instruction tasks whose knowledge lives in the base model's pretraining
 * text and whose skill (the question format, and simple operations on the knowledge) is what
 * fine-tuning teaches, as in real instruction tuning.
 *
 * Entities are English words (single-word lemmas of WordNet's train split) and the sums of
 * two numbers up to twenty, in words. For every entity the pretraining text (`pretrainDocs`)
 * states its facts in plain sentences, in several phrasings and orders (question answering
 * only extracts facts a model saw phrased more than one way: Allen-Zhu & Li, "Physics of
 * Language Models 3.1", 2023):
 *   - a word's spelling ("lantern is spelled l a n t e r n.", "l-a-n-t-e-r-n spells lantern."),
 *     its synonyms, its kind (WordNet's lexicographer file: "A lantern is a kind of artifact."),
 *     and its definition;
 *   - every sum ("seven plus five is twelve.", "Adding five to seven gives twelve.").
 * The fine-tuning tasks ask about them in the instruction format:
 *   spell, first-letter, last-letter, length (letters, in words): spelling knowledge, the last
 *     three composed with a letter operation;
 *   synonym, kind: knowledge;
 *   add: arithmetic facts.
 * One in five words (and sums) is held out: no fine-tuning question of any task is about it,
 * but the pretraining text states its facts. Held-out accuracy therefore measures whether the
 * skill transfers to knowledge the model only read, never was asked about. `majorityAnswers`
 * gives the answer that ignores the question (the commonest training answer of each task), whose
 * held-out score must stay low for the tasks to need the knowledge.
 *
 * Every example's `category` is its task, so the category partitioner splits clients non-IID
 * by task type, as the FLoRA paper splits Dolly by category. Everything is deterministic.
 */
import { createHash } from 'node:crypto'
import { createPrng } from '../../lora/prng.js'
import type { InstructionExample } from './types.js'
import { loadWordNet, splitWordNet, type Synset } from './wordnet.js'

export const SKILL_TASKS = ['spell', 'first-letter', 'last-letter', 'length', 'synonym', 'kind', 'add'] as const
export type SkillTask = (typeof SKILL_TASKS)[number]

export interface SkillExample extends InstructionExample {
  readonly category: SkillTask
  /** Every answer counted as right (a word has several synonyms); `output` is the first. */
  readonly accept: readonly string[]
  /** The word (or `a+b`) the question is about. */
  readonly entity: string
}

export interface SkillsSuiteOptions {
  /** Words in the suite (default 3000); the fact set is sized to a small model's capacity. */
  readonly words?: number
  /** Share of words and sums held out of fine-tuning (default 0.2). */
  readonly heldOutFraction?: number
  /** Pretraining documents per entity, each a different phrasing and order (default 3). */
  readonly docsPerEntity?: number
  readonly seed?: string
  readonly dictDir?: string
}

export interface SkillsSuite {
  /** Plain-text pretraining documents stating every entity's facts (held-out ones included). */
  readonly pretrainDocs: string[]
  /** Fine-tuning examples: questions about the non-held-out entities, in a fixed shuffled order. */
  readonly train: SkillExample[]
  /** Questions about held-out entities only, in a fixed shuffled order. */
  readonly eval: SkillExample[]
  readonly heldOutWords: ReadonlySet<string>
}

const NUMBER_WORDS = [
  'zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten',
  'eleven', 'twelve', 'thirteen', 'fourteen', 'fifteen', 'sixteen', 'seventeen', 'eighteen', 'nineteen', 'twenty',
  'twenty-one', 'twenty-two', 'twenty-three', 'twenty-four', 'twenty-five', 'twenty-six', 'twenty-seven', 'twenty-eight', 'twenty-nine', 'thirty',
  'thirty-one', 'thirty-two', 'thirty-three', 'thirty-four', 'thirty-five', 'thirty-six', 'thirty-seven', 'thirty-eight', 'thirty-nine', 'forty',
]
const MAX_ADDEND = 20

/** A number from 0 to 40 in words. */
export function numberWord(n: number): string {
  const w = NUMBER_WORDS[n]
  if (w === undefined) throw new RangeError(`numberWord: ${n} is outside 0..${NUMBER_WORDS.length - 1}`)
  return w
}

/** The answer as compared: lower case, whitespace collapsed, a trailing period dropped. */
export function normalizeAnswer(s: string): string {
  return s.trim().toLowerCase().replace(/\s+/g, ' ').replace(/\.$/, '').trim()
}

/** Whether a generated answer is exactly one of the accepted ones (after normalizeAnswer). */
export function exactMatch(answer: string, accept: readonly string[]): boolean {
  const a = normalizeAnswer(answer)
  return accept.some((x) => normalizeAnswer(x) === a)
}

const WORD = /^[a-z]{3,12}$/

/** The kind a lexicographer file names: noun.animal -> animal, verb.motion -> motion. */
function kindOf(lexname: string): string | undefined {
  const [pos, kind] = lexname.split('.')
  if (pos !== 'noun' || kind === undefined || kind === 'Tops') return undefined
  return kind
}

function unit(seed: string, s: string): number {
  return createHash('sha256').update(`${seed}\0${s}`, 'utf8').digest().readUInt32BE(0) / 2 ** 32
}

interface WordFacts {
  readonly word: string
  readonly synonyms: readonly string[]
  readonly kind: string | undefined
  readonly definition: string
}

/** Build the suite (see the module comment). */
export function skillsSuite(options: SkillsSuiteOptions = {}): SkillsSuite {
  const seed = options.seed ?? 'flora-skills-v1'
  const nWords = options.words ?? 3000
  const heldFraction = options.heldOutFraction ?? 0.2
  const docsPerEntity = options.docsPerEntity ?? 3
  if (!(heldFraction > 0 && heldFraction < 1)) throw new RangeError(`heldOutFraction must be in (0, 1), got ${heldFraction}`)
  if (!Number.isInteger(nWords) || nWords < 10) throw new RangeError(`words must be an integer >= 10, got ${nWords}`)
  if (!Number.isInteger(docsPerEntity) || docsPerEntity < 1) throw new RangeError(`docsPerEntity must be an integer >= 1, got ${docsPerEntity}`)

  // One synset per word: the first train-split synset whose first lemma it is.
  const byWord = new Map<string, Synset>()
  for (const s of splitWordNet(loadWordNet(options.dictDir)).train) {
    const w = s.words[0]
    if (w !== undefined && WORD.test(w) && !byWord.has(w)) byWord.set(w, s)
  }
  const chosen = [...byWord.keys()].sort((a, b) => unit(seed, `pick/${a}`) - unit(seed, `pick/${b}`) || (a < b ? -1 : 1)).slice(0, nWords)
  if (chosen.length < nWords) throw new RangeError(`only ${chosen.length} words qualify, ${nWords} asked for`)
  const facts: WordFacts[] = chosen.sort().map((word) => {
    const s = byWord.get(word) as Synset
    return { word, synonyms: s.words.slice(1).filter((w) => WORD.test(w)), kind: kindOf(s.lexname), definition: s.definition }
  })
  const held = new Set(chosen.filter((w) => unit(seed, `held/${w}`) < heldFraction))
  const sums: [number, number][] = []
  for (let a = 0; a <= MAX_ADDEND; a++) for (let b = 0; b <= MAX_ADDEND; b++) sums.push([a, b])
  const sumHeld = (a: number, b: number): boolean => unit(seed, `held/${a}+${b}`) < heldFraction

  const prng = createPrng(seed)
  const docRng = prng.fork('docs')
  const pretrainDocs: string[] = []
  for (const f of facts) for (let k = 0; k < docsPerEntity; k++) pretrainDocs.push(wordDoc(f, k, docRng))
  for (const [a, b] of sums) for (let k = 0; k < docsPerEntity; k++) pretrainDocs.push(sumDoc(a, b, k))
  docRng.shuffle(pretrainDocs)

  const train: SkillExample[] = []
  const evalSet: SkillExample[] = []
  for (const f of facts) for (const ex of wordQuestions(f)) (held.has(f.word) ? evalSet : train).push(ex)
  for (const [a, b] of sums) (sumHeld(a, b) ? evalSet : train).push(sumQuestion(a, b))
  prng.fork('train-order').shuffle(train)
  prng.fork('eval-order').shuffle(evalSet)
  return { pretrainDocs, train, eval: evalSet, heldOutWords: held }
}

const spaced = (w: string): string => [...w].join(' ')
const article = (w: string): string => (/^[aeiou]/.test(w) ? 'An' : 'A')

/** Document k of a word: its facts in the k-th set of phrasings, in a seeded order. */
function wordDoc(f: WordFacts, k: number, rng: ReturnType<typeof createPrng>): string {
  const w = f.word
  const spelling = [`${w} is spelled ${spaced(w)}.`, `${[...w].join('-')} spells ${w}.`, `The letters of ${w} are ${[...w].join(', ')}.`][k % 3]
  const sentences = [spelling]
  if (f.synonyms.length > 0) {
    const s = f.synonyms[k % f.synonyms.length]
    sentences.push([`${w} means the same as ${s}.`, `${s} and ${w} are synonyms.`, `Another word for ${w} is ${s}.`][k % 3])
  }
  if (f.kind !== undefined) sentences.push([`${article(w)} ${w} is a kind of ${f.kind}.`, `${w} names ${article(f.kind).toLowerCase()} ${f.kind}.`, `Among the kinds of ${f.kind} is the ${w}.`][k % 3])
  sentences.push(k % 2 === 0 ? `${w}: ${f.definition}.` : `The word ${w} means ${f.definition}.`)
  rng.shuffle(sentences)
  return sentences.join(' ')
}

function sumDoc(a: number, b: number, k: number): string {
  const [x, y, z] = [numberWord(a), numberWord(b), numberWord(a + b)]
  return [`${x} plus ${y} is ${z}.`, `Adding ${y} to ${x} gives ${z}.`, `${z} is the sum of ${x} and ${y}.`][k % 3]
}

function example(task: SkillTask, entity: string, instruction: string, accept: readonly string[]): SkillExample {
  return { instruction, input: '', output: accept[0] as string, accept, category: task, entity }
}

function wordQuestions(f: WordFacts): SkillExample[] {
  const w = f.word
  const out = [
    example('spell', w, `Spell the word ${w}.`, [spaced(w)]),
    example('first-letter', w, `What letter does ${w} start with?`, [w[0] as string]),
    example('last-letter', w, `What letter does ${w} end with?`, [w.at(-1) as string]),
    example('length', w, `How many letters does ${w} have?`, [numberWord(w.length)]),
  ]
  if (f.synonyms.length > 0) out.push(example('synonym', w, `Give another word for ${w}.`, f.synonyms))
  if (f.kind !== undefined) out.push(example('kind', w, `What kind of thing is ${article(w).toLowerCase()} ${w}?`, [f.kind]))
  return out
}

function sumQuestion(a: number, b: number): SkillExample {
  return example('add', `${a}+${b}`, `What is ${numberWord(a)} plus ${numberWord(b)}?`, [numberWord(a + b)])
}

/** Per task, the commonest training answer: what a model that ignores the question would say. */
export function majorityAnswers(train: readonly SkillExample[]): Map<SkillTask, string> {
  const counts = new Map<SkillTask, Map<string, number>>()
  for (const ex of train) {
    const c = counts.get(ex.category) ?? new Map<string, number>()
    c.set(ex.output, (c.get(ex.output) ?? 0) + 1)
    counts.set(ex.category, c)
  }
  const out = new Map<SkillTask, string>()
  for (const [task, c] of counts) out.set(task, [...c].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))[0]?.[0] as string)
  return out
}

/** Exact-match accuracy per task (and over all) of `answers[i]` for `examples[i]`. */
export function scoreAnswers(examples: readonly SkillExample[], answers: readonly string[]): { all: number; byTask: Map<SkillTask, { correct: number; total: number }> } {
  if (answers.length !== examples.length) throw new RangeError(`${answers.length} answers for ${examples.length} examples`)
  const byTask = new Map<SkillTask, { correct: number; total: number }>()
  let correct = 0
  examples.forEach((ex, i) => {
    const t = byTask.get(ex.category) ?? { correct: 0, total: 0 }
    t.total++
    if (exactMatch(answers[i] as string, ex.accept)) {
      t.correct++
      correct++
    }
    byTask.set(ex.category, t)
  })
  return { all: examples.length === 0 ? 0 : correct / examples.length, byTask }
}
