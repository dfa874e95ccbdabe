/**
 * A small byte-level BPE trainer (GPT-2 style) that writes Hugging Face `tokenizer.json`.
 *
 * Text is pre-tokenized with the GPT-2 regex (the one the HF ByteLevel pre-tokenizer
 * uses), each piece becomes its UTF-8 bytes mapped to printable characters (GPT-2's
 * bytes_to_unicode), and merges are learned greedily over the counted pieces: each step
 * merges the most frequent adjacent pair, ties broken by the pair's token strings
 * (left, then right, in UTF-16 code unit order). No step depends on Map/Set iteration
 * order, so the same text always gives the same merges and the same file bytes.
 *
 * The base alphabet is all 256 bytes, so every string encodes and decode(encode(s)) === s.
 */

/** GPT-2 pre-tokenization regex, as in HF tokenizers' ByteLevel pre-tokenizer. */
export const BYTE_LEVEL_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu

/** GPT-2 bytes_to_unicode: byte b -> a printable character standing for it. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const bs: number[] = []
  for (let b = 33; b <= 126; b++) bs.push(b)
  for (let b = 161; b <= 172; b++) bs.push(b)
  for (let b = 174; b <= 255; b++) bs.push(b)
  const cs = [...bs]
  let n = 0
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b)
      cs.push(256 + n)
      n++
    }
  }
  const out = new Array<string>(256)
  for (let i = 0; i < 256; i++) out[bs[i]] = String.fromCharCode(cs[i])
  return out
})()

const utf8 = new TextEncoder()

/** The byte-level form of one pre-tokenized piece, e.g. ' the' -> 'Ġthe'. */
export function byteLevel(piece: string): string {
  let s = ''
  for (const b of utf8.encode(piece)) s += BYTE_TO_CHAR[b]
  return s
}

/** Counts the byte-level pieces of `text` into `counts`. */
export function countPieces(text: string, counts: Map<string, number> = new Map()): Map<string, number> {
  for (const m of text.matchAll(BYTE_LEVEL_PATTERN)) {
    const piece = byteLevel(m[0])
    counts.set(piece, (counts.get(piece) ?? 0) + 1)
  }
  return counts
}

export interface BpeTrainOptions {
  /** Total vocabulary including special tokens and the 256 byte tokens. */
  readonly vocabSize: number
  /** Special tokens, given ids 0.. in this order (before the byte tokens). */
  readonly specialTokens: readonly string[]
  /** Stop early when the best pair occurs fewer times than this (default 2). */
  readonly minFrequency?: number
}

export interface BpeModel {
  /** Token strings by id: special tokens, then the 256 bytes in byte order, then merges. */
  readonly vocab: readonly string[]
  /** Merge rules in rank order, as [left, right] token strings. */
  readonly merges: ReadonlyArray<readonly [string, string]>
  readonly specialTokens: readonly string[]
}

/** Learns merges over piece counts (see countPieces). */
export function trainByteLevelBpe(pieceCounts: ReadonlyMap<string, number>, options: BpeTrainOptions): BpeModel {
  const { vocabSize, specialTokens } = options
  const minFrequency = options.minFrequency ?? 2
  const base = specialTokens.length + 256
  if (!Number.isInteger(vocabSize) || vocabSize < base) throw new RangeError(`vocabSize must be >= ${base}, got ${vocabSize}`)
  if (vocabSize > 65536) throw new RangeError('vocabSize above 65536 is not supported')
  const vocab: string[] = [...specialTokens, ...BYTE_TO_CHAR]
  const idOf = new Map<string, number>()
  vocab.forEach((t, i) => idOf.set(t, i))
  if (idOf.size !== vocab.length) throw new RangeError('special tokens must be distinct and differ from the byte tokens')
  const byteId = new Map<string, number>()
  BYTE_TO_CHAR.forEach((c, b) => byteId.set(c, specialTokens.length + b))

  // Words in sorted order, so nothing below depends on the caller's Map insertion order.
  const pieces = [...pieceCounts.keys()].sort()
  const words: number[][] = pieces.map((p) => Array.from(p, (ch) => byteId.get(ch) ?? -1))
  const freq: number[] = pieces.map((p) => pieceCounts.get(p) ?? 0)
  for (const w of words) if (w.includes(-1)) throw new RangeError('piece counts must hold byte-level strings (see countPieces)')

  const pairKey = (a: number, b: number): number => a * 65536 + b
  const counts = new Map<number, number>()
  const where = new Map<number, Set<number>>()
  for (let w = 0; w < words.length; w++) {
    const sym = words[w]
    for (let i = 0; i + 1 < sym.length; i++) {
      const key = pairKey(sym[i], sym[i + 1])
      counts.set(key, (counts.get(key) ?? 0) + freq[w])
      let set = where.get(key)
      if (set === undefined) where.set(key, (set = new Set()))
      set.add(w)
    }
  }

  // Max-heap of (count, pair) with lazy deletion: an entry is live iff its count is current.
  const heap = new PairHeap((x, y) => {
    if (x.count !== y.count) return x.count > y.count
    const xa = vocab[Math.floor(x.key / 65536)]
    const ya = vocab[Math.floor(y.key / 65536)]
    if (xa !== ya) return xa < ya
    return vocab[x.key % 65536] < vocab[y.key % 65536]
  })
  for (const [key, count] of counts) heap.push({ key, count })

  const merges: Array<[string, string]> = []
  while (vocab.length < vocabSize) {
    const top = heap.pop()
    if (top === undefined) break
    if (counts.get(top.key) !== top.count) continue
    if (top.count < minFrequency) break
    const a = Math.floor(top.key / 65536)
    const b = top.key % 65536
    const merged = vocab[a] + vocab[b]
    let id = idOf.get(merged)
    if (id === undefined) {
      id = vocab.length
      vocab.push(merged)
      idOf.set(merged, id)
    }
    merges.push([vocab[a], vocab[b]])
    const touched = new Set<number>()
    const affected = [...(where.get(top.key) ?? [])].sort((x, y) => x - y)
    for (const w of affected) {
      const sym = words[w]
      const f = freq[w]
      for (let i = 0; i + 1 < sym.length; i++) {
        const key = pairKey(sym[i], sym[i + 1])
        counts.set(key, (counts.get(key) ?? 0) - f)
        touched.add(key)
      }
      const next: number[] = []
      for (let i = 0; i < sym.length; i++) {
        if (i + 1 < sym.length && sym[i] === a && sym[i + 1] === b) {
          next.push(id)
          i++
        } else {
          next.push(sym[i])
        }
      }
      words[w] = next
      for (let i = 0; i + 1 < next.length; i++) {
        const key = pairKey(next[i], next[i + 1])
        counts.set(key, (counts.get(key) ?? 0) + f)
        touched.add(key)
        let set = where.get(key)
        if (set === undefined) where.set(key, (set = new Set()))
        set.add(w)
      }
    }
    counts.delete(top.key)
    where.delete(top.key)
    for (const key of touched) {
      const c = counts.get(key) ?? 0
      if (c > 0) heap.push({ key, count: c })
      else {
        counts.delete(key)
        where.delete(key)
      }
    }
  }
  return { vocab, merges, specialTokens: [...specialTokens] }
}

