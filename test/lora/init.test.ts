import { describe, expect, it } from 'vitest'
import { LoraConfigError } from '../../src/lora/errors.js'
import { adapterParamCount, cloneAdapter, findModule, initAdapter, sortAdapter } from '../../src/lora/init.js'
import { isValidAlpha, isValidRank, loraScaling, scalingKind } from '../../src/lora/scaling.js'
import type { ModuleShape } from '../../src/lora/types.js'
import { validateAdapter, validateAdapterAgainstShapes } from '../../src/lora/validate.js'
import { adapterDigest, encodeAdapter } from '../../src/lora/wire.js'
import { randomAdapter, sameBits, smallShapes } from './helpers.js'

describe('loraScaling', () => {
  it('is alpha/r, or alpha/sqrt(r) with rsLoRA', () => {
    expect(loraScaling(32, 16)).toBe(2)
    expect(loraScaling(16, 16, { rslora: true })).toBe(4)
    expect(loraScaling(8, 3)).toBe(8 / 3)
    expect(loraScaling(8, 3, { rslora: true })).toBe(8 / Math.sqrt(3))
    expect(loraScaling(1, 1, { rslora: true })).toBe(loraScaling(1, 1))
  })

  it('rejects bad alpha and rank with a named error', () => {
    for (const [alpha, rank] of [[0, 4], [-1, 4], [NaN, 4], [Infinity, 4], [8, 0], [8, -2], [8, 2.5], [8, NaN], [8, 2 ** 32]]) {
      let err: unknown
      try {
        loraScaling(alpha, rank)
      } catch (e) {
        err = e
      }
      expect(err).toBeInstanceOf(LoraConfigError)
      expect((err as LoraConfigError).name).toBe('LoraConfigError')
      expect(['alpha', 'rank']).toContain((err as LoraConfigError).field)
    }
    expect(isValidRank(1)).toBe(true)
    expect(isValidAlpha(0)).toBe(false)
  })

  it('scalingKind recognises both conventions exactly and nothing else', () => {
    expect(scalingKind(16, 4, 4)).toBe('standard')
    expect(scalingKind(16, 4, 8)).toBe('rslora')
    expect(scalingKind(16, 4, 4.000000000000001)).toBeUndefined()
    expect(scalingKind(16, 1, 16)).toBe('standard')
    expect(scalingKind(16, 0, 16)).toBeUndefined()
  })
})

