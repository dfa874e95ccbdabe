import { describe, expect, it } from 'vitest'
import { AdapterDecodeError, InvalidAdapterError, LoraConfigError, type AdapterDecodeErrorCode } from '../../src/lora/errors.js'
import { roundToBf16, roundToF16 } from '../../src/lora/float16.js'
import { initAdapter } from '../../src/lora/init.js'
import type { AdapterSet, LoraModule, ModuleShape, WireDType } from '../../src/lora/types.js'
import {
  adapterDigest,
  decodeAdapter,
  encodeAdapter,
  encodedAdapterSize,
  readAdapterHeader,
  type DecodeOptions,
} from '../../src/lora/wire.js'
import { hex, randomAdapter, sameBits, smallShapes } from './helpers.js'

interface RawModule {
  name: string | Uint8Array
  rank: number
  inFeatures: number
  outFeatures: number
  alpha: number
  scaling: number
}
interface RawSpec {
  magic?: number[]
  version?: number
  dtype?: number
  reserved?: number
  count?: number
  modules: RawModule[]
  /** Bytes per element for the zero-filled data section (default 4); or explicit data. */
  elem?: number
  data?: Uint8Array
}

/** Writes the wire layout with no validation at all, to build hostile inputs. */
function raw(spec: RawSpec): Uint8Array {
  const parts: number[] = [...(spec.magic ?? [0x46, 0x4c, 0x52, 0x41])]
  const u16 = (v: number) => parts.push(v & 0xff, (v >>> 8) & 0xff)
  const u32 = (v: number) => parts.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff)
  const f64 = (v: number) => {
    const b = new Uint8Array(8)
    new DataView(b.buffer).setFloat64(0, v, true)
    parts.push(...b)
  }
  u16(spec.version ?? 1)
  parts.push(spec.dtype ?? 0, spec.reserved ?? 0)
  u32(spec.count ?? spec.modules.length)
  let elems = 0
  for (const m of spec.modules) {
    const nb = typeof m.name === 'string' ? Buffer.from(m.name, 'utf8') : m.name
    u16(nb.length)
    parts.push(...nb)
    u32(m.rank)
    u32(m.inFeatures)
    u32(m.outFeatures)
    f64(m.alpha)
    f64(m.scaling)
    elems += m.rank * (m.inFeatures + m.outFeatures)
  }
  const head = Uint8Array.from(parts)
  const data = spec.data ?? new Uint8Array(elems * (spec.elem ?? 4))
  const out = new Uint8Array(head.length + data.length)
  out.set(head)
  out.set(data, head.length)
  return out
}

const mod = (name: string, over: Partial<RawModule> = {}): RawModule => ({ name, rank: 2, inFeatures: 3, outFeatures: 4, alpha: 4, scaling: 2, ...over })

function decodeError(bytes: Uint8Array, options?: DecodeOptions): AdapterDecodeError {
  try {
    decodeAdapter(bytes, options)
  } catch (e) {
    if (e instanceof AdapterDecodeError) return e
    throw new Error(`expected AdapterDecodeError, got ${String(e)}`)
  }
  throw new Error('expected decode to fail, it succeeded')
}

function expectCode(bytes: Uint8Array, code: AdapterDecodeErrorCode, options?: DecodeOptions): AdapterDecodeError {
  const e = decodeError(bytes, options)
  expect(e.name).toBe('AdapterDecodeError')
  expect(e.code, e.message).toBe(code)
  expect(e.message.length).toBeGreaterThan(code.length + 5)
  return e
}

function expectSameAdapter(a: AdapterSet, b: AdapterSet): void {
  expect(a.modules.map((m) => m.name)).toEqual(b.modules.map((m) => m.name))
  for (let i = 0; i < a.modules.length; i++) {
    const x = a.modules[i]
    const y = b.modules[i]
    expect([x.rank, x.inFeatures, x.outFeatures, x.alpha, x.scaling]).toEqual([y.rank, y.inFeatures, y.outFeatures, y.alpha, y.scaling])
    expect(sameBits(x.loraA, y.loraA)).toBe(true)
    expect(sameBits(x.loraB, y.loraB)).toBe(true)
  }
}

const sorted = (a: AdapterSet): AdapterSet => ({ modules: [...a.modules].sort((x, y) => (x.name < y.name ? -1 : 1)) })

