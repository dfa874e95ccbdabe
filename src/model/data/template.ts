/**
 * The prompt template (Alpaca style, as in the FLoRA experiments) and the tokenization of
 * one example into `[bos] prompt response eos` with the prompt length, so the trainer puts
 * the loss on the response tokens (and eos) only.
 *
 *   ### Instruction:
 *   {instruction}
 *
 *   ### Input:            <- this section only when input is not empty
 *   {input}
 *
 *   ### Response:
 *   {output}</s>
 *
 * Alpaca's one-sentence preamble ("Below is an instruction that describes a task...") is
 * optional and off by default: it costs ~30 tokens of a small model's context and carries
 * no information once every example has it.
 */
import { DataFormatError, type InstructionExample } from './types.js'

/**
 * The minimal tokenizer the data layer needs. `encode` must return ids WITHOUT special
 * tokens (no bos/eos added); `tokenizeExample` adds bos/eos itself. The model layer's
 * tokenizer wrapper satisfies it.
 */
export interface TextTokenizer {
  encode(text: string): number[]
  decode(ids: readonly number[]): string
  /** Beginning-of-sequence id, prepended to every example when defined. */
  readonly bosId?: number
  readonly eosId: number
  readonly padId: number
}

/**
 * A tokenized example. Position i of `inputIds` is a prompt token when i < promptLength,
 * a response token (the last one eos, unless truncated) otherwise. For next-token loss the
 * target of position i is inputIds[i + 1]; it counts iff i + 1 >= promptLength.
 */
export interface TokenizedExample {
  readonly inputIds: number[]
  readonly promptLength: number
  /** True when the example did not fit in maxLen and was cut (see tokenizeExample). */
  readonly truncated: boolean
}

export interface TemplateOptions {
  /** Prepend Alpaca's standard one-sentence preamble (default false). */
  readonly preamble?: boolean
}

const PREAMBLE_WITH_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n'
const PREAMBLE_NO_INPUT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n'

/** The marker after which the model writes its answer; prompts always end with it. */
export const RESPONSE_MARKER = '### Response:\n'

/** The prompt for an example: everything the model is conditioned on, ending in RESPONSE_MARKER. */
export function formatPrompt(example: Pick<InstructionExample, 'instruction' | 'input'>, options: TemplateOptions = {}): string {
  const hasInput = example.input.trim().length > 0
  const preamble = options.preamble === true ? (hasInput ? PREAMBLE_WITH_INPUT : PREAMBLE_NO_INPUT) : ''
  const input = hasInput ? `### Input:\n${example.input}\n\n` : ''
  return `${preamble}### Instruction:\n${example.instruction}\n\n${input}${RESPONSE_MARKER}`
}

/**
 * Tokenizes `[bos] prompt output eos`. Prompt and output are encoded separately and
 * concatenated, so the prompt/response boundary is exact whatever the tokenizer merges.
 *
 * When the whole does not fit in `maxLen` tokens: the response is cut at the end (eos
 * dropped first); if the prompt alone leaves no room for one response token, the prompt
 * is cut from the left (after bos), which keeps the instruction's end and the response
 * marker the model must see. `truncated` is then true.
 */
export function tokenizeExample(
  example: InstructionExample,
  tokenizer: TextTokenizer,
  maxLen: number,
  options: TemplateOptions = {},
): TokenizedExample {
  const bos = tokenizer.bosId === undefined ? [] : [tokenizer.bosId]
  if (!Number.isInteger(maxLen) || maxLen < bos.length + 2) {
    throw new DataFormatError(`maxLen must be an integer >= ${bos.length + 2} (bos, one prompt and one response token), got ${maxLen}`)
  }
  let prompt = tokenizer.encode(formatPrompt(example, options))
  const response = [...tokenizer.encode(example.output), tokenizer.eosId]
  let truncated = false
  const maxPrompt = maxLen - bos.length - 1
  if (prompt.length > maxPrompt) {
    prompt = prompt.slice(prompt.length - maxPrompt)
    truncated = true
  }
  const promptLength = bos.length + prompt.length
  const room = maxLen - promptLength
  const kept = response.length > room ? response.slice(0, room) : response
  if (kept.length < response.length) truncated = true
  return { inputIds: [...bos, ...prompt, ...kept], promptLength, truncated }
}

/**
 * 1 where the next-token target of position i is a response token (i + 1 >= promptLength
 * and i + 1 < length), else 0; length inputIds.length. Convenience for trainers that shift
 * targets by one.
 */
export function targetMask(example: TokenizedExample): Uint8Array {
  const n = example.inputIds.length
  const mask = new Uint8Array(n)
  for (let i = Math.max(0, example.promptLength - 1); i < n - 1; i++) mask[i] = 1
  return mask
}
