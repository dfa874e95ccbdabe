import { readFileSync } from 'node:fs'
import { Tokenizer } from '@huggingface/tokenizers'
import { describe, expect, it } from 'vitest'
import { countPieces, encodeWithModel, tokenizerJson, trainByteLevelBpe } from '../../../src/model/data/bpe.js'
import { type HfTokenizer, MODEL_DIR, loadBundledHfTokenizer } from './bundled-tokenizer.js'

const samples = [
  'dog, domestic dog, Canis familiaris (noun): a member of the genus Canis',
  '### Instruction:\nDefine the word mobilization (noun).\n\n### Response:\nact of assembling</s>',
  'Two  spaces,\ttabs,\n\nblank lines and a trailing space ',
  'unicode: café, naïve, 東京, emoji 🦊, math ∑ x² ≤ 3',
  "it's, we're, they'll, 3.14159, -42",
]

describe('bundled tokenizer (models/flora-tiny)', () => {
  const tok = loadBundledHfTokenizer()

  it('loads with @huggingface/tokenizers: 4096 tokens, special tokens at fixed ids', () => {
    const json = JSON.parse(readFileSync(MODEL_DIR + 'tokenizer.json', 'utf8')) as { model: { vocab: Record<string, number>; merges: string[] } }
    expect(Object.keys(json.model.vocab)).toHaveLength(4096)
    expect(json.model.merges).toHaveLength(4096 - 260)
    expect(['<unk>', '<s>', '</s>', '<pad>'].map((t) => tok.token_to_id(t))).toEqual([0, 1, 2, 3])
  })

  it('round-trips text exactly and adds no special tokens on encode', () => {
    for (const text of samples) {
      const ids = tok.encode(text).ids
      expect(tok.decode(ids)).toBe(text)
    }
    expect(tok.encode('hello').ids).not.toContain(1)
    expect(tok.encode('the dog barked all night').ids.length).toBeLessThan(8) // real merges, not bytes
  })
})

describe('BPE trainer', () => {
  const corpus = 'the cat sat on the mat. the dog sat on the log; a cat and a dog met.\n'.repeat(5) + 'naïve café 東京 🦊\n'
  const train = (): string => {
    const model = trainByteLevelBpe(countPieces(corpus), { vocabSize: 300, specialTokens: ['<unk>', '<s>', '</s>', '<pad>'] })
    return tokenizerJson(model)
  }

  it('is deterministic, loads, and matches the reference encoder', () => {
    const json = train()
    expect(train()).toBe(json)
    const model = trainByteLevelBpe(countPieces(corpus), { vocabSize: 300, specialTokens: ['<unk>', '<s>', '</s>', '<pad>'] })
    const tok = new Tokenizer(JSON.parse(json) as object, { clean_up_tokenization_spaces: false }) as HfTokenizer
    // samples[1] holds '</s>', which the loader (rightly) maps to the special token.
    for (const text of [...samples.filter((t) => !t.includes('</s>')), corpus]) {
      const ids = tok.encode(text).ids
      expect(ids).toEqual(encodeWithModel(model, text))
      expect(tok.decode(ids)).toBe(text)
    }
  })

  it('breaks count ties by token strings, not by input order', () => {
    const a = trainByteLevelBpe(new Map([['xy', 3], ['ab', 3]]), { vocabSize: 258, specialTokens: [] })
    const b = trainByteLevelBpe(new Map([['ab', 3], ['xy', 3]]), { vocabSize: 258, specialTokens: [] })
    expect(a.merges).toEqual([['a', 'b'], ['x', 'y']])
    expect(b).toEqual(a)
  })
})
