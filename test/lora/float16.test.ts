import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  bf16BitsToF32Bits,
  f16BitsToF32Bits,
  f16ToF32Table,
  f32Bits,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32FromBits,
  roundToBf16,
  roundToF16,
} from '../../src/lora/float16.js'

/** Reference f16 decode straight from the definition: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m. */
function f16Value(h: number): number {
  const s = h & 0x8000 ? -1 : 1
  const e = (h >>> 10) & 0x1f
  const m = h & 0x3ff
  if (e === 0x1f) return m === 0 ? s * Infinity : NaN
  if (e === 0) return s * m * 2 ** -24
  return s * (1024 + m) * 2 ** (e - 25)
}

/** Reference narrowing: nearest of the two f16 neighbours, ties to even, via exhaustive magnitudes. */
const positives: number[] = []
for (let h = 0; h <= 0x7c00; h++) positives.push(f16Value(h)) // 0 .. +Inf, increasing
function refF16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0
  const a = Math.abs(x)
  // 65520 = halfway between max (65504) and the next step 65536: ties-to-even goes to Inf.
  if (a >= 65520) return sign | 0x7c00
  let lo = 0
  let hi = 0x7bff
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (positives[mid] <= a) lo = mid
    else hi = mid - 1
  }
  if (positives[lo] === a) return sign | lo
  const up = lo + 1
  const dl = a - positives[lo]
  const du = positives[up] - a
  if (dl < du) return sign | lo
  if (du < dl) return sign | up
  return sign | ((lo & 1) === 0 ? lo : up)
}

function refBf16(bits: number): number {
  const lo = bits & 0xffff0000
  const x = f32FromBits(bits)
  const a = f32FromBits(lo)
  // Above the largest finite bf16 the next step is 2^128 (rounds to Inf), per IEEE overflow rules.
  const bRaw = f32FromBits((lo + 0x10000) >>> 0)
  const b = bRaw === Infinity ? 2 ** 128 : bRaw === -Infinity ? -(2 ** 128) : bRaw
  const dl = Math.abs(x - a)
  const du = Math.abs(b - x)
  const keep = lo >>> 16
  if (dl < du) return keep
  if (du < dl) return (keep + 1) & 0xffff
  return (keep & 1) === 0 ? keep : (keep + 1) & 0xffff
}

describe('float16 conversions', () => {
  it('widening f16 -> f32 matches the definition for all 65536 patterns, and narrowing is its inverse', () => {
    const table = f16ToF32Table()
    let mismatches = 0
    for (let h = 0; h < 65536; h++) {
      const v = f32FromBits(f16BitsToF32Bits(h))
      const ref = f16Value(h)
      if (Number.isNaN(ref)) {
        if (!Number.isNaN(v) || !Number.isNaN(table[h])) mismatches++
        continue
      }
      if (!Object.is(v, ref) || !Object.is(table[h], ref)) mismatches++
      if (f32BitsToF16Bits(f32Bits(v)) !== h) mismatches++
    }
    expect(mismatches).toBe(0)
  })

  it('narrowing f32 -> f16 rounds to nearest even (edge cases)', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [65504, 0x7bff],
      [65519.99, 0x7bff],
      [65520, 0x7c00], // tie between max and 2^16 -> even -> Inf
      [1e9, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // exact half of it: tie to even -> 0
      [2 ** -25 * 1.0000001, 0x0001],
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 steps -> even (2)
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -25, 0x0400], // tie between largest subnormal (odd) and smallest normal -> 0x400
      [1 + 2 ** -11, 0x3c00], // tie -> even mantissa 0
      [1 + 3 * 2 ** -11, 0x3c02], // tie -> even mantissa 2
    ]
    for (const [x, h] of cases) expect([x, f32BitsToF16Bits(f32Bits(x))]).toEqual([x, h])
    expect(f32BitsToF16Bits(f32Bits(NaN)) & 0x7c00).toBe(0x7c00)
    expect(f32BitsToF16Bits(f32Bits(NaN)) & 0x3ff).not.toBe(0)
  })

  it('narrowing f32 -> f16 agrees with a brute-force nearest-even reference on random f32 patterns', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
        const x = f32FromBits(bits)
        const got = f32BitsToF16Bits(bits)
        const want = refF16(x)
        if (Number.isNaN(x)) return (got & 0x7c00) === 0x7c00 && (got & 0x3ff) !== 0
        return got === want
      }),
      { numRuns: 3000 },
    )
    // Dense around the f16 range, where the interesting rounding happens.
    fc.assert(
      fc.property(fc.float({ min: -70000, max: 70000, noNaN: true }), (x) => f32BitsToF16Bits(f32Bits(x)) === refF16(Math.fround(x))),
      { numRuns: 3000 },
    )
  })

  it('bf16 narrowing rounds to nearest even, widening is exact', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
        const x = f32FromBits(bits)
        const got = f32BitsToBf16Bits(bits)
        if (Number.isNaN(x)) return Number.isNaN(f32FromBits(bf16BitsToF32Bits(got)))
        return got === refBf16(bits)
      }),
      { numRuns: 3000 },
    )
    expect(f32BitsToBf16Bits(f32Bits(1))).toBe(0x3f80)
    expect(f32BitsToBf16Bits(0x3f808000)).toBe(0x3f80) // tie, keep even
    expect(f32BitsToBf16Bits(0x3f818000)).toBe(0x3f82) // tie, round up to even
    expect(f32BitsToBf16Bits(f32Bits(3.4028234663852886e38))).toBe(0x7f80) // overflows to Inf
    for (let h = 0; h < 65536; h += 7) expect(f32BitsToBf16Bits(bf16BitsToF32Bits(h)) === h || Number.isNaN(f32FromBits(bf16BitsToF32Bits(h)))).toBe(true)
  })

  it('roundToF16 / roundToBf16 are idempotent and within half an ulp', () => {
    fc.assert(
      fc.property(fc.float({ min: -60000, max: 60000, noNaN: true }), (x) => {
        const y = roundToF16(x)
        const z = roundToBf16(x)
        const fx = Math.fround(x)
        // |x - y| <= 2^-11 |x| for normals, <= 2^-25 absolute in the subnormal range.
        const okF16 = Math.abs(fx - y) <= Math.max(Math.abs(fx) * 2 ** -11, 2 ** -25)
        const okBf16 = Math.abs(fx - z) <= Math.max(Math.abs(fx) * 2 ** -8, 2 ** -134)
        return roundToF16(y) === y && roundToBf16(z) === z && okF16 && okBf16
      }),
      { numRuns: 2000 },
    )
  })
})
