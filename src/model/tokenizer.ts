/**
 * A thin, offline wrapper over @huggingface/tokenizers: tokenizer.json (+ the optional
 * tokenizer_config.json) from a directory, encode/decode, and the special token ids.
 *
 * Special tokens come from tokenizer_config.json (bos_token, eos_token, pad_token, as a
 * string or {content}); failing that, from common spellings present in the vocabulary
 * (`</s>`, `<|endoftext|>`, ...). pad falls back to eos.
 */
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { Tokenizer } from '@huggingface/tokenizers'

export class TokenizerError extends Error {
  override readonly name = 'TokenizerError'
}

export interface SpecialTokenOverrides {
  readonly bos?: string | null
  readonly eos?: string
  readonly pad?: string
}

export interface EncodeOptions {
  /** Let the tokenizer's post-processor add its special tokens (default false). */
  readonly addSpecialTokens?: boolean
}

export interface DecodeOptions {
  /** Drop special tokens from the text (default true). */
  readonly skipSpecialTokens?: boolean
}

const EOS_SPELLINGS = ['</s>', '<|endoftext|>', '<|end_of_text|>', '<eos>', '<|eos|>', '[SEP]']
const BOS_SPELLINGS = ['<s>', '<|begin_of_text|>', '<bos>', '<|bos|>', '[CLS]']
const PAD_SPELLINGS = ['<pad>', '<|pad|>', '[PAD]']

export class LlamaTokenizer {
  readonly bosId: number | undefined
  readonly eosId: number
  readonly padId: number
  readonly vocabSize: number
  private readonly tok: Tokenizer

  constructor(tokenizerJson: object, tokenizerConfig: object = {}, overrides: SpecialTokenOverrides = {}) {
    try {
      this.tok = new Tokenizer(tokenizerJson, tokenizerConfig)
    } catch (err) {
      throw new TokenizerError(`cannot build the tokenizer: ${err instanceof Error ? err.message : String(err)}`)
    }
    this.vocabSize = this.tok.get_vocab(true).size
    const cfg = tokenizerConfig as Record<string, unknown>
    const idOf = (label: string, token: string): number => {
      const id = this.tok.token_to_id(token)
      if (id === undefined) throw new TokenizerError(`${label} token ${JSON.stringify(token)} is not in the vocabulary`)
      return id
    }
    const pick = (label: string, override: string | null | undefined, key: string, spellings: readonly string[]): number | undefined => {
      if (override === null) return undefined
      if (override !== undefined) return idOf(label, override)
      const configured = tokenContent(cfg[key])
      if (configured !== undefined) return idOf(label, configured)
      for (const s of spellings) {
        const id = this.tok.token_to_id(s)
        if (id !== undefined) return id
      }
      return undefined
    }
    const eos = pick('eos', overrides.eos, 'eos_token', EOS_SPELLINGS)
    if (eos === undefined) throw new TokenizerError('no eos token: set eos_token in tokenizer_config.json or pass one')
    this.eosId = eos
    this.bosId = pick('bos', overrides.bos, 'bos_token', BOS_SPELLINGS)
    this.padId = pick('pad', overrides.pad, 'pad_token', PAD_SPELLINGS) ?? eos
  }

  /** tokenizer.json (required) and tokenizer_config.json (optional) from `dir`. */
  static async fromDir(dir: string, overrides: SpecialTokenOverrides = {}): Promise<LlamaTokenizer> {
    const jsonPath = path.join(dir, 'tokenizer.json')
    const tokenizerJson = await readJsonObject(jsonPath, true)
    const config = await readJsonObject(path.join(dir, 'tokenizer_config.json'), false)
    return new LlamaTokenizer(tokenizerJson as object, config ?? {}, overrides)
  }

  /** Token ids of `text`, without special tokens unless asked. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    return this.tok.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? true })
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token)
  }

  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id)
  }
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content
  }
  return undefined
}

async function readJsonObject(file: string, required: boolean): Promise<object | undefined> {
  try {
    await stat(file)
  } catch {
    if (required) throw new TokenizerError(`${file}: file is missing`)
    return undefined
  }
  let json: unknown
  try {
    json = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    throw new TokenizerError(`${file}: invalid JSON: ${(err as Error).message}`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new TokenizerError(`${file}: not a JSON object`)
  return json
}
