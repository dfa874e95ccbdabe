import { describe, expect, it } from 'vitest'
import { createPrng, deriveKey, prngFromKey, seedKey } from '../../src/lora/prng.js'

describe('prng: determinism and golden values', () => {
  it('implements xoshiro128** exactly (reference vector for state {1,2,3,4})', () => {
    // State words are read little-endian from the key's first 16 bytes.
    const key = new Uint8Array(32)
    key.set([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0])
    const p = prngFromKey(key)
    const got = Array.from({ length: 10 }, () => p.nextUint32())
    expect(got).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804])
  })

  it('pins the key and first outputs for seed 42 (cross-machine golden values)', () => {
    const p = createPrng(42)
    expect(p.key).toBe('cdbed25adaa6ddf1d1bc86b46b864ea128241642b231b4e8cdce5d965edf638e')
    expect([p.nextUint32(), p.nextUint32(), p.nextUint32(), p.nextUint32(), p.nextUint32()]).toEqual([
      4213845052, 2566613438, 1792841778, 837930560, 2875515748,
    ])
  })

  it('pins string seeds, floats and forks', () => {
    const q = createPrng('flora')
    expect(q.key).toBe('519d85fb3e6d6de91ad3dc9a8d8d0ab015942f255ff36317a6c5abb0fdfde9d1')
    expect(q.nextUint32()).toBe(505017727)
    expect(q.nextFloat()).toBe(0.5824858770376239)
    expect(q.fork('a').nextUint32()).toBe(931209269)
  })

  it('maps equal number and bigint seeds to one stream, strings to another', () => {
    expect(createPrng(42n).key).toBe(createPrng(42).key)
    expect(createPrng('42').key).not.toBe(createPrng(42).key)
    expect(createPrng(-1).key).toBe(createPrng(-1n).key)
    expect(createPrng(2n ** 80n).key).not.toBe(createPrng(0).key)
    expect(() => createPrng(1.5)).toThrow(RangeError)
    expect(() => createPrng(Number.MAX_SAFE_INTEGER + 1)).toThrow(RangeError)
  })

  it('same seed gives the same stream; clone continues from the same position', () => {
    const a = createPrng('s')
    const b = createPrng('s')
    for (let i = 0; i < 100; i++) expect(a.nextUint32()).toBe(b.nextUint32())
    a.nextFloat()
    const c = a.clone()
    expect(Array.from({ length: 5 }, () => c.nextUint32())).toEqual(Array.from({ length: 5 }, () => a.nextUint32()))
  })

  it('fork depends on (key, label) only, not on the parent position', () => {
    const a = createPrng(1)
    const before = a.fork('m').nextUint32()
    for (let i = 0; i < 17; i++) a.nextUint32()
    expect(a.fork('m').nextUint32()).toBe(before)
    expect(a.fork('m').key).toBe(Buffer.from(deriveKey(seedKey(1), 'm')).toString('hex'))
    expect(a.fork('n').key).not.toBe(a.fork('m').key)
    expect(a.fork('m').fork('x').key).not.toBe(a.fork('mx').key)
  })
})

describe('prng: ranges and distribution sanity', () => {
  const N = 20000

  it('nextFloat and nextFloat24 lie in [0,1) with mean ~1/2, variance ~1/12', () => {
    const p = createPrng(3)
    let s = 0
    let s2 = 0
    let bad = 0
    for (let i = 0; i < N; i++) {
      const u = p.nextFloat()
      if (!(u >= 0 && u < 1)) bad++
      s += u
      s2 += u * u
      const v = p.nextFloat24()
      if (!(v >= 0 && v < 1 && Math.fround(v) === v)) bad++
    }
    expect(bad).toBe(0)
    const mean = s / N
    // std error of the mean = sqrt(1/12 / N) ~ 0.002: 5 sigma bounds.
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.011)
    expect(Math.abs(s2 / N - mean * mean - 1 / 12)).toBeLessThan(0.005)
  })

  it('uniform(lo, hi) stays in range and rejects bad bounds', () => {
    const p = createPrng(4)
    for (let i = 0; i < 1000; i++) {
      const x = p.uniform(-0.25, 0.75)
      expect(x >= -0.25 && x <= 0.75).toBe(true)
    }
    expect(p.uniform(2, 2)).toBe(2)
    expect(() => p.uniform(1, 0)).toThrow(RangeError)
    expect(() => p.uniform(0, Infinity)).toThrow(RangeError)
  })

  it('normal() and fillNormal have mean ~0, variance ~1', () => {
    const p = createPrng(5)
    let s = 0
    let s2 = 0
    for (let i = 0; i < N; i++) {
      const z = p.normal()
      s += z
      s2 += z * z
    }
    expect(Math.abs(s / N)).toBeLessThan(0.04)
    expect(Math.abs(s2 / N - 1)).toBeLessThan(0.06)
    const arr = p.fillNormal(new Float64Array(N + 1), 3, 2)
    const m = arr.reduce((a, b) => a + b, 0) / arr.length
    const v = arr.reduce((a, b) => a + (b - m) ** 2, 0) / arr.length
    expect(Math.abs(m - 3)).toBeLessThan(0.08)
    expect(Math.abs(v - 4)).toBeLessThan(0.25)
    expect(arr.every(Number.isFinite)).toBe(true)
  })

  it('int(n) is unbiased over small n and validates n', () => {
    const p = createPrng(6)
    const counts = new Array<number>(7).fill(0)
    for (let i = 0; i < 7000; i++) counts[p.int(7)]++
    // chi-square with 6 dof: 99.9% quantile is 22.5.
    const chi = counts.reduce((a, c) => a + (c - 1000) ** 2 / 1000, 0)
    expect(chi).toBeLessThan(22.5)
    expect(p.int(1)).toBe(0)
    expect(p.int(2 ** 32)).toBeLessThan(2 ** 32)
    expect(() => p.int(0)).toThrow(RangeError)
    expect(() => p.int(2.5)).toThrow(RangeError)
    expect(() => p.int(2 ** 32 + 1)).toThrow(RangeError)
  })

  it('shuffle is a deterministic permutation', () => {
    const xs = Array.from({ length: 50 }, (_, i) => i)
    const a = createPrng(7).shuffle([...xs])
    const b = createPrng(7).shuffle([...xs])
    expect(a).toEqual(b)
    expect([...a].sort((x, y) => x - y)).toEqual(xs)
    expect(a).not.toEqual(xs)
  })

  it('fillUniform into Float32Array matches element-wise uniform() then float32 rounding', () => {
    const a = createPrng(8).fillUniform(new Float32Array(100), -1, 1)
    const p = createPrng(8)
    for (let i = 0; i < 100; i++) expect(a[i]).toBe(Math.fround(-1 + 2 * p.nextFloat()))
  })

  it('uint32 bits are balanced', () => {
    const p = createPrng(9)
    const ones = new Array<number>(32).fill(0)
    for (let i = 0; i < 4000; i++) {
      const x = p.nextUint32()
      for (let b = 0; b < 32; b++) ones[b] += (x >>> b) & 1
    }
    // Binomial(4000, 1/2): sd ~ 31.6; allow 5 sd.
    for (const c of ones) expect(Math.abs(c - 2000)).toBeLessThan(160)
  })
})
