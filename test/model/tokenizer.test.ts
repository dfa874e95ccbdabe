import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { countPieces, tokenizerJson, trainByteLevelBpe } from '../../src/model/data/bpe.js'
import { tokenizeExample } from '../../src/model/data/template.js'
import { LlamaTokenizer, TokenizerError } from '../../src/model/tokenizer.js'
import { tempDir } from './helpers.js'

const TEXT = 'the cat sat on the mat. the dog sat on the log. a cat and a dog.'

describe('LlamaTokenizer', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => {
    ;({ dir, cleanup } = await tempDir())
    const model = trainByteLevelBpe(countPieces(TEXT), { vocabSize: 300, specialTokens: ['<pad>', '<s>', '</s>'] })
    await writeFile(path.join(dir, 'tokenizer.json'), tokenizerJson(model))
  })
  afterAll(async () => cleanup?.())

  it('loads tokenizer.json offline, round-trips text, finds special tokens by spelling', async () => {
    const tok = await LlamaTokenizer.fromDir(dir)
    expect([tok.padId, tok.bosId, tok.eosId]).toEqual([0, 1, 2])
    const ids = tok.encode('the cat sat')
    expect(ids.length).toBeLessThan('the cat sat'.length) // merges were learned
    expect(ids.every((i) => i > 2)).toBe(true) // no special tokens added
    expect(tok.decode(ids)).toBe('the cat sat')
    expect(tok.decode([1, ...ids, 2])).toBe('the cat sat')
    expect(tok.decode([1, ...ids, 2], { skipSpecialTokens: false })).toBe('<s>the cat sat</s>')
    expect(tok.vocabSize).toBeGreaterThan(259)
  })

  it('prefers tokenizer_config.json and explicit overrides', async () => {
    await writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: { content: '<pad>' }, pad_token: '</s>', bos_token: null }))
    const tok = await LlamaTokenizer.fromDir(dir)
    expect([tok.eosId, tok.padId]).toEqual([0, 2])
    const over = await LlamaTokenizer.fromDir(dir, { eos: '</s>', bos: null })
    expect(over.eosId).toBe(2)
    expect(over.bosId).toBeUndefined()
    await expect(LlamaTokenizer.fromDir(dir, { eos: '<nope>' })).rejects.toThrow(/eos token "<nope>" is not in the vocabulary/)
  })

  it('serves as the data layer tokenizer', async () => {
    const tok = await LlamaTokenizer.fromDir(dir, { eos: '</s>', bos: '<s>' })
    const ex = tokenizeExample({ instruction: 'cat?', input: '', output: 'a cat' }, tok, 64)
    expect(ex.inputIds[0]).toBe(1)
    expect(ex.inputIds.at(-1)).toBe(2)
  })

  it('reports missing or broken files', async () => {
    const { dir: empty, cleanup: c } = await tempDir()
    await expect(LlamaTokenizer.fromDir(empty)).rejects.toBeInstanceOf(TokenizerError)
    await writeFile(path.join(empty, 'tokenizer.json'), '{oops')
    await expect(LlamaTokenizer.fromDir(empty)).rejects.toThrow(/invalid JSON/)
    await c()
  })
})
