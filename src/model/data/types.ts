/**
 * Data types shared by the instruction data sets, the prompt template and the partitioners.
 */

/**
 * One instruction-tuning example, normalized from Alpaca `{instruction, input, output}` or
 * Dolly `{instruction, context, response, category}` records (Dolly's `context` becomes
 * `input`, `response` becomes `output`).
 */
export interface InstructionExample {
  readonly instruction: string
  /** Extra context for the instruction; '' when there is none. */
  readonly input: string
  /** The reference response the model is trained to produce. */
  readonly output: string
  /**
   * Task category used by the non-IID partitioners: Dolly's `category`, or the WordNet
   * lexicographer file (e.g. `noun.animal`). Absent when the source has none.
   */
  readonly category?: string
}

/** A data file, record or option that cannot be used; `file`/`line` say where when known. */
export class DataFormatError extends Error {
  override readonly name: string = 'DataFormatError'
  readonly file: string | undefined
  readonly line: number | undefined

  constructor(message: string, where: { file?: string; line?: number } = {}) {
    const prefix = where.file !== undefined ? `${where.file}${where.line !== undefined ? `:${where.line}` : ''}: ` : ''
    super(prefix + message)
    this.file = where.file
    this.line = where.line
  }
}

/** A bad line of a JSONL file: invalid JSON or a record that fits no known format. */
export class JsonlParseError extends DataFormatError {
  override readonly name = 'JsonlParseError'
  declare readonly file: string
  declare readonly line: number

  constructor(message: string, file: string, line: number) {
    super(message, { file, line })
  }
}

/** Invalid arguments to a partitioner (k < 1, alpha <= 0, unsatisfiable minimum sizes...). */
export class PartitionError extends Error {
  override readonly name = 'PartitionError'
}
