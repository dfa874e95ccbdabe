/**
 * Seeded PRNG that yields the same stream on every machine and JS engine.
 *
 * Why this design:
 * - Seeds (number, bigint or string) are first hashed with SHA-256 into a 32-byte key, so
 *   any seed gives a well-mixed state and `fork(label)` can derive independent child
 *   streams as sha256(key || label). A child depends only on (parent key, label), never on
 *   how much of the parent stream was consumed, so per-module streams do not depend on the
 *   order in which modules are visited.
 * - The generator is xoshiro128** on four uint32 words (first 16 bytes of the key, little
 *   endian): only 32-bit integer ops (Math.imul, shifts), hence bit-exact everywhere.
 * - nextFloat / uniform / int / shuffle use only exact integer ops and IEEE-754 +, *, which
 *   are correctly rounded, so they are reproducible across engines too. normal() needs
 *   Math.log / Math.cos, which ECMAScript does not require to be correctly rounded: V8 uses
 *   the same fdlibm port on every platform, but another engine may differ in the last ulp.
 *   Use uniform-based sampling where bit-exactness across engines matters (adapter init
 *   does).
 */
// @noble/hashes, not node:crypto: the model layer also runs in a browser tab (same digests).
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'

export type SeedLike = number | bigint | string

export interface Prng {
  /** Hex of the 32-byte key this stream was built from (for logs and provenance). */
  readonly key: string
  /** Uniform integer in [0, 2^32). */
  nextUint32(): number
  /** Uniform double in [0, 1) with 53 random bits. */
  nextFloat(): number
  /** Uniform float in [0, 1) with 24 random bits (exactly representable in float32). */
  nextFloat24(): number
  /** lo + (hi - lo) * nextFloat(): uniform in [lo, hi) up to the rounding of that expression. */
  uniform(lo: number, hi: number): number
  /** Gaussian sample (Box-Muller); consumes exactly two nextFloat() draws per call. */
  normal(mean?: number, std?: number): number
  /** Unbiased integer in [0, n), 1 <= n <= 2^32 (rejection sampling). */
  int(n: number): number
  /** In-place Fisher-Yates shuffle; returns the same array. */
  shuffle<T>(items: T[]): T[]
  /** Fills `out` with uniform(lo, hi) draws in index order; returns `out`. */
  fillUniform<A extends Float32Array | Float64Array>(out: A, lo: number, hi: number): A
  /** Fills `out` with Gaussian draws, both Box-Muller outputs used (pairs in index order). */
  fillNormal<A extends Float32Array | Float64Array>(out: A, mean?: number, std?: number): A
  /** Independent child stream derived from (this stream's key, label), not from its position. */
  fork(label: string): Prng
  /** Copy with the same key and the same current position. */
  clone(): Prng
}

const DOMAIN = 'flora.prng.v1'
const TWO_POW_32 = 4294967296
const TWO_POW_53 = 9007199254740992

/**
 * Canonical 32-byte key for a seed. Numbers must be safe integers and map to the same key
 * as the equal bigint (5 and 5n give one stream); strings are a separate namespace ('5'
 * differs from 5).
 */
export function seedKey(seed: SeedLike): Uint8Array {
  let material: string
  if (typeof seed === 'number') {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`PRNG seed must be a safe integer, got ${seed}`)
    material = `i:${BigInt(seed).toString(10)}`
  } else if (typeof seed === 'bigint') {
    material = `i:${seed.toString(10)}`
  } else if (typeof seed === 'string') {
    material = `s:${seed}`
  } else {
    throw new TypeError('PRNG seed must be a number, bigint or string')
  }
  return sha256(utf8(`${DOMAIN}\0${material}`))
}

/**
 * Key of the child stream `label` of a parent key: sha256(parentKey || "fork\0" || utf8(label)).
 * The parent key has a fixed length, so (parent, label) pairs cannot collide by concatenation.
 */
export function deriveKey(parentKey: Uint8Array, label: string): Uint8Array {
  if (parentKey.length !== 32) throw new RangeError('PRNG key must be 32 bytes')
  const suffix = utf8(`fork\0${label}`)
  const data = new Uint8Array(parentKey.length + suffix.length)
  data.set(parentKey)
  data.set(suffix, parentKey.length)
  return sha256(data)
}

/** Stream for a seed; `createPrng(seed).fork(a).fork(b)` is the usual way to get sub-streams. */
export function createPrng(seed: SeedLike): Prng {
  return new Xoshiro128ss(seedKey(seed))
}

