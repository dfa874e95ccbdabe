import { describe, expect, it } from 'vitest'
import { roundToBf16, roundToF16 } from '../../src/lora/float16.js'
import {
  parseSafetensors,
  parseSafetensorsHeader,
  SafetensorsError,
  serializeSafetensors,
} from '../../src/model/safetensors.js'

const A = Float32Array.from([1.5, -2.25, 3.1415927, 0, -0, 65504, 1e-8, 7e4])
const B = Float32Array.from({ length: 6 }, (_, i) => i / 3 - 1)

function tensors() {
  return new Map([
    ['a', { shape: [2, 4], data: A }],
    ['b.weight', { shape: [6], data: B }],
    ['empty', { shape: [0, 3], data: new Float32Array(0) }],
  ])
}

/** A file from a header object and a data section, as a malicious writer would build it. */
function rawFile(header: unknown, data: Uint8Array, headerLen?: number): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header))
  const out = new Uint8Array(8 + h.length + data.length)
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen ?? h.length), true)
  out.set(h, 8)
  out.set(data, 8 + h.length)
  return out
}

function expectError(bytes: Uint8Array, pattern: RegExp, tensor?: string): void {
  let err: unknown
  try {
    parseSafetensors(bytes)
  } catch (e) {
    err = e
  }
  expect(err).toBeInstanceOf(SafetensorsError)
  expect((err as Error).message).toMatch(pattern)
  if (tensor !== undefined) expect((err as SafetensorsError).tensor).toBe(tensor)
}

describe('safetensors round trip', () => {
  it('F32 is exact, with metadata and an aligned data section', () => {
    const bytes = serializeSafetensors(tensors(), { metadata: { format: 'pt' } })
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true))
    expect(n % 8).toBe(0)
    const parsed = parseSafetensors(bytes)
    expect(parsed.metadata).toEqual({ format: 'pt' })
    expect(parsed.tensors.get('a')).toEqual({ dtype: 'F32', shape: [2, 4], data: A })
    expect(parsed.tensors.get('b.weight')?.data).toEqual(B)
    expect(parsed.tensors.get('empty')?.shape).toEqual([0, 3])
  })

  it.each([
    ['F16', roundToF16],
    ['BF16', roundToBf16],
  ] as const)('%s rounds to nearest even and decodes back exactly', (dtype, round) => {
    const parsed = parseSafetensors(serializeSafetensors(tensors(), { dtype }))
    const a = parsed.tensors.get('a')
    expect(a?.dtype).toBe(dtype)
    expect([...(a?.data ?? [])]).toEqual([...A].map(round))
    // Re-encoding decoded values is lossless.
    const again = parseSafetensors(serializeSafetensors(new Map([['a', { shape: [2, 4], data: a?.data as Float32Array }]]), { dtype }))
    expect(again.tensors.get('a')?.data).toEqual(a?.data)
  })

  it('reads little-endian F16/BF16/F64 written by hand', () => {
    const data = new Uint8Array(2 + 2 + 8)
    const dv = new DataView(data.buffer)
    dv.setUint16(0, 0x3c00, true) // f16 1.0
    dv.setUint16(2, 0xc040, true) // bf16 -3.0
    dv.setFloat64(4, 0.1, true)
    const bytes = rawFile(
      {
        h: { dtype: 'F16', shape: [1], data_offsets: [0, 2] },
        b: { dtype: 'BF16', shape: [1], data_offsets: [2, 4] },
        d: { dtype: 'F64', shape: [], data_offsets: [4, 12] },
      },
      data,
    )
    const p = parseSafetensors(bytes)
    expect(p.tensors.get('h')?.data[0]).toBe(1)
    expect(p.tensors.get('b')?.data[0]).toBe(-3)
    expect(p.tensors.get('d')?.data[0]).toBe(Math.fround(0.1))
  })

  it('refuses to write data that does not fit its shape', () => {
    expect(() => serializeSafetensors({ x: { shape: [3], data: new Float32Array(2) } })).toThrow(SafetensorsError)
  })
})

describe('safetensors strict reader', () => {
  const f32 = (n: number) => new Uint8Array(4 * n)
  const ok = { t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }

  it('accepts the minimal well-formed file', () => {
    expect(parseSafetensorsHeader(rawFile(ok, f32(2))).tensors.size).toBe(1)
  })

  it('rejects files shorter than the length prefix, or a header running past the end', () => {
    expectError(new Uint8Array(5), /shorter than the 8-byte/)
    expectError(rawFile(ok, f32(2), 10_000), /runs past the end/)
    expectError(rawFile(ok, f32(2), 0), /header length is 0/)
  })

  it('rejects absurd header lengths', () => {
    const b = rawFile(ok, f32(2))
    new DataView(b.buffer).setBigUint64(0, 2n ** 40n, true)
    expectError(b, /exceeds/)
  })

  it('rejects invalid UTF-8 and invalid JSON', () => {
    const b = rawFile(ok, f32(2))
    b[9] = 0xff
    expectError(b, /UTF-8/)
    const h = new TextEncoder().encode('{"t": ')
    const bad = new Uint8Array(8 + h.length)
    new DataView(bad.buffer).setBigUint64(0, BigInt(h.length), true)
    bad.set(h, 8)
    expectError(bad, /not valid JSON/)
    expectError(rawFile([1, 2], new Uint8Array(0)), /JSON object/)
  })

  it('rejects unknown dtypes and bad shapes, naming the tensor', () => {
    expectError(rawFile({ t: { dtype: 'F31', shape: [2], data_offsets: [0, 8] } }, f32(2)), /unknown dtype/, 't')
    expectError(rawFile({ t: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, f32(2)), /shape/, 't')
    expectError(rawFile({ t: { dtype: 'F32', shape: [2], data_offsets: [0, 8], extra: 1 } }, f32(2)), /unknown field/, 't')
    expectError(rawFile({ t: 5 }, f32(2)), /header entry/, 't')
  })

  it('rejects offsets out of range, backwards, or not matching the shape', () => {
    expectError(rawFile({ t: { dtype: 'F32', shape: [2], data_offsets: [0, 12] } }, f32(2)), /run past/, 't')
    expectError(rawFile({ t: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, f32(2)), /begin <= end/, 't')
    expectError(rawFile({ t: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)), /needs 12/, 't')
    expectError(rawFile({ t: { dtype: 'F32', shape: [2], data_offsets: [0] } }, f32(2)), /data_offsets/, 't')
  })

  it('rejects gaps, overlaps and trailing bytes', () => {
    const gap = { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }
    expectError(rawFile(gap, f32(3)), /gap/, 'b')
    const overlap = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }
    expectError(rawFile(overlap, f32(2)), /overlaps/, 'b')
    expectError(rawFile(ok, f32(3)), /trailing/)
  })

  it('rejects malformed metadata and undecodable dtypes', () => {
    expectError(rawFile({ __metadata__: { a: 1 }, ...ok }, f32(2)), /__metadata__/)
    expectError(rawFile({ t: { dtype: 'I32', shape: [2], data_offsets: [0, 8] } }, f32(2)), /cannot be decoded/, 't')
  })
})
