import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { AdapterDecodeError } from '../../src/lora/errors.js'
import type { WireDType } from '../../src/lora/types.js'
import { validateAdapter, validateAdapterAgainstShapes } from '../../src/lora/validate.js'
import { decodeAdapter, encodeAdapter, readAdapterHeader, type DecodeOptions } from '../../src/lora/wire.js'
import { hex, randomAdapter, smallShapes } from './helpers.js'

const CODES = new Set([
  'TRUNCATED', 'BAD_MAGIC', 'UNSUPPORTED_VERSION', 'BAD_DTYPE', 'BAD_HEADER', 'BAD_NAME', 'UNSORTED',
  'DUPLICATE_MODULE', 'UNKNOWN_MODULE', 'MISSING_MODULE', 'SHAPE_MISMATCH', 'RANK_LIMIT', 'BAD_ALPHA',
  'BAD_SCALING', 'SIZE_LIMIT', 'NON_FINITE', 'TRAILING_BYTES',
])

const shapes = smallShapes(2, 6, 3)

/**
 * The decoder's contract on arbitrary input: it throws an AdapterDecodeError with a known
 * code, or returns a fully valid adapter whose canonical re-encoding is exactly the input.
 * Returns the outcome for coverage bookkeeping.
 */
function checkDecode(bytes: Uint8Array, options: DecodeOptions): string {
  let decoded
  try {
    decoded = decodeAdapter(bytes, options)
  } catch (e) {
    if (!(e instanceof AdapterDecodeError)) throw new Error(`non-AdapterDecodeError escaped: ${String(e)}`)
    if (e.name !== 'AdapterDecodeError' || !CODES.has(e.code)) throw new Error(`bad error ${e.name}/${e.code}`)
    // The cheap header check agrees with the full decode, except for data-level failures.
    if (e.code !== 'NON_FINITE') {
      let headerErr: unknown
      try {
        readAdapterHeader(bytes, options)
      } catch (h) {
        headerErr = h
      }
      if (!(headerErr instanceof AdapterDecodeError) || headerErr.code !== e.code) throw new Error('readAdapterHeader disagrees with decodeAdapter')
    }
    return e.code
  }
  validateAdapter(decoded, { requireSorted: true })
  if (options.expectedShapes !== undefined) validateAdapterAgainstShapes(decoded, options.expectedShapes, { requireAllModules: options.requireAllModules })
  const dtype = readAdapterHeader(bytes).dtype
  if (hex(encodeAdapter(decoded, { dtype })) !== hex(bytes)) throw new Error('decoded adapter does not re-encode to the input bytes')
  return 'OK'
}

const dtypes: WireDType[] = ['f32', 'f16', 'bf16']
const seeds = Array.from({ length: 6 }, (_, i) => i)
/** A few valid encodings to mutate: different dtypes, ranks, module subsets. */
const corpus: Uint8Array[] = seeds.map((s) =>
  encodeAdapter(randomAdapter(s, { shapes: s % 2 === 0 ? shapes : shapes.slice(1, 3), rank: 1 + (s % 3), rslora: s === 4 }), { dtype: dtypes[s % 3] }),
)

const optionsArb: fc.Arbitrary<DecodeOptions> = fc.oneof(
  fc.constant({}),
  fc.constant({ expectedShapes: shapes }),
  fc.constant({ expectedShapes: shapes, requireAllModules: true }),
  fc.constant({ maxRank: 2, maxBytes: 400 }),
)

type Mutation =
  | { kind: 'flip'; pos: number; bit: number }
  | { kind: 'set'; pos: number; value: number }
  | { kind: 'truncate'; len: number }
  | { kind: 'insert'; pos: number; bytes: Uint8Array }
  | { kind: 'delete'; pos: number; count: number }
  | { kind: 'u32'; pos: number; value: number }
  | { kind: 'poison'; pos: number }

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), pos: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), pos: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), len: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), pos: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant('delete' as const), pos: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
  // Header fields are where the interesting branches are: overwrite a u32 near the front.
  // Eight 0xff bytes always cover the top two bytes of some element in any dtype: NaN.
  fc.record({ kind: fc.constant('poison' as const), pos: fc.nat() }),
  fc.record({ kind: fc.constant('u32' as const), pos: fc.integer({ min: 0, max: 120 }), value: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.constant(0xffffffff), fc.nat()) }),
)

function mutate(src: Uint8Array, muts: readonly Mutation[]): Uint8Array {
  let b = Uint8Array.from(src)
  for (const m of muts) {
    const n = b.length
    if (m.kind === 'flip' && n > 0) b[m.pos % n] ^= 1 << m.bit
    else if (m.kind === 'set' && n > 0) b[m.pos % n] = m.value
    else if (m.kind === 'truncate') b = b.slice(0, m.len % (n + 1))
    else if (m.kind === 'insert') {
      const p = m.pos % (n + 1)
      b = Uint8Array.from([...b.subarray(0, p), ...m.bytes, ...b.subarray(p)])
    } else if (m.kind === 'delete' && n > 0) {
      const p = m.pos % n
      b = Uint8Array.from([...b.subarray(0, p), ...b.subarray(p + m.count)])
    } else if (m.kind === 'u32' && n >= 4) {
      const p = m.pos % (n - 3)
      new DataView(b.buffer).setUint32(p, m.value >>> 0, true)
    } else if (m.kind === 'poison' && n > 0) {
      b.fill(0xff, m.pos % n, (m.pos % n) + 8)
    }
  }
  return b
}

describe('wire fuzz: decode never throws anything but AdapterDecodeError', () => {
  it('random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), optionsArb, (bytes, options) => void checkDecode(bytes, options)), { numRuns: 1500 })
  })

  it('random bytes behind a valid magic/version/dtype prefix', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 300 }), optionsArb, (dtype, tail, options) => {
        const bytes = Uint8Array.from([0x46, 0x4c, 0x52, 0x41, 1, 0, dtype, 0, ...tail])
        checkDecode(bytes, options)
      }),
      { numRuns: 1500 },
    )
  })

  it('mutated valid encodings (bit flips, byte sets, truncations, insertions, deletions, header overwrites)', () => {
    const seen = new Map<string, number>()
    fc.assert(
      fc.property(fc.integer({ min: 0, max: corpus.length - 1 }), fc.array(mutationArb, { minLength: 1, maxLength: 3 }), optionsArb, (i, muts, options) => {
        const outcome = checkDecode(mutate(corpus[i], muts), options)
        seen.set(outcome, (seen.get(outcome) ?? 0) + 1)
      }),
      { numRuns: 3000 },
    )
    // The mutations must reach deep into the decoder, not just fail at the magic.
    for (const code of ['TRUNCATED', 'TRAILING_BYTES', 'BAD_NAME', 'RANK_LIMIT', 'SHAPE_MISMATCH', 'BAD_SCALING', 'NON_FINITE', 'OK']) {
      expect(seen.get(code) ?? 0, `outcome ${code} never reached: ${JSON.stringify([...seen])}`).toBeGreaterThan(0)
    }
  })

  it('unmutated corpus decodes and re-encodes identically', () => {
    for (const b of corpus) expect(checkDecode(b, { expectedShapes: shapes })).toBe('OK')
  })
})
