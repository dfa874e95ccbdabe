import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { StateHashInputError } from '../../src/aggregation/errors.js'
import { STATE_HASH_MAGIC, type NamedTensor, stateHash, stateHashStreamed } from '../../src/aggregation/state-hash.js'
import { randF32, rng, shuffled } from './helpers.js'

function tensors(seed: number, n: number): NamedTensor[] {
  const next = rng(seed)
  return Array.from({ length: n }, (_, i) => {
    const shape = [1 + Math.floor(next() * 5), 1 + Math.floor(next() * 7)]
    return { name: `layers.${i}.self_attn.q_proj.weight`, shape, data: randF32(next, shape[0] * shape[1]) }
  })
}

describe('stateHash', () => {
  it('follows the documented layout (magic, count, name, ndim, dims, little-endian f32)', () => {
    const t: NamedTensor = { name: 'w', shape: [2], data: Float32Array.of(1, -2) }
    const u32 = (n: number): Buffer => {
      const b = Buffer.alloc(4)
      b.writeUInt32LE(n)
      return b
    }
    const f = Buffer.alloc(8)
    f.writeFloatLE(1, 0)
    f.writeFloatLE(-2, 4)
    const bytes = Buffer.concat([Buffer.from(STATE_HASH_MAGIC), u32(1), u32(1), Buffer.from('w'), u32(1), u32(2), f])
    expect(stateHash([t])).toBe(createHash('sha256').update(bytes).digest('hex'))
  })

  it('is deterministic and independent of input order', () => {
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 1, max: 6 }), fc.integer(), (seed, n, s2) => {
        const ts = tensors(seed, n)
        const copy = ts.map((t) => ({ ...t, data: t.data.slice() }))
        return stateHash(ts) === stateHash(shuffled(copy, rng(s2)))
      }),
      { numRuns: 50 },
    )
  })

  it('changes with any single bit flip, a renamed tensor, or a reshape', () => {
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 1, max: 4 }), fc.nat(), fc.nat(31), (seed, n, which, bit) => {
        const ts = tensors(seed, n)
        const h = stateHash(ts)
        const k = which % n
        const data = ts[k].data.slice()
        const words = new Uint32Array(data.buffer)
        words[which % data.length] ^= 1 << bit
        const flipped = ts.map((t, i) => (i === k ? { ...t, data } : t))
        const renamed = ts.map((t, i) => (i === k ? { ...t, name: `${t.name}x` } : t))
        const reshaped = ts.map((t, i) => (i === k ? { ...t, shape: [t.data.length] } : t))
        return stateHash(flipped) !== h && stateHash(renamed) !== h && stateHash(reshaped) !== h
      }),
      { numRuns: 50 },
    )
  })

  it('distinguishes -0 from +0 and sorts names by UTF-8 bytes', () => {
    const a = stateHash([{ name: 'w', shape: [1], data: Float32Array.of(0) }])
    const b = stateHash([{ name: 'w', shape: [1], data: Float32Array.of(-0) }])
    expect(a).not.toBe(b)
    const x = { name: 'é', shape: [1], data: Float32Array.of(1) }
    const y = { name: 'z', shape: [1], data: Float32Array.of(2) }
    expect(stateHash([x, y])).toBe(stateHash([y, x]))
  })

  it('refuses duplicate names and shape/data disagreement with StateHashInputError', () => {
    const t = { name: 'w', shape: [2], data: new Float32Array(2) }
    expect(() => stateHash([t, { ...t }])).toThrow(StateHashInputError)
    expect(() => stateHash([{ ...t, shape: [3] }])).toThrow(StateHashInputError)
    expect(() => stateHash([{ ...t, shape: [2.5] }])).toThrow(StateHashInputError)
  })
})

describe('stateHashStreamed', () => {
  it('equals stateHash and reads each tensor once, in hash order, one at a time', () => {
    const ts = shuffled(tensors(7, 9), rng(3))
    const reads: string[] = []
    const streamed = stateHashStreamed(
      ts.map((t) => ({
        name: t.name,
        shape: t.shape,
        data: () => {
          reads.push(t.name)
          return t.data
        },
      })),
    )
    expect(streamed).toBe(stateHash(ts))
    expect(reads).toEqual(ts.map((t) => t.name).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))))
  })

  it('refuses a tensor whose data does not fit its shape, when it is read', () => {
    expect(() => stateHashStreamed([{ name: 'w', shape: [2, 2], data: () => new Float32Array(3) }])).toThrow(StateHashInputError)
  })
})
