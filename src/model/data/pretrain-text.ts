/**
 * Real English text for pretraining the bundled base model (and training its tokenizer),
 * with the held-out evaluation synsets left out, so evaluation measures generalization to
 * definitions the model has never seen.
 *
 * One entry per training synset, in a seeded pseudo-random order:
 *
 *   dog, domestic dog, Canis familiaris (noun): a member of the genus Canis ... breeds
 *   the dog barked all night                      <- its usage examples, one per line
 *
 * Optionally followed by the license texts Debian installs in /usr/share/common-licenses
 * (plain English prose). That is off by default: the bundled tokenizer and base model must
 * not depend on what a machine happens to have installed.
 */
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createPrng, type SeedLike } from '../../lora/prng.js'
import {
  DEFAULT_EVAL_FRACTION,
  loadWordNet,
  posLabel,
  splitWordNet,
  type Synset,
  WORDNET_POS,
  type WordNetPos,
} from './wordnet.js'

export interface PretrainTextOptions {
  /** Order of the entries (default 'flora-pretrain-v1'). */
  readonly seed?: SeedLike
  /** Must match the evaluation split used for fine-tuning (default 0.05). */
  readonly evalFraction?: number
  readonly pos?: readonly WordNetPos[]
  /** Include the usage examples (default true). */
  readonly includeExamples?: boolean
  /** Append Debian's /usr/share/common-licenses texts when present (default false). */
  readonly includeDebianLicenses?: boolean
  readonly dictDir?: string
}

export const DEFAULT_PRETRAIN_SEED = 'flora-pretrain-v1'

/** The text of one synset: its "words (pos): definition" line, then its examples. */
export function synsetPretrainEntry(s: Synset, includeExamples = true): string {
  const head = `${s.words.join(', ')} (${posLabel(s.pos)}): ${s.definition}`
  return includeExamples && s.examples.length > 0 ? [head, ...s.examples].join('\n') : head
}

/** Pretraining entries (each one or more lines, no trailing newline), deterministic. */
export function pretrainEntries(options: PretrainTextOptions = {}): string[] {
  const wn = loadWordNet(options.dictDir)
  const split = splitWordNet(wn, options.evalFraction ?? DEFAULT_EVAL_FRACTION)
  const pos = new Set(options.pos ?? WORDNET_POS)
  const entries = split.train.filter((s) => pos.has(s.pos)).map((s) => synsetPretrainEntry(s, options.includeExamples !== false))
  createPrng(options.seed ?? DEFAULT_PRETRAIN_SEED).fork('pretrain/order').shuffle(entries)
  if (options.includeDebianLicenses === true) for (const p of debianLicenseParagraphs()) entries.push(p)
  return entries
}

/** All entries joined by newlines, ending in a newline. */
export function buildPretrainText(options: PretrainTextOptions = {}): string {
  return pretrainEntries(options).join('\n') + '\n'
}

/**
 * Paragraphs of the license texts under `dir` (files in name order, symlinked duplicates
 * such as GPL -> GPL-3 read once, lines of a paragraph joined). [] when absent.
 */
export function debianLicenseParagraphs(dir = '/usr/share/common-licenses'): string[] {
  let names: string[]
  try {
    names = readdirSync(dir).sort()
  } catch {
    return []
  }
  const seen = new Set<string>()
  const out: string[] = []
  for (const name of names) {
    const path = join(dir, name)
    let real: string
    try {
      real = realpathSync(path)
      if (!statSync(real).isFile()) continue
    } catch {
      continue
    }
    if (seen.has(real)) continue
    seen.add(real)
    const text = readFileSync(real, 'utf8')
    for (const para of text.split(/\n\s*\n/)) {
      const joined = para.replace(/\s+/g, ' ').trim()
      if (joined.length > 0) out.push(joined)
    }
  }
  return out
}
