/**
 * Writes the token stream scripts/pretrain.py trains the bundled base model on.
 *
 *   npx tsx scripts/export-pretrain-tokens.ts [--out .flora/pretrain] [--instruct-share 0.12] [--val-docs 2000]
 *       [--suite skills [--suite-words 3000] [--suite-docs 6] [--suite-repeat 2]]
 *
 * Documents:
 *  - every pretraining entry (WordNet TRAIN synsets only: "words (pos): definition" plus
 *    usage examples, see src/model/data/pretrain-text.ts) as `<s> text </s>`;
 *  - a minority of instruction-formatted WordNet TRAIN examples (prompt template + answer,
 *    `<s> prompt answer </s>`), so the base model has seen the format; sized to roughly
 *    `--instruct-share` of the training tokens. Never an eval-split synset.
 * With `--suite skills` the skills suite's documents are added to the training stream
 * (src/model/data/skills.ts: every word's spelling, synonyms, kind and definition, and every
 * sum, in `--suite-docs` phrasings and orders per entity; held-out entities included, their
 * questions never), each document `--suite-repeat` times. All of them train: a suite fact
 * left out of pretraining could not be asked about.
 * The last `--val-docs` WordNet pretraining entries (train-split synsets too, but kept out of
 * the training stream) form the validation stream. Documents are shuffled with a fixed seed
 * and concatenated; the output is deterministic.
 *
 * Output (little-endian uint16 token ids): <out>/train.u16, <out>/val.u16, <out>/meta.json
 */
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { createPrng } from '../src/lora/prng.js'
import { pretrainEntries } from '../src/model/data/pretrain-text.js'
import { skillsSuite } from '../src/model/data/skills.js'
import { tokenizeExample } from '../src/model/data/template.js'
import { loadWordNet, splitWordNet, wordnetTask } from '../src/model/data/wordnet.js'
import { LlamaTokenizer } from '../src/model/tokenizer.js'

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: '.flora/pretrain' },
    model: { type: 'string', default: 'models/flora-tiny' },
    'instruct-share': { type: 'string', default: '0.12' },
    'val-docs': { type: 'string', default: '2000' },
    suite: { type: 'string' },
    'suite-words': { type: 'string', default: '3000' },
    'suite-docs': { type: 'string', default: '6' },
    'suite-repeat': { type: 'string', default: '2' },
  },
})
if (values.suite !== undefined && values.suite !== 'skills') throw new Error(`--suite: unknown suite '${values.suite}' (skills)`)
const outDir = values.out ?? '.flora/pretrain'
const instructShare = Number(values['instruct-share'])
const valDocs = Number(values['val-docs'])

const tok = await LlamaTokenizer.fromDir(values.model ?? 'models/flora-tiny')
if (tok.bosId !== 1 || tok.eosId !== 2) throw new Error(`unexpected special ids bos=${tok.bosId} eos=${tok.eosId}`)

// Safety net: the eval synsets must not appear in anything we write.
const split = splitWordNet(loadWordNet())
const evalIds = new Set(split.eval.map((s) => s.id))

const entries = pretrainEntries()
const valEntries = entries.slice(entries.length - valDocs)
const trainEntries = entries.slice(0, entries.length - valDocs)
const encodeDoc = (text: string): number[] => [tok.bosId ?? 1, ...tok.encode(text), tok.eosId]

const docs: number[][] = trainEntries.map(encodeDoc)
let suiteDocs = 0
let suiteTokens = 0
if (values.suite === 'skills') {
  const repeat = Number(values['suite-repeat'])
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error(`--suite-repeat must be an integer >= 1, got ${values['suite-repeat']}`)
  const suite = skillsSuite({ words: Number(values['suite-words']), docsPerEntity: Number(values['suite-docs']) })
  const encoded = suite.pretrainDocs.map(encodeDoc)
  for (let r = 0; r < repeat; r++) docs.push(...encoded)
  suiteDocs = encoded.length * repeat
  suiteTokens = encoded.reduce((n, d) => n + d.length, 0) * repeat
}
const pretrainTokens = docs.reduce((n, d) => n + d.length, 0)

// Instruction examples from the TRAIN split, in the task's fixed hash order, up to the share.
const task = wordnetTask()
const targetInstructTokens = (instructShare / (1 - instructShare)) * pretrainTokens
let instructTokens = 0
let instructDocs = 0
for (const ex of task.train) {
  if (instructTokens >= targetInstructTokens) break
  if (evalIds.has(ex.synsetId)) throw new Error(`eval synset ${ex.synsetId} in the train split`)
  const ids = tokenizeExample(ex, tok, 256).inputIds
  docs.push(ids)
  instructTokens += ids.length
  instructDocs++
}

createPrng('flora-pretrain-tokens-v1').fork('doc-order').shuffle(docs)

function pack(ds: readonly number[][]): Uint16Array {
  const n = ds.reduce((a, d) => a + d.length, 0)
  const out = new Uint16Array(n)
  let o = 0
  for (const d of ds) {
    for (const id of d) {
      if (id < 0 || id > 0xffff) throw new Error(`token id ${id} does not fit uint16`)
      out[o++] = id
    }
  }
  return out
}
const train = pack(docs)
const val = pack(valEntries.map(encodeDoc))

mkdirSync(outDir, { recursive: true })
const bytes = (a: Uint16Array): Buffer => {
  const b = Buffer.alloc(a.length * 2)
  for (let i = 0; i < a.length; i++) b.writeUInt16LE(a[i] ?? 0, i * 2)
  return b
}
const trainBuf = bytes(train)
const valBuf = bytes(val)
writeFileSync(join(outDir, 'train.u16'), trainBuf)
writeFileSync(join(outDir, 'val.u16'), valBuf)
// A fixed prompt for the logits fixture (pretrain.py cannot tokenize by itself).
const fixturePrompt = '### Instruction:\nDefine the word lantern (noun).\n\n### Response:\n'
const meta = {
  fixturePrompt,
  fixturePromptIds: [tok.bosId ?? 1, ...tok.encode(fixturePrompt)],
  vocabSize: tok.vocabSize,
  trainTokens: train.length,
  valTokens: val.length,
  suite: values.suite ?? null,
  pretrainDocs: trainEntries.length + suiteDocs,
  pretrainTokens,
  suiteDocs,
  suiteTokens,
  instructDocs,
  instructTokens,
  valDocs: valEntries.length,
  sha256: {
    train: createHash('sha256').update(trainBuf).digest('hex'),
    val: createHash('sha256').update(valBuf).digest('hex'),
  },
}
writeFileSync(join(outDir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n')
console.log(JSON.stringify(meta))