/**
 * Reference encoder for a trained model (GPT-2's bpe(): repeatedly merge the lowest-rank
 * adjacent pair, all its occurrences left to right). Used to cross-check what a loader of
 * the written tokenizer.json produces. Does not match special tokens inside the text.
 */
export function encodeWithModel(model: BpeModel, text: string): number[] {
  const rank = new Map<string, number>()
  model.merges.forEach(([l, r], i) => rank.set(`${l} ${r}`, i))
  const idOf = new Map<string, number>()
  model.vocab.forEach((t, i) => idOf.set(t, i))
  const out: number[] = []
  for (const m of text.matchAll(BYTE_LEVEL_PATTERN)) {
    let parts = Array.from(byteLevel(m[0]))
    for (;;) {
      let best = -1
      let bestRank = Infinity
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = rank.get(`${parts[i]} ${parts[i + 1]}`)
        if (r !== undefined && r < bestRank) {
          bestRank = r
          best = i
        }
      }
      if (best < 0) break
      const [l, r] = [parts[best], parts[best + 1]]
      const next: string[] = []
      for (let i = 0; i < parts.length; i++) {
        if (i + 1 < parts.length && parts[i] === l && parts[i + 1] === r) {
          next.push(l + r)
          i++
        } else next.push(parts[i])
      }
      parts = next
    }
    for (const p of parts) {
      const id = idOf.get(p)
      if (id === undefined) throw new Error(`token ${JSON.stringify(p)} missing from the vocabulary`)
      out.push(id)
    }
  }
  return out
}

/**
 * HF `tokenizer.json` text: BPE model, ByteLevel pre-tokenizer and decoder, no normalizer
 * and no post-processor (encode adds no special tokens), special tokens as added_tokens.
 * Pretty-printed like HF's own files, vocab in id order; byte-for-byte deterministic.
 */
export function tokenizerJson(model: BpeModel): string {
  const addedTokens = model.specialTokens.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }))
  const doc = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: '__VOCAB__',
      merges: '__MERGES__',
    },
  }
  const vocab = model.vocab.map((t, i) => `      ${JSON.stringify(t)}: ${i}`).join(',\n')
  const merges = model.merges.map(([l, r]) => `      ${JSON.stringify(`${l} ${r}`)}`).join(',\n')
  return (
    JSON.stringify(doc, null, 2)
      .replace('"__VOCAB__"', () => `{\n${vocab}\n    }`)
      .replace('"__MERGES__"', () => `[\n${merges}\n    ]`) + '\n'
  )
}

interface HeapEntry {
  readonly key: number
  readonly count: number
}

/** Binary heap; `before(x, y)` true when x must pop before y. */
class PairHeap {
  private readonly items: HeapEntry[] = []
  constructor(private readonly before: (x: HeapEntry, y: HeapEntry) => boolean) {}

  push(e: HeapEntry): void {
    const a = this.items
    a.push(e)
    let i = a.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!this.before(a[i], a[p])) break
      ;[a[i], a[p]] = [a[p], a[i]]
      i = p
    }
  }

  pop(): HeapEntry | undefined {
    const a = this.items
    if (a.length === 0) return undefined
    const top = a[0]
    const last = a.pop() as HeapEntry
    if (a.length > 0) {
      a[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < a.length && this.before(a[l], a[m])) m = l
        if (r < a.length && this.before(a[r], a[m])) m = r
        if (m === i) break
        ;[a[i], a[m]] = [a[m], a[i]]
        i = m
      }
    }
    return top
  }
}