describe('wire: round trip', () => {
  it('f32 is exact (bits, including -0 and subnormals) and sorts modules', () => {
    const a = randomAdapter(1)
    a.modules[0].loraA[0] = -0
    a.modules[0].loraA[1] = 1e-45
    a.modules[0].loraB[0] = 3.4028234663852886e38
    const bytes = encodeAdapter(a)
    expect(bytes.length).toBe(encodedAdapterSize(a))
    const d = decodeAdapter(bytes, { expectedShapes: smallShapes(), requireAllModules: true })
    expectSameAdapter(d, sorted(a))
    expect(d.modules.every((m) => m.loraA instanceof Float32Array && m.loraB instanceof Float32Array)).toBe(true)
  })

  it('f16 and bf16 decode to the round-to-nearest-even value of each element', () => {
    const a = randomAdapter(2, { scale: 3 })
    for (const [dtype, round] of [['f16', roundToF16], ['bf16', roundToBf16]] as const) {
      const bytes = encodeAdapter(a, { dtype })
      expect(bytes.length).toBe(encodedAdapterSize(a, dtype))
      const d = decodeAdapter(bytes)
      const s = sorted(a)
      for (let i = 0; i < s.modules.length; i++) {
        for (const f of ['loraA', 'loraB'] as const) {
          const want = Float32Array.from(s.modules[i][f], round)
          expect(sameBits(d.modules[i][f], want)).toBe(true)
          // And within half an ulp of the original: 2^-11 relative for f16, 2^-8 for bf16.
          const rel = dtype === 'f16' ? 2 ** -11 : 2 ** -8
          s.modules[i][f].forEach((x, j) => expect(Math.abs(d.modules[i][f][j] - x)).toBeLessThanOrEqual(Math.abs(x) * rel + 2 ** -24))
        }
      }
    }
  })

  it('f16 and bf16 are exact on representable values', () => {
    const vals = [0, -0, 1, -2, 0.5, 0.25, 1.5, -3.75, 2 ** -14, 2 ** -24, 1024, 0.099609375]
    const m: LoraModule = {
      name: 'm',
      rank: 2,
      inFeatures: 3,
      outFeatures: 3,
      alpha: 2,
      scaling: 1,
      loraA: Float32Array.from(vals.slice(0, 6)),
      loraB: Float32Array.from(vals.slice(6, 12)),
    }
    for (const dtype of ['f16', 'bf16'] as const) {
      // All listed values have <= 8 significant bits and exponents inside both formats.
      const d = decodeAdapter(encodeAdapter({ modules: [m] }, { dtype }))
      expect(sameBits(d.modules[0].loraA, m.loraA)).toBe(true)
      expect(sameBits(d.modules[0].loraB, m.loraB)).toBe(true)
    }
  })

  it('keeps rsLoRA scaling and reports it in the header', () => {
    const a = randomAdapter(3, { rank: 4, alpha: 8, rslora: true })
    const bytes = encodeAdapter(a)
    expect(decodeAdapter(bytes).modules[0].scaling).toBe(4)
    const h = readAdapterHeader(bytes)
    expect(h.modules.every((m) => m.rslora)).toBe(true)
    expect(h.totalBytes).toBe(bytes.length)
    expect(h.dtype).toBe('f32')
    expect(h.modules[0].dataOffset).toBe(h.headerBytes)
  })

  it('decodes from a Buffer at a non-zero, unaligned offset', () => {
    const a = randomAdapter(4)
    const bytes = encodeAdapter(a)
    const big = Buffer.alloc(bytes.length + 3)
    big.set(bytes, 3)
    expectSameAdapter(decodeAdapter(big.subarray(3)), sorted(a))
    // Result does not alias the input.
    const d = decodeAdapter(bytes)
    bytes.fill(0)
    expect(d.modules[0].loraA.some((x) => x !== 0)).toBe(true)
  })
})

