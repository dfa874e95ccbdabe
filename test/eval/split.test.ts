import { describe, expect, it } from 'vitest'
import { assertExactCover } from '../../src/model/data/partition.js'
import { splitClients, splitHeldOut } from '../../src/eval/split.js'
import { ranksFor } from '../../src/eval/settings.js'

const cats = (xs: string): { category: string }[] => [...xs].map((c) => ({ category: c }))

describe('held-out split', () => {
  it('follows each client\'s training share per category and covers the held-out set once', () => {
    const train = cats('aaaabbbb')
    const partition = [[0, 1, 2], [3, 4, 5, 6, 7]] // client 0: a a a; client 1: a b b b b
    const held = cats('aaaabbz') // z: no client trains on it -> the larger client
    const split = splitHeldOut(partition, train, held)
    assertExactCover(split, held.length)
    expect(split[0]).toEqual([0, 1, 2]) // 3/4 of the a's
    expect(split[1]).toEqual([3, 4, 5, 6])
  })

  it('splitClients is non-IID and deterministic', () => {
    const train = cats('abcdefghij'.repeat(20))
    const held = cats('abcdefghij'.repeat(3))
    const a = splitClients(train, held, 5, { seed: 1, shardsPerClient: 2 })
    const b = splitClients(train, held, 5, { seed: 1, shardsPerClient: 2 })
    expect(a).toEqual(b)
    assertExactCover(a.train, train.length)
    assertExactCover(a.eval, held.length)
    for (const idx of a.train) expect(new Set(idx.map((i) => train[i].category)).size).toBeLessThanOrEqual(3)
  })
})

describe('rank settings', () => {
  it('are the paper\'s', () => {
    expect(ranksFor('homo16', 3)).toEqual([16, 16, 16])
    expect(ranksFor('hetero', 10)).toEqual([64, 32, 16, 16, 8, 8, 4, 4, 4, 4])
    expect(ranksFor('hetero', 12).slice(10)).toEqual([64, 32])
  })
})
