import { describe, expect, it } from 'vitest'
import { createPrng } from '../../../src/lora/prng.js'
import {
  assertExactCover,
  logGamma,
  type Partition,
  partitionByCategory,
  partitionDirichlet,
  partitionExamples,
  partitionIid,
  partitionStats,
  sampleDirichlet,
} from '../../../src/model/data/partition.js'
import { PartitionError } from '../../../src/model/data/types.js'
import { loadWordNet, splitWordNet } from '../../../src/model/data/wordnet.js'

/** 3000 examples over 12 categories of very different sizes, interleaved. */
function syntheticCategories(): string[] {
  const sizes = [900, 600, 400, 300, 200, 150, 120, 100, 80, 70, 50, 30]
  const out: string[] = []
  const left = [...sizes]
  while (out.length < 3000) {
    for (let c = 0; c < left.length; c++) {
      if (left[c] > 0) {
        out.push(`cat${c}`)
        left[c]--
      }
    }
  }
  return out
}

const cats = syntheticCategories()
const meanTopShare = (p: Partition, c: readonly string[]): number => {
  const stats = partitionStats(p, c)
  return stats.reduce((a, s) => a + s.topShare, 0) / stats.length
}
/** Mean over clients of the share of their two largest categories. */
const meanTop2Share = (p: Partition, c: readonly string[]): number => {
  const stats = partitionStats(p, c)
  return stats.reduce((a, s) => a + s.categories.slice(0, 2).reduce((x, [, n]) => x + n, 0) / s.size, 0) / stats.length
}

describe('partitioners', () => {
  const k = 10
  const all: Array<[string, (seed: number) => Partition]> = [
    ['iid', (seed) => partitionIid(cats.length, k, seed)],
    ['category', (seed) => partitionByCategory(cats, k, { seed })],
    ['dirichlet(0.3)', (seed) => partitionDirichlet(cats, k, { seed, alpha: 0.3 })],
    ['dirichlet(100)', (seed) => partitionDirichlet(cats, k, { seed, alpha: 100 })],
  ]

  for (const [name, run] of all) {
    it(`${name}: every example exactly once, deterministic per seed`, () => {
      const p = run(7)
      expect(p).toHaveLength(k)
      assertExactCover(p, cats.length)
      for (const part of p) expect(part).toEqual([...part].sort((a, b) => a - b))
      expect(run(7)).toEqual(p)
      expect(run(8)).not.toEqual(p)
    })
  }

  it('iid sizes differ by at most one and mirror the global mix', () => {
    const p = partitionIid(1003, 10, 'x')
    const sizes = p.map((x) => x.length)
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1)
    expect(meanTopShare(partitionIid(cats.length, k, 1), cats)).toBeLessThan(0.45) // global top share is 0.3
  })

  it('category partition is skewed: each client dominated by ~2 categories, equal sizes', () => {
    const p = partitionByCategory(cats, k, { seed: 1 })
    const sizes = p.map((x) => x.length)
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(2)
    for (const s of partitionStats(p, cats)) {
      expect(s.categories.length).toBeLessThanOrEqual(6)
      const top2 = s.categories.slice(0, 2).reduce((a, [, n]) => a + n, 0)
      expect(top2 / s.size).toBeGreaterThan(0.6)
    }
    expect(meanTop2Share(p, cats)).toBeGreaterThan(0.85)
    expect(meanTop2Share(partitionIid(cats.length, k, 1), cats)).toBeLessThan(0.6) // global top-2 share is 0.5
    const one = partitionStats(partitionByCategory(cats, k, { seed: 1, shardsPerClient: 1 }), cats)
    expect(one.every((s) => s.categories.length <= 4)).toBe(true)
  })

  it('dirichlet skew falls as alpha grows', () => {
    const skewed = meanTopShare(partitionDirichlet(cats, k, { seed: 3, alpha: 0.1 }), cats)
    const mild = meanTopShare(partitionDirichlet(cats, k, { seed: 3, alpha: 1 }), cats)
    const flat = meanTopShare(partitionDirichlet(cats, k, { seed: 3, alpha: 1000 }), cats)
    expect(skewed).toBeGreaterThan(mild)
    expect(mild).toBeGreaterThan(flat)
    expect(flat).toBeLessThan(0.4)
  })

  it('dirichlet honours minPerClient or says why it cannot', () => {
    const p = partitionDirichlet(cats, k, { seed: 5, alpha: 0.5, minPerClient: 50 })
    expect(Math.min(...p.map((x) => x.length))).toBeGreaterThanOrEqual(50)
    expect(() => partitionDirichlet(cats.slice(0, 40), 10, { seed: 5, alpha: 0.01, minPerClient: 4, maxTries: 3 })).toThrow(PartitionError)
    expect(() => partitionDirichlet(cats, k, { seed: 5, alpha: 0 })).toThrow(/alpha/)
  })

  it('rejects bad arguments with PartitionError', () => {
    expect(() => partitionIid(10, 0, 1)).toThrow(PartitionError)
    expect(() => partitionByCategory(cats.slice(0, 5), 3, { seed: 1 })).toThrow(/at least k \* shardsPerClient = 6/)
    expect(() => partitionByCategory(cats, 3, { seed: 1, shardsPerClient: 0 })).toThrow(PartitionError)
    expect(() => assertExactCover([[0, 1], [1]], 2)).toThrow(/index 1 is assigned twice/)
    expect(() => assertExactCover([[0]], 2)).toThrow(/covers 1 of 2/)
  })

  it('partitionExamples dispatches on the spec, on real WordNet categories', () => {
    const train = splitWordNet(loadWordNet()).train
    const examples = train.map((s) => ({ category: s.lexname }))
    const p = partitionExamples(examples, 10, { kind: 'category', seed: 'wn' })
    assertExactCover(p, examples.length)
    const names = examples.map((e) => e.category)
    expect(meanTop2Share(p, names)).toBeGreaterThan(0.55) // global top-2 share is 0.22
    expect(meanTop2Share(partitionIid(names.length, 10, 'wn'), names)).toBeLessThan(0.3)
    const d = partitionExamples(examples, 10, { kind: 'dirichlet', seed: 'wn', alpha: 0.5 })
    assertExactCover(d, examples.length)
    expect(partitionExamples([{}, {}, {}], 2, { kind: 'iid', seed: 1 })).toEqual(partitionIid(3, 2, 1))
  })
})

describe('gamma / Dirichlet sampling', () => {
  it('has the right means', () => {
    const prng = createPrng('gamma')
    for (const shape of [0.3, 1, 4.5]) {
      let sum = 0
      const n = 20_000
      for (let i = 0; i < n; i++) sum += Math.exp(logGamma(prng, shape))
      expect(Math.abs(sum / n - shape)).toBeLessThan(0.05 * Math.max(1, shape))
    }
    const p = sampleDirichlet(createPrng(1), 0.001, 5)
    expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12)
    expect(p.every((x) => Number.isFinite(x) && x >= 0)).toBe(true)
  })
})
