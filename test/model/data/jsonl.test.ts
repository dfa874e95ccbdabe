import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { formatAlpacaJsonl, parseInstructionJsonl, readInstructionJsonl } from '../../../src/model/data/jsonl.js'
import { JsonlParseError } from '../../../src/model/data/types.js'

const alpaca = [
  JSON.stringify({ instruction: 'Give three tips for staying healthy.', input: '', output: '1. Eat well.' }),
  JSON.stringify({ instruction: 'Translate to French.', input: 'Good morning', output: 'Bonjour', text: 'ignored extra field' }),
  JSON.stringify({ instruction: 'No input key at all.', output: 'fine' }),
].join('\n')

const dolly = [
  JSON.stringify({ instruction: 'When did Virgin Australia start operating?', context: 'Virgin Australia ... commenced services on 31 August 2000', response: '31 August 2000', category: 'closed_qa' }),
  '',
  '   ',
  JSON.stringify({ instruction: 'Which is a species of fish?', context: '', response: 'Tope', category: 'classification' }),
].join('\r\n')

function errorOf(fn: () => unknown): JsonlParseError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(JsonlParseError)
    return err as JsonlParseError
  }
  throw new Error('expected a JsonlParseError')
}

describe('parseInstructionJsonl', () => {
  it('reads Alpaca records (input optional, extra keys ignored)', () => {
    expect(parseInstructionJsonl(alpaca)).toEqual([
      { instruction: 'Give three tips for staying healthy.', input: '', output: '1. Eat well.' },
      { instruction: 'Translate to French.', input: 'Good morning', output: 'Bonjour' },
      { instruction: 'No input key at all.', input: '', output: 'fine' },
    ])
  })

  it('reads Dolly records, mapping context -> input and response -> output, skipping blank lines and CRLF', () => {
    const out = parseInstructionJsonl('\ufeff' + dolly, { format: 'dolly' })
    expect(out).toEqual([
      { instruction: 'When did Virgin Australia start operating?', input: 'Virgin Australia ... commenced services on 31 August 2000', output: '31 August 2000', category: 'closed_qa' },
      { instruction: 'Which is a species of fish?', input: '', output: 'Tope', category: 'classification' },
    ])
  })

  it('auto-detects the format per line, so a file may mix both', () => {
    const out = parseInstructionJsonl(alpaca + '\n' + dolly)
    expect(out.map((e) => e.output)).toEqual(['1. Eat well.', 'Bonjour', 'fine', '31 August 2000', 'Tope'])
  })

  it('names file:line and the problem for bad lines', () => {
    const text = [alpaca, '{"instruction": "x", "output": 3}'].join('\n')
    const e1 = errorOf(() => parseInstructionJsonl(text, { file: 'train.jsonl' }))
    expect(e1.name).toBe('JsonlParseError')
    expect(e1.file).toBe('train.jsonl')
    expect(e1.line).toBe(4)
    expect(e1.message).toMatch(/^train\.jsonl:4: not a valid Alpaca .*"output".*string/)

    const e2 = errorOf(() => parseInstructionJsonl('\n{"instruction": "x", "output": "y"\n', { file: 'a.jsonl' }))
    expect(e2.message).toMatch(/^a\.jsonl:2: invalid JSON/)

    const e3 = errorOf(() => parseInstructionJsonl('{"prompt": "x", "completion": "y"}', { file: 'b.jsonl' }))
    expect(e3.message).toMatch(/^b\.jsonl:1: unknown record format.*"prompt", "completion"/)

    const e4 = errorOf(() => parseInstructionJsonl('[1, 2]', { file: 'c.jsonl' }))
    expect(e4.message).toBe('c.jsonl:1: expected a JSON object, got an array')

    const e5 = errorOf(() => parseInstructionJsonl('{"instruction": "x", "output": "y", "response": "z"}'))
    expect(e5.message).toMatch(/^<input>:1: ambiguous record/)

    const e6 = errorOf(() => parseInstructionJsonl('{"instruction": "  ", "output": "y"}'))
    expect(e6.message).toMatch(/"instruction" must not be empty/)
  })

  it('rejects the other format when one is fixed', () => {
    const e = errorOf(() => parseInstructionJsonl(dolly, { format: 'alpaca', file: 'd.jsonl' }))
    expect(e.line).toBe(1)
    expect(e.message).toMatch(/not a valid Alpaca.*"output"/)
  })
})

describe('readInstructionJsonl', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flora-jsonl-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('reads a file and round-trips through formatAlpacaJsonl', async () => {
    const path = join(dir, 'dolly.jsonl')
    writeFileSync(path, dolly)
    const examples = await readInstructionJsonl(path)
    expect(examples).toHaveLength(2)
    expect(parseInstructionJsonl(formatAlpacaJsonl(examples))).toEqual(examples)
  })

  it('names the path in errors', async () => {
    const path = join(dir, 'bad.jsonl')
    writeFileSync(path, alpaca + '\n\n{"instruction": "x"}\n')
    await expect(readInstructionJsonl(path)).rejects.toThrow(`${path}:5: unknown record format`)
  })
})
