/**
 * float32 <-> IEEE binary16 (f16) and bfloat16 (bf16) conversions, written by hand on the
 * bit patterns so they are exact and identical everywhere (no Float16Array dependency).
 * Narrowing rounds to nearest, ties to even; values beyond the target range become +-Inf,
 * NaN stays NaN (quiet). Widening is exact.
 */

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** Bit pattern of Math.fround(x) as an unsigned 32-bit integer. */
export function f32Bits(x: number): number {
  f32[0] = x
  return u32[0]
}

/** float32 value of a 32-bit pattern. */
export function f32FromBits(bits: number): number {
  u32[0] = bits >>> 0
  return f32[0]
}

/** Narrow a float32 bit pattern to f16 bits, round to nearest even. */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000
  const exp = (bits >>> 23) & 0xff
  const mant = bits & 0x7fffff
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 : sign | 0x7c00
  // f16 biased exponent: e16 = (exp - 127) + 15.
  const e = exp - 112
  if (e >= 31) return sign | 0x7c00
  if (e <= 0) {
    // f16 subnormal (or zero). In units of the f16 subnormal step 2^-24 the value is
    // m * 2^(e - 14) with m the 24-bit significand, so shift right by 14 - e. Below
    // e = -10 the value is < 2^-25, i.e. under half a step: rounds to zero.
    if (e < -10) return sign
    const m = mant | 0x800000
    const shift = 14 - e
    const half = 1 << (shift - 1)
    const rem = m & ((1 << shift) - 1)
    let r = m >>> shift
    if (rem > half || (rem === half && (r & 1) === 1)) r++
    // r may reach 0x400, which is exactly the encoding of the smallest normal.
    return sign | r
  }
  let r = (e << 10) | (mant >>> 13)
  const rem = mant & 0x1fff
  // Round to nearest even on the 13 dropped bits; a carry may step into the exponent,
  // up to 0x7c00 (= Inf), which is the correctly rounded result.
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++
  return sign | r
}

/** f16 bits -> float32 bit pattern (exact). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16
  const exp = (h >>> 10) & 0x1f
  let mant = h & 0x3ff
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0
  if (exp === 0) {
    if (mant === 0) return sign >>> 0
    // Subnormal: normalise. value = mant * 2^-24 = 1.f * 2^(e - 15) after shifting.
    let e = 1
    while ((mant & 0x400) === 0) {
      mant <<= 1
      e--
    }
    mant &= 0x3ff
    return (sign | ((e + 112) << 23) | (mant << 13)) >>> 0
  }
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0
}

/** Narrow a float32 bit pattern to bf16 bits (upper half), round to nearest even. */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) {
    return ((bits >>> 16) | 0x40) & 0xffff // quiet NaN, keep sign
  }
  // Adding 0x7fff plus the lowest kept bit rounds ties to even; overflow carries into Inf.
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
}

/** bf16 bits -> float32 bit pattern (exact). */
export function bf16BitsToF32Bits(h: number): number {
  return ((h & 0xffff) << 16) >>> 0
}

/** Math.fround(x) rounded to the nearest f16 value, returned as a number. */
export function roundToF16(x: number): number {
  return f32FromBits(f16BitsToF32Bits(f32BitsToF16Bits(f32Bits(x))))
}

/** Math.fround(x) rounded to the nearest bf16 value, returned as a number. */
export function roundToBf16(x: number): number {
  return f32FromBits(bf16BitsToF32Bits(f32BitsToBf16Bits(f32Bits(x))))
}

let f16Table: Float32Array | undefined

/** All 65536 f16 values as float32, built once on first use (256 KiB) for fast decoding. */
export function f16ToF32Table(): Float32Array {
  if (f16Table === undefined) {
    const bitsOut = new Uint32Array(65536)
    for (let h = 0; h < 65536; h++) bitsOut[h] = f16BitsToF32Bits(h)
    f16Table = new Float32Array(bitsOut.buffer)
  }
  return f16Table
}
