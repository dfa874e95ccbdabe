/** Test helper: the bundled tokenizer loaded with @huggingface/tokenizers, as a TextTokenizer. */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Tokenizer } from '@huggingface/tokenizers'
import type { TextTokenizer } from '../../../src/model/data/template.js'

export const MODEL_DIR = fileURLToPath(new URL('../../../models/flora-tiny/', import.meta.url))

/**
 * The part of @huggingface/tokenizers' Tokenizer used here. Its .d.ts files import without
 * extensions, so under NodeNext resolution the class types as `any`; pin the shape.
 */
export interface HfTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] }
  decode(ids: number[], options?: { skip_special_tokens?: boolean }): string
  token_to_id(token: string): number | undefined
}

export function loadBundledHfTokenizer(): HfTokenizer {
  const json = JSON.parse(readFileSync(MODEL_DIR + 'tokenizer.json', 'utf8')) as object
  const config = JSON.parse(readFileSync(MODEL_DIR + 'tokenizer_config.json', 'utf8')) as object
  return new Tokenizer(json, config) as HfTokenizer
}

export function asTextTokenizer(tok: HfTokenizer): TextTokenizer {
  const id = (t: string): number => {
    const v = tok.token_to_id(t)
    if (v === undefined) throw new Error(`missing special token ${t}`)
    return v
  }
  return {
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    // @huggingface/tokenizers throws on an empty id list.
    decode: (ids) => (ids.length === 0 ? '' : tok.decode([...ids])),
    bosId: id('<s>'),
    eosId: id('</s>'),
    padId: id('<pad>'),
  }
}