describe('wire: canonical bytes', () => {
  it('same adapter gives the same bytes and digest whatever the input module order', () => {
    const a = randomAdapter(5)
    const rev: AdapterSet = { modules: [...a.modules].reverse() }
    expect(hex(encodeAdapter(a))).toBe(hex(encodeAdapter(rev)))
    expect(adapterDigest(encodeAdapter(a))).toBe(adapterDigest(encodeAdapter(rev)))
    expect(adapterDigest(encodeAdapter(a))).toMatch(/^[0-9a-f]{64}$/)
  })

  it('decode then encode reproduces the input bytes for every dtype', () => {
    const a = randomAdapter(6)
    for (const dtype of ['f32', 'f16', 'bf16'] as WireDType[]) {
      const bytes = encodeAdapter(a, { dtype })
      expect(hex(encodeAdapter(decodeAdapter(bytes), { dtype }))).toBe(hex(bytes))
    }
  })

  it('pins the layout of a tiny adapter', () => {
    const m: LoraModule = { name: 'q', rank: 1, inFeatures: 1, outFeatures: 1, alpha: 2, scaling: 2, loraA: Float32Array.of(1), loraB: Float32Array.of(-2) }
    expect(hex(encodeAdapter({ modules: [m] }))).toBe(
      '464c5241' + '0100' + '00' + '00' + '01000000' + // magic, version 1, f32, reserved, 1 module
        '0100' + '71' + '01000000' + '01000000' + '01000000' + // name 'q', rank 1, in 1, out 1
        '0000000000000040' + '0000000000000040' + // alpha 2.0, scaling 2.0 (f64 LE)
        '0000803f' + '000000c0', // A = [1.0], B = [-2.0] (f32 LE)
    )
    expect(hex(encodeAdapter({ modules: [m] }, { dtype: 'f16' })).slice(-8)).toBe('003c00c0')
    expect(hex(encodeAdapter({ modules: [m] }, { dtype: 'bf16' })).slice(-8)).toBe('803f00c0')
  })
})

describe('wire: encode rejects invalid adapters', () => {
  const base = (): LoraModule => ({ ...randomAdapter(7).modules[0] })
  const cases: Array<[string, () => AdapterSet, string]> = [
    ['empty', () => ({ modules: [] }), 'EMPTY'],
    ['duplicate', () => ({ modules: [base(), base()] }), 'DUPLICATE_MODULE'],
    ['bad name', () => ({ modules: [{ ...base(), name: 'a b' }] }), 'BAD_NAME'],
    ['non-ascii name', () => ({ modules: [{ ...base(), name: 'é' }] }), 'BAD_NAME'],
    ['rank 0', () => ({ modules: [{ ...base(), rank: 0 }] }), 'BAD_RANK'],
    ['alpha NaN', () => ({ modules: [{ ...base(), alpha: NaN }] }), 'BAD_ALPHA'],
    ['scaling off', () => ({ modules: [{ ...base(), scaling: 1.5 }] }), 'BAD_SCALING'],
    ['A wrong length', () => ({ modules: [{ ...base(), loraA: new Float32Array(1) }] }), 'BAD_TENSOR'],
    ['B not f32', () => ({ modules: [{ ...base(), loraB: new Float64Array(24) as unknown as Float32Array }] }), 'BAD_TENSOR'],
    ['NaN in B', () => ({ modules: [{ ...base(), loraB: new Float32Array(base().loraB.length).fill(NaN) }] }), 'NON_FINITE'],
    ['zero in', () => ({ modules: [{ ...base(), inFeatures: 0 }] }), 'SHAPE_MISMATCH'],
  ]
  for (const [label, make, code] of cases) {
    it(label, () => {
      expect(() => encodeAdapter(make())).toThrow(expect.objectContaining({ name: 'InvalidAdapterError', code }))
    })
  }

  it('overflow of the narrow dtype', () => {
    const m = base()
    const big = { ...m, loraA: m.loraA.slice() }
    big.loraA[0] = 70000
    expect(() => encodeAdapter({ modules: [big] }, { dtype: 'f16' })).toThrow(expect.objectContaining({ code: 'DTYPE_OVERFLOW', module: m.name }))
    encodeAdapter({ modules: [big] }, { dtype: 'bf16' })
    big.loraA[0] = 3.4028234663852886e38
    expect(() => encodeAdapter({ modules: [big] }, { dtype: 'bf16' })).toThrow(InvalidAdapterError)
  })

  it('size limit and bad options', () => {
    const a = randomAdapter(8)
    expect(() => encodeAdapter(a, { maxBytes: 100 })).toThrow(expect.objectContaining({ code: 'SIZE_LIMIT' }))
    expect(() => encodeAdapter(a, { dtype: 'f8' as WireDType })).toThrow(LoraConfigError)
  })
})