describe('initAdapter', () => {
  const shapes = smallShapes(3, 16, 8)

  it('gives B = 0 and A within the kaiming-uniform bound 1/sqrt(in), modules sorted', () => {
    const a = initAdapter({ shapes, rank: 4, alpha: 8, seed: 1 })
    expect(a.modules.map((m) => m.name)).toEqual([...shapes.map((s) => s.name)].sort())
    validateAdapterAgainstShapes(a, shapes, { requireAllModules: true })
    for (const m of a.modules) {
      expect(m.rank).toBe(4)
      expect(m.scaling).toBe(2)
      expect(m.loraA.length).toBe(4 * m.inFeatures)
      expect(m.loraB.length).toBe(m.outFeatures * 4)
      expect(m.loraB.every((x) => Object.is(x, 0))).toBe(true)
      const bound = Math.fround(1 / Math.sqrt(m.inFeatures))
      expect(m.loraA.every((x) => Math.abs(x) <= bound)).toBe(true)
      // Not degenerate: spread over the interval.
      const max = Math.max(...m.loraA)
      const min = Math.min(...m.loraA)
      expect(max).toBeGreaterThan(bound / 2)
      expect(min).toBeLessThan(-bound / 2)
    }
  })

  it('A has the variance of U(-b, b), b^2/3', () => {
    const big: ModuleShape[] = [{ name: 'w', inFeatures: 256, outFeatures: 4 }]
    const a = initAdapter({ shapes: big, rank: 64, alpha: 64, seed: 'var' }).modules[0].loraA
    const b = 1 / 16
    const mean = a.reduce((s, x) => s + x, 0) / a.length
    const v = a.reduce((s, x) => s + (x - mean) ** 2, 0) / a.length
    expect(Math.abs(mean)).toBeLessThan(0.003)
    expect(Math.abs(v - (b * b) / 3) / ((b * b) / 3)).toBeLessThan(0.05)
  })

  it('is bit-identical for the same (seed, shapes, rank), and pinned by a golden digest', () => {
    const x = initAdapter({ shapes, rank: 4, alpha: 8, seed: 99 })
    const y = initAdapter({ shapes, rank: 4, alpha: 8, seed: 99 })
    for (let i = 0; i < x.modules.length; i++) expect(sameBits(x.modules[i].loraA, y.modules[i].loraA)).toBe(true)
    const g = initAdapter({
      shapes: [
        { name: 'l.0.q_proj', inFeatures: 8, outFeatures: 4 },
        { name: 'l.0.v_proj', inFeatures: 8, outFeatures: 6 },
      ],
      rank: 2,
      alpha: 4,
      seed: 7,
    })
    expect(Array.from(g.modules[0].loraA.slice(0, 4))).toEqual([0.18792876601219177, -0.04450736194849014, -0.12781476974487305, -0.046482715755701065])
    expect(adapterDigest(encodeAdapter(g))).toBe('dec4e7dc1f73031427ff5e3eb0b313aa16b2a7997aad20e2f63dbf07526713ed')
  })

  it('does not depend on the order of shapes or on which other modules exist', () => {
    const fwd = initAdapter({ shapes, rank: 4, alpha: 8, seed: 5 })
    const rev = initAdapter({ shapes: [...shapes].reverse(), rank: 4, alpha: 8, seed: 5 })
    expect(adapterDigest(encodeAdapter(fwd))).toBe(adapterDigest(encodeAdapter(rev)))
    const one = initAdapter({ shapes: [shapes[3]], rank: 4, alpha: 8, seed: 5 })
    expect(sameBits(one.modules[0].loraA, findModule(fwd, shapes[3].name)!.loraA)).toBe(true)
  })

  it('differs across seeds and modules', () => {
    const a = initAdapter({ shapes, rank: 4, alpha: 8, seed: 5 })
    const b = initAdapter({ shapes, rank: 4, alpha: 8, seed: 6 })
    expect(sameBits(a.modules[0].loraA, b.modules[0].loraA)).toBe(false)
    // Two modules with the same shape still draw different A.
    const q0 = findModule(a, 'layers.0.self_attn.q_proj')!
    const q1 = findModule(a, 'layers.1.self_attn.q_proj')!
    expect(sameBits(q0.loraA, q1.loraA)).toBe(false)
  })

  it('selects modules by PEFT-style targets and rejects targets that match nothing', () => {
    const a = initAdapter({ shapes, rank: 2, alpha: 4, seed: 1, targets: ['q_proj'] })
    expect(a.modules.map((m) => m.name)).toEqual(['layers.0.self_attn.q_proj', 'layers.1.self_attn.q_proj', 'layers.2.self_attn.q_proj'])
    // Selected modules get the same A as in the untargeted init: streams are per name.
    const all = initAdapter({ shapes, rank: 2, alpha: 4, seed: 1 })
    expect(sameBits(a.modules[1].loraA, findModule(all, a.modules[1].name)!.loraA)).toBe(true)
    expect(() => initAdapter({ shapes, rank: 2, alpha: 4, seed: 1, targets: ['k_proj'] })).toThrow(LoraConfigError)
    expect(() => initAdapter({ shapes, rank: 2, alpha: 4, seed: 1, targets: [] })).toThrow(LoraConfigError)
    // 'proj' must not match 'q_proj' (suffix match is on whole dotted components).
    expect(() => initAdapter({ shapes, rank: 2, alpha: 4, seed: 1, targets: ['proj'] })).toThrow(LoraConfigError)
  })

  it('uses rsLoRA scaling on request', () => {
    const a = initAdapter({ shapes, rank: 16, alpha: 16, seed: 1, rslora: true })
    expect(a.modules[0].scaling).toBe(4)
  })

  it('rejects bad config with LoraConfigError', () => {
    const bad: Array<() => unknown> = [
      () => initAdapter({ shapes, rank: 0, alpha: 8, seed: 1 }),
      () => initAdapter({ shapes, rank: 4, alpha: -1, seed: 1 }),
      () => initAdapter({ shapes: [], rank: 4, alpha: 8, seed: 1 }),
      () => initAdapter({ shapes: [shapes[0], shapes[0]], rank: 4, alpha: 8, seed: 1 }),
      () => initAdapter({ shapes: [{ name: 'has space', inFeatures: 2, outFeatures: 2 }], rank: 1, alpha: 1, seed: 1 }),
      () => initAdapter({ shapes: [{ name: 'x', inFeatures: 0, outFeatures: 2 }], rank: 1, alpha: 1, seed: 1 }),
      () => initAdapter({ shapes: [{ name: 'x', inFeatures: 2 ** 31, outFeatures: 2 }], rank: 4, alpha: 1, seed: 1 }),
    ]
    for (const f of bad) expect(f).toThrow(LoraConfigError)
  })
})

describe('adapter helpers', () => {
  it('adapterParamCount is sum r (in + out)', () => {
    const a = initAdapter({ shapes: smallShapes(2, 8, 4), rank: 3, alpha: 6, seed: 1 })
    expect(adapterParamCount(a)).toBe(2 * 3 * (8 + 8) + 2 * 3 * (8 + 4))
  })

  it('cloneAdapter copies deeply; sortAdapter orders canonically', () => {
    const a = randomAdapter(1)
    const c = cloneAdapter(a)
    c.modules[0].loraA[0] = 123
    expect(a.modules[0].loraA[0]).not.toBe(123)
    const shuffled = { modules: [...a.modules].reverse() }
    const s = sortAdapter(shuffled)
    expect(s.modules.map((m) => m.name)).toEqual([...a.modules.map((m) => m.name)].sort())
    expect(() => validateAdapter(shuffled, { requireSorted: true })).toThrow(expect.objectContaining({ name: 'InvalidAdapterError', code: 'UNSORTED' }))
    validateAdapter(s, { requireSorted: true })
  })

  it('validateAdapterAgainstShapes reports unknown, mismatched and missing modules', () => {
    const shapes = smallShapes(2, 8, 4)
    const a = randomAdapter(2, { shapes })
    expect(() => validateAdapterAgainstShapes(a, shapes.slice(1))).toThrow(expect.objectContaining({ code: 'UNKNOWN_MODULE' }))
    const other = shapes.map((s, i) => (i === 1 ? { ...s, outFeatures: 5 } : s))
    expect(() => validateAdapterAgainstShapes(a, other)).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH', module: shapes[1].name }))
    const partial = { modules: a.modules.slice(1) }
    validateAdapterAgainstShapes(partial, shapes)
    expect(() => validateAdapterAgainstShapes(partial, shapes, { requireAllModules: true })).toThrow(expect.objectContaining({ code: 'MISSING_MODULE' }))
  })
})
