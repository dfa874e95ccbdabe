/**
 * Trains the bundled byte-level BPE tokenizer on the pretraining text (WordNet training
 * split only, see docs/DATA.md) and writes models/flora-tiny/{tokenizer.json,
 * tokenizer_config.json}. Deterministic: rerunning gives the same bytes.
 *
 *   npx tsx scripts/build-tokenizer.ts [--vocab-size 4096] [--out models/flora-tiny] [--check]
 *
 * --check rebuilds in memory and fails if the files on disk differ (for CI).
 */
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Tokenizer } from '@huggingface/tokenizers'
import { countPieces, encodeWithModel, tokenizerJson, trainByteLevelBpe, type BpeModel } from '../src/model/data/bpe.js'
import { pretrainEntries } from '../src/model/data/pretrain-text.js'
import { loadWordNet, splitWordNet } from '../src/model/data/wordnet.js'

const SPECIAL_TOKENS = ['<unk>', '<s>', '</s>', '<pad>'] as const

const { values } = parseArgs({
  options: {
    'vocab-size': { type: 'string', default: '4096' },
    out: { type: 'string', default: 'models/flora-tiny' },
    check: { type: 'boolean', default: false },
  },
})
const vocabSize = Number(values['vocab-size'])
const outDir = values.out ?? 'models/flora-tiny'

const t0 = performance.now()
const entries = pretrainEntries()
const counts = new Map<string, number>()
for (const e of entries) countPieces(e + '\n', counts)
const t1 = performance.now()
const model = trainByteLevelBpe(counts, { vocabSize, specialTokens: SPECIAL_TOKENS })
const t2 = performance.now()

const json = tokenizerJson(model)
const config = tokenizerConfigJson(model)

verify(model, json, config, entries)
const t3 = performance.now()

const files: Array<[string, string]> = [
  ['tokenizer.json', json],
  ['tokenizer_config.json', config],
]
if (values.check === true) {
  for (const [name, text] of files) {
    let onDisk = ''
    try {
      onDisk = readFileSync(join(outDir, name), 'utf8')
    } catch {
      // missing: reported as a difference below
    }
    if (onDisk !== text) {
      console.error(`${join(outDir, name)} differs from a fresh build; run scripts/build-tokenizer.ts`)
      process.exit(1)
    }
  }
} else {
  mkdirSync(outDir, { recursive: true })
  for (const [name, text] of files) writeFileSync(join(outDir, name), text)
}

const chars = entries.reduce((a, e) => a + e.length + 1, 0)
console.log(
  [
    `pretraining text: ${entries.length} entries, ${(chars / 1e6).toFixed(2)}M chars, ${counts.size} distinct pieces (${ms(t1 - t0)})`,
    `bpe: vocab ${model.vocab.length} (${SPECIAL_TOKENS.length} special + 256 bytes + ${model.vocab.length - 260} merged), ${model.merges.length} merges (${ms(t2 - t1)})`,
    `verified with @huggingface/tokenizers (${ms(t3 - t2)})`,
    ...files.map(([name, text]) => `${values.check === true ? 'checked' : 'wrote'} ${join(outDir, name)} sha256 ${sha256(text).slice(0, 16)} (${Buffer.byteLength(text)} bytes)`),
  ].join('\n'),
)

function tokenizerConfigJson(m: BpeModel): string {
  const decoder: Record<string, object> = {}
  m.specialTokens.forEach((content, id) => {
    decoder[String(id)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }
  })
  return (
    JSON.stringify(
      {
        add_bos_token: false,
        add_eos_token: false,
        added_tokens_decoder: decoder,
        bos_token: '<s>',
        eos_token: '</s>',
        pad_token: '<pad>',
        unk_token: '<unk>',
        clean_up_tokenization_spaces: false,
        tokenizer_class: 'PreTrainedTokenizerFast',
      },
      null,
      2,
    ) + '\n'
  )
}

/**
 * Loads the files with @huggingface/tokenizers and checks: special token ids, exact
 * round trip, and identical ids to the reference encoder on held-out definitions (which
 * the tokenizer never saw) plus awkward strings.
 */
function verify(m: BpeModel, tokJson: string, cfgJson: string, sample: readonly string[]): void {
  const tok = new Tokenizer(JSON.parse(tokJson) as object, JSON.parse(cfgJson) as object) as HfTokenizer
  SPECIAL_TOKENS.forEach((t, id) => {
    if (tok.token_to_id(t) !== id) throw new Error(`special token ${t} should have id ${id}, got ${tok.token_to_id(t)}`)
  })
  const wn = loadWordNet()
  const heldOut = splitWordNet(wn).eval.slice(0, 500).map((s) => `${s.words.join(', ')}: ${s.definition}`)
  const awkward = [
    'Hello, world!  Two spaces,\ttab,\nnewline\n\n and trailing space ',
    'unicode: café, naïve, 東京, emoji 🦊🌸, math ∑ x² ≤ 3',
    "contractions: it's, we're, they'll, I'd, don't",
    '### Instruction:\nDefine the word dog (noun).\n\n### Response:\n',
    ' leading space',
    '1234567890 3.14159 -42',
  ]
  const texts = [...sample.slice(0, 500), ...heldOut, ...awkward]
  let tokens = 0
  let chars = 0
  for (const text of texts) {
    const ids = tok.encode(text).ids
    const ref = encodeWithModel(m, text)
    if (ids.length !== ref.length || ids.some((id, i) => id !== ref[i])) {
      throw new Error(`@huggingface/tokenizers and the reference encoder disagree on ${JSON.stringify(text.slice(0, 80))}`)
    }
    const back = tok.decode(ids)
    if (back !== text) throw new Error(`round trip failed: ${JSON.stringify(text.slice(0, 80))} -> ${JSON.stringify(back.slice(0, 80))}`)
    tokens += ids.length
    chars += text.length
  }
  console.log(`round trip ok on ${texts.length} texts; ${(chars / tokens).toFixed(2)} chars/token`)
}

/**
 * The part of @huggingface/tokenizers' Tokenizer used here. Its .d.ts files import without
 * extensions, so under NodeNext resolution the class types as `any`; pin the shape.
 */
interface HfTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] }
  decode(ids: number[], options?: { skip_special_tokens?: boolean }): string
  token_to_id(token: string): number | undefined
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex')
}

function ms(x: number): string {
  return `${(x / 1000).toFixed(1)} s`
}