/** Stream for a raw 32-byte key (e.g. one produced by deriveKey). */
export function prngFromKey(key: Uint8Array): Prng {
  if (key.length !== 32) throw new RangeError('PRNG key must be 32 bytes')
  return new Xoshiro128ss(Uint8Array.from(key))
}

const encoder = new TextEncoder()
const utf8 = (s: string): Uint8Array => encoder.encode(s)

function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data)
}

function readU32LE(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0
}

class Xoshiro128ss implements Prng {
  readonly key: string
  private readonly keyBytes: Uint8Array
  private s0: number
  private s1: number
  private s2: number
  private s3: number

  constructor(keyBytes: Uint8Array) {
    this.keyBytes = keyBytes
    this.key = Array.from(keyBytes, (b) => b.toString(16).padStart(2, '0')).join('')
    this.s0 = readU32LE(keyBytes, 0)
    this.s1 = readU32LE(keyBytes, 4)
    this.s2 = readU32LE(keyBytes, 8)
    this.s3 = readU32LE(keyBytes, 12)
    // The all-zero state is a fixed point of xoshiro; take the key's second half instead
    // (a SHA-256 output with 256 zero bits is not going to happen, but stay total).
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) {
      this.s0 = readU32LE(keyBytes, 16) | 1
    }
  }

  nextUint32(): number {
    // xoshiro128** (Blackman & Vigna): result = rotl(s1 * 5, 7) * 9, then the xor-shift step.
    const s1 = this.s1
    const x = Math.imul(s1, 5)
    const result = Math.imul((x << 7) | (x >>> 25), 9) >>> 0
    const t = s1 << 9
    this.s2 ^= this.s0
    this.s3 ^= this.s1
    this.s1 ^= this.s2
    this.s0 ^= this.s3
    this.s2 ^= t
    this.s3 = (this.s3 << 11) | (this.s3 >>> 21)
    return result
  }

  nextFloat(): number {
    // u = (hi27 * 2^26 + lo26) / 2^53, the top bits of two draws: 53 random bits, exact.
    const hi = this.nextUint32() >>> 5
    const lo = this.nextUint32() >>> 6
    return (hi * 67108864 + lo) / TWO_POW_53
  }

  nextFloat24(): number {
    return (this.nextUint32() >>> 8) / 16777216
  }

  uniform(lo: number, hi: number): number {
    if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(hi >= lo)) {
      throw new RangeError(`uniform(lo, hi) needs finite lo <= hi, got (${lo}, ${hi})`)
    }
    return lo + (hi - lo) * this.nextFloat()
  }

  normal(mean = 0, std = 1): number {
    // Box-Muller: z = sqrt(-2 ln u1) * cos(2 pi u2), u1 in (0, 1] so the log is finite.
    const u1 = 1 - this.nextFloat()
    const u2 = this.nextFloat()
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2)
  }

  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new RangeError(`int(n) needs an integer 1 <= n <= 2^32, got ${n}`)
    }
    // Reject draws in the last partial block so every residue is equally likely.
    const limit = TWO_POW_32 - (TWO_POW_32 % n)
    for (;;) {
      const x = this.nextUint32()
      if (x < limit) return x % n
    }
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const tmp = items[i]
      items[i] = items[j]
      items[j] = tmp
    }
    return items
  }

  fillUniform<A extends Float32Array | Float64Array>(out: A, lo: number, hi: number): A {
    if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(hi >= lo)) {
      throw new RangeError(`fillUniform(lo, hi) needs finite lo <= hi, got (${lo}, ${hi})`)
    }
    const span = hi - lo
    for (let i = 0; i < out.length; i++) out[i] = lo + span * this.nextFloat()
    return out
  }

  fillNormal<A extends Float32Array | Float64Array>(out: A, mean = 0, std = 1): A {
    // Box-Muller pair: r = sqrt(-2 ln u1); z0 = r cos(2 pi u2), z1 = r sin(2 pi u2).
    for (let i = 0; i < out.length; i += 2) {
      const u1 = 1 - this.nextFloat()
      const u2 = this.nextFloat()
      const r = Math.sqrt(-2 * Math.log(u1))
      const theta = 2 * Math.PI * u2
      out[i] = mean + std * r * Math.cos(theta)
      if (i + 1 < out.length) out[i + 1] = mean + std * r * Math.sin(theta)
    }
    return out
  }

  fork(label: string): Prng {
    if (typeof label !== 'string') throw new TypeError('fork(label) needs a string label')
    return new Xoshiro128ss(deriveKey(this.keyBytes, label))
  }

  clone(): Prng {
    const c = new Xoshiro128ss(this.keyBytes)
    c.s0 = this.s0
    c.s1 = this.s1
    c.s2 = this.s2
    c.s3 = this.s3
    return c
  }
}