describe('wire: decode rejects every bad-input class with its code', () => {
  const valid = encodeAdapter(randomAdapter(9))
  const shapes = smallShapes()

  it('TRUNCATED at every prefix length', () => {
    for (let n = 0; n < valid.length; n++) expectCode(valid.subarray(0, n), 'TRUNCATED')
  })
  it('TRAILING_BYTES', () => {
    const e = expectCode(Uint8Array.from([...valid, 0]), 'TRAILING_BYTES')
    expect(e.offset).toBe(valid.length)
  })
  it('BAD_MAGIC', () => {
    expectCode(raw({ magic: [0x46, 0x4c, 0x52, 0x42], modules: [mod('a')] }), 'BAD_MAGIC')
    expectCode(Uint8Array.of(0x00), 'BAD_MAGIC')
    expectCode(Buffer.from('{"json": true}'), 'BAD_MAGIC')
  })
  it('UNSUPPORTED_VERSION', () => {
    expectCode(raw({ version: 2, modules: [mod('a')] }), 'UNSUPPORTED_VERSION')
    expectCode(raw({ version: 0, modules: [mod('a')] }), 'UNSUPPORTED_VERSION')
  })
  it('BAD_DTYPE, including a dtype other than the one required', () => {
    expectCode(raw({ dtype: 3, modules: [mod('a')] }), 'BAD_DTYPE')
    expectCode(valid, 'BAD_DTYPE', { dtype: 'f16' })
  })
  it('BAD_HEADER: reserved byte, zero modules', () => {
    expectCode(raw({ reserved: 1, modules: [mod('a')] }), 'BAD_HEADER')
    expectCode(raw({ modules: [] }), 'BAD_HEADER')
  })
  it('TRUNCATED when the module count is absurd (fails before looping)', () => {
    expectCode(raw({ count: 0xffffffff, modules: [mod('a')] }), 'TRUNCATED')
  })
  it('BAD_NAME: empty, too long, space, control, non-ASCII UTF-8, BOM', () => {
    expectCode(raw({ modules: [mod('')] }), 'BAD_NAME')
    expectCode(raw({ modules: [mod('x'.repeat(257))] }), 'BAD_NAME')
    expectCode(raw({ modules: [mod('a b')] }), 'BAD_NAME')
    expectCode(raw({ modules: [mod('a\nb')] }), 'BAD_NAME')
    expectCode(raw({ modules: [mod('é')] }), 'BAD_NAME')
    expectCode(raw({ modules: [mod('\ufeffa')] }), 'BAD_NAME')
    // 256 is fine.
    expect(decodeAdapter(raw({ modules: [mod('x'.repeat(256))] })).modules[0].name.length).toBe(256)
  })
  it('DUPLICATE_MODULE and UNSORTED', () => {
    const e = expectCode(raw({ modules: [mod('a'), mod('a')] }), 'DUPLICATE_MODULE')
    expect(e.module).toBe('a')
    expectCode(raw({ modules: [mod('b'), mod('a')] }), 'UNSORTED')
    expectCode(raw({ modules: [mod('a.q'), mod('a.k')] }), 'UNSORTED')
  })
  it('UNKNOWN_MODULE, SHAPE_MISMATCH, MISSING_MODULE against the declared base model', () => {
    const s: ModuleShape[] = [{ name: 'a', inFeatures: 3, outFeatures: 4 }, { name: 'b', inFeatures: 3, outFeatures: 4 }]
    expect(decodeAdapter(raw({ modules: [mod('a')] }), { expectedShapes: s }).modules).toHaveLength(1)
    const e = expectCode(raw({ modules: [mod('a'), mod('c')] }), 'UNKNOWN_MODULE', { expectedShapes: s })
    expect(e.module).toBe('c')
    expect(e.message).toContain('c')
    expectCode(raw({ modules: [mod('a', { inFeatures: 5 })] }), 'SHAPE_MISMATCH', { expectedShapes: s })
    expectCode(raw({ modules: [mod('b', { outFeatures: 3 })] }), 'SHAPE_MISMATCH', { expectedShapes: s })
    expectCode(raw({ modules: [mod('a')] }), 'MISSING_MODULE', { expectedShapes: s, requireAllModules: true })
    expectCode(raw({ modules: [mod('a', { inFeatures: 0 })] }), 'SHAPE_MISMATCH')
    expectCode(valid, 'UNKNOWN_MODULE', { expectedShapes: shapes.slice(1) })
  })
  it('RANK_LIMIT: zero, above the default 256, above a custom limit', () => {
    expectCode(raw({ modules: [mod('a', { rank: 0, alpha: 4, scaling: 2 })] }), 'RANK_LIMIT')
    expectCode(raw({ modules: [mod('a', { rank: 257, alpha: 257, scaling: 1 })] }), 'RANK_LIMIT')
    expectCode(valid, 'RANK_LIMIT', { maxRank: 2 })
    expect(decodeAdapter(valid, { maxRank: 3 }).modules[0].rank).toBe(3)
  })
  it('BAD_ALPHA and BAD_SCALING (both conventions accepted)', () => {
    expectCode(raw({ modules: [mod('a', { alpha: NaN, scaling: NaN })] }), 'BAD_ALPHA')
    expectCode(raw({ modules: [mod('a', { alpha: -4, scaling: -2 })] }), 'BAD_ALPHA')
    expectCode(raw({ modules: [mod('a', { alpha: Infinity, scaling: Infinity })] }), 'BAD_ALPHA')
    expectCode(raw({ modules: [mod('a', { scaling: 2.0000000000000004 })] }), 'BAD_SCALING')
    expectCode(raw({ modules: [mod('a', { scaling: 0 })] }), 'BAD_SCALING')
    expect(decodeAdapter(raw({ modules: [mod('a', { alpha: 4, scaling: 4 / Math.SQRT2 })] })).modules[0].scaling).toBe(4 / Math.SQRT2)
  })
  it('SIZE_LIMIT on input length and on declared sizes, before allocating', () => {
    expectCode(valid, 'SIZE_LIMIT', { maxBytes: valid.length - 1 })
    // Declares 256 * (2^32-1 + 2^32-1) floats in a 45-byte input: must not try to allocate.
    const huge = raw({ modules: [mod('a', { rank: 256, inFeatures: 0xffffffff, outFeatures: 0xffffffff, alpha: 256, scaling: 1 })], data: new Uint8Array(0) })
    const e = expectCode(huge, 'SIZE_LIMIT')
    expect(e.module).toBe('a')
    // Under the cap but longer than the input: TRUNCATED, still no allocation of the declared size.
    expectCode(raw({ modules: [mod('a', { rank: 256, inFeatures: 1000, outFeatures: 1000, alpha: 256, scaling: 1 })], data: new Uint8Array(8) }), 'TRUNCATED')
  })
  it('NON_FINITE in each dtype, naming the module and tensor', () => {
    const nanF32 = new Uint8Array(56) // 2 * (3 + 4) = 14 elements
    new DataView(nanF32.buffer).setFloat32(4 * 7, NaN, true) // loraB[1] (A has 6 elements)
    const e = expectCode(raw({ modules: [mod('a')], data: nanF32 }), 'NON_FINITE')
    expect([e.module, e.field]).toEqual(['a', 'loraB'])
    const infF16 = new Uint8Array(28)
    infF16.set([0x00, 0x7c], 2) // +Inf in loraA[1]
    expectCode(raw({ dtype: 1, modules: [mod('a')], data: infF16 }), 'NON_FINITE')
    const nanBf16 = new Uint8Array(28)
    nanBf16.set([0xc1, 0xff], 26) // NaN in the last loraB element
    expectCode(raw({ dtype: 2, modules: [mod('a')], data: nanBf16 }), 'NON_FINITE')
  })
  it('bad options are the caller’s bug: LoraConfigError', () => {
    expect(() => decodeAdapter(valid, { maxRank: 0 })).toThrow(LoraConfigError)
    expect(() => decodeAdapter(valid, { maxBytes: -1 })).toThrow(LoraConfigError)
    expect(() => decodeAdapter(valid, { requireAllModules: true })).toThrow(LoraConfigError)
    expect(() => decodeAdapter([1, 2] as unknown as Uint8Array)).toThrow(LoraConfigError)
  })
})

describe('wire: realistic size', () => {
  it('round-trips a 1.5M-parameter adapter quickly in every dtype', () => {
    const shapes: ModuleShape[] = []
    for (let l = 0; l < 8; l++) for (const p of ['q_proj', 'v_proj']) shapes.push({ name: `layers.${l}.self_attn.${p}`, inFeatures: 1536, outFeatures: 1536 })
    const a = initAdapter({ shapes, rank: 32, alpha: 64, seed: 'big' })
    for (const dtype of ['f32', 'f16', 'bf16'] as WireDType[]) {
      const bytes = encodeAdapter(a, { dtype })
      const d = decodeAdapter(bytes, { expectedShapes: shapes })
      expect(d.modules).toHaveLength(16)
      if (dtype === 'f32') expectSameAdapter(d, a)
    }
  })
})
