import { describe, expect, it } from 'vitest'
import { formatPrompt, type TextTokenizer, targetMask, tokenizeExample } from '../../../src/model/data/template.js'
import { DataFormatError, type InstructionExample } from '../../../src/model/data/types.js'
import { asTextTokenizer, loadBundledHfTokenizer } from './bundled-tokenizer.js'

/** One token per UTF-16 code unit, offset past the special ids. */
const charTokenizer: TextTokenizer = {
  encode: (text) => Array.from(text, (c) => c.charCodeAt(0) + 10),
  decode: (ids) => ids.map((i) => (i === 2 ? '</s>' : i === 1 ? '<s>' : String.fromCharCode(i - 10))).join(''),
  bosId: 1,
  eosId: 2,
  padId: 0,
}

const withInput: InstructionExample = { instruction: 'Translate to French.', input: 'Good morning', output: 'Bonjour' }
const noInput: InstructionExample = { instruction: 'Define the word dog (noun).', input: '', output: 'a domesticated canine' }

describe('formatPrompt', () => {
  it('is the Alpaca layout, the Input section only when input is not empty', () => {
    expect(formatPrompt(withInput)).toBe('### Instruction:\nTranslate to French.\n\n### Input:\nGood morning\n\n### Response:\n')
    expect(formatPrompt(noInput)).toBe('### Instruction:\nDefine the word dog (noun).\n\n### Response:\n')
    expect(formatPrompt(noInput, { preamble: true })).toMatch(/^Below is an instruction that describes a task\. .*\n\n### Instruction:\n/)
  })
})

describe('tokenizeExample', () => {
  it('puts bos + prompt before promptLength and output + eos after it', () => {
    const t = tokenizeExample(withInput, charTokenizer, 512)
    const prompt = formatPrompt(withInput)
    expect(t.promptLength).toBe(1 + prompt.length)
    expect(t.inputIds[0]).toBe(1)
    expect(charTokenizer.decode(t.inputIds.slice(1, t.promptLength))).toBe(prompt)
    expect(charTokenizer.decode(t.inputIds.slice(t.promptLength))).toBe('Bonjour</s>')
    expect(t.truncated).toBe(false)
  })

  it('works without bos', () => {
    const { bosId: _bos, ...noBos } = charTokenizer
    const t = tokenizeExample(noInput, noBos, 512)
    expect(t.promptLength).toBe(formatPrompt(noInput).length)
    expect(t.inputIds.at(-1)).toBe(2)
  })

  it('cuts the response end first, then the prompt from the left', () => {
    const full = tokenizeExample(withInput, charTokenizer, 512)
    const cut = tokenizeExample(withInput, charTokenizer, full.promptLength + 3)
    expect(cut.truncated).toBe(true)
    expect(cut.inputIds).toEqual(full.inputIds.slice(0, full.promptLength + 3))
    expect(charTokenizer.decode(cut.inputIds.slice(cut.promptLength))).toBe('Bon')

    const tiny = tokenizeExample(withInput, charTokenizer, 10)
    expect(tiny.inputIds).toHaveLength(10)
    expect(tiny.promptLength).toBe(9)
    expect(tiny.inputIds[0]).toBe(1)
    expect(charTokenizer.decode(tiny.inputIds.slice(1, 9))).toBe('sponse:\n')
    expect(charTokenizer.decode(tiny.inputIds.slice(9))).toBe('B')
    expect(() => tokenizeExample(withInput, charTokenizer, 2)).toThrow(DataFormatError)
  })

  it('targetMask marks the positions whose next token is a response token', () => {
    const t = tokenizeExample(noInput, charTokenizer, 512)
    const mask = targetMask(t)
    const n = t.inputIds.length
    expect(mask.length).toBe(n)
    expect(mask.reduce((a, b) => a + b, 0)).toBe(n - t.promptLength)
    expect(mask[t.promptLength - 2]).toBe(0)
    expect(mask[t.promptLength - 1]).toBe(1)
    expect(mask[n - 1]).toBe(0)
  })

  it('with the bundled tokenizer, the response part decodes to output + eos', () => {
    const tok = asTextTokenizer(loadBundledHfTokenizer())
    for (const ex of [withInput, noInput, { instruction: 'Say hi.', input: '', output: ' leading space and\nnewline ' }]) {
      const t = tokenizeExample(ex, tok, 256)
      expect(t.inputIds[0]).toBe(tok.bosId)
      expect(tok.decode(t.inputIds.slice(1, t.promptLength))).toBe(formatPrompt(ex))
      expect(tok.decode(t.inputIds.slice(t.promptLength))).toBe(ex.output + '</s>')
      expect(t.inputIds.at(-1)).toBe(tok.eosId)
    }
  })
})
