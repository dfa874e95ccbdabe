/**
 * Instruction data from JSONL files: one JSON object per line, in either of the two
 * formats FLoRA's experiments use.
 *
 *   Alpaca: {"instruction": "...", "input": "...", "output": "..."}            (input optional)
 *   Dolly:  {"instruction": "...", "context": "...", "response": "...", "category": "..."}
 *
 * Both normalize to `InstructionExample` (Dolly's context -> input, response -> output).
 * Extra keys are ignored (Alpaca-GPT4 ships a "text" field, for instance). Blank lines are
 * skipped. Any other problem is a `JsonlParseError` naming `file:line` and what is wrong,
 * because a silently dropped record would change every peer's sample count `n_k`.
 */
import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { type InstructionExample, JsonlParseError } from './types.js'

export type InstructionFormat = 'alpaca' | 'dolly'

export interface JsonlReadOptions {
  /**
   * 'auto' (default) detects the format of each line from its keys (`output` -> Alpaca,
   * `response` -> Dolly), so a file may mix both. A fixed format rejects lines of the other.
   */
  readonly format?: InstructionFormat | 'auto'
  /** Name used in error messages when parsing a string (default '<input>'). */
  readonly file?: string
}

const AlpacaRecord = z.object({
  instruction: z.string().refine((s) => s.trim().length > 0, 'must not be empty'),
  input: z.string().optional(),
  output: z.string(),
  category: z.string().optional(),
})

const DollyRecord = z.object({
  instruction: z.string().refine((s) => s.trim().length > 0, 'must not be empty'),
  context: z.string().optional(),
  response: z.string(),
  category: z.string().optional(),
})

const FORMAT_HINT: Record<InstructionFormat, string> = {
  alpaca: 'Alpaca {instruction, input, output}',
  dolly: 'Dolly {instruction, context, response, category}',
}

/** Parses JSONL text; `options.file` only names the source in errors. */
export function parseInstructionJsonl(text: string, options: JsonlReadOptions = {}): InstructionExample[] {
  const file = options.file ?? '<input>'
  const format = options.format ?? 'auto'
  const out: InstructionExample[] = []
  // Tolerate a UTF-8 BOM and CRLF line ends, both common in files saved on Windows.
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
  const lines = body.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i]
    if (raw.trim() === '') continue
    out.push(parseLine(raw, format, file, i + 1))
  }
  return out
}

/** Reads and parses a JSONL file (UTF-8). Errors name `path:line`. */
export async function readInstructionJsonl(
  path: string,
  options: Omit<JsonlReadOptions, 'file'> = {},
): Promise<InstructionExample[]> {
  const text = await readFile(path, 'utf8')
  return parseInstructionJsonl(text, { ...options, file: path })
}

/** Serializes examples as Alpaca JSONL (with `category` when present), one per line. */
export function formatAlpacaJsonl(examples: readonly InstructionExample[]): string {
  return examples
    .map((e) =>
      JSON.stringify(
        e.category === undefined
          ? { instruction: e.instruction, input: e.input, output: e.output }
          : { instruction: e.instruction, input: e.input, output: e.output, category: e.category },
      ) + '\n',
    )
    .join('')
}

function parseLine(raw: string, format: InstructionFormat | 'auto', file: string, line: number): InstructionExample {
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch (err) {
    throw new JsonlParseError(`invalid JSON: ${(err as Error).message}`, file, line)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new JsonlParseError(`expected a JSON object, got ${describe(value)}`, file, line)
  }
  const lineFormat = format === 'auto' ? detectFormat(value, file, line) : format
  if (lineFormat === 'alpaca') {
    const r = AlpacaRecord.safeParse(value)
    if (!r.success) throw new JsonlParseError(`not a valid ${FORMAT_HINT.alpaca} record: ${issues(r.error)}`, file, line)
    const { instruction, input, output, category } = r.data
    return category === undefined ? { instruction, input: input ?? '', output } : { instruction, input: input ?? '', output, category }
  }
  const r = DollyRecord.safeParse(value)
  if (!r.success) throw new JsonlParseError(`not a valid ${FORMAT_HINT.dolly} record: ${issues(r.error)}`, file, line)
  const { instruction, context, response, category } = r.data
  return category === undefined
    ? { instruction, input: context ?? '', output: response }
    : { instruction, input: context ?? '', output: response, category }
}

function detectFormat(value: object, file: string, line: number): InstructionFormat {
  const hasOutput = Object.hasOwn(value, 'output')
  const hasResponse = Object.hasOwn(value, 'response')
  if (hasOutput && hasResponse) {
    throw new JsonlParseError('ambiguous record: has both "output" (Alpaca) and "response" (Dolly)', file, line)
  }
  if (hasOutput) return 'alpaca'
  if (hasResponse) return 'dolly'
  const keys = Object.keys(value).slice(0, 8).map((k) => JSON.stringify(k)).join(', ')
  throw new JsonlParseError(
    `unknown record format: expected ${FORMAT_HINT.alpaca} or ${FORMAT_HINT.dolly}, got keys [${keys}]`,
    file,
    line,
  )
}

function issues(error: z.ZodError): string {
  return error.issues
    .map((i) => `${i.path.length > 0 ? `"${i.path.join('.')}"` : 'record'} ${i.message}`)
    .join('; ')
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return `a ${typeof value}`
}
