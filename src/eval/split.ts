/**
 * Who holds what: the non-IID split of the training pool over the clients (by category,
 * src/model/data/partition.ts) and a matching split of the held-out set, so that every
 * client is scored on held-out data drawn from its own category mix.
 *
 * Held-out split: for each category c, the held-out examples of c (in their given order)
 * are cut among the clients in proportion to their training counts n_kc / n_c, with the
 * same cumulative-rounding rule as the Dirichlet partitioner. Categories no client trains
 * on go to the client with the most training data (ties: lowest index), so the per-client
 * sets still cover the pooled set exactly once.
 */
import { partitionByCategory, type Partition } from '../model/data/partition.js'
import type { TaskExample } from './types.js'

export interface ClientSplit {
  /** Per client, ascending indices into the training examples. */
  readonly train: Partition
  /** Per client, ascending indices into the held-out examples; together an exact cover. */
  readonly eval: Partition
}

export function splitClients(
  trainExamples: readonly TaskExample[],
  evalExamples: readonly TaskExample[],
  clients: number,
  options: { readonly seed: number; readonly shardsPerClient: number },
): ClientSplit {
  const train = partitionByCategory(
    trainExamples.map((e) => e.category),
    clients,
    { seed: options.seed, shardsPerClient: options.shardsPerClient },
  )
  return { train, eval: splitHeldOut(train, trainExamples, evalExamples) }
}

/** The held-out split matching a training partition (see the module comment). */
export function splitHeldOut(train: Partition, trainExamples: readonly TaskExample[], evalExamples: readonly TaskExample[]): Partition {
  const k = train.length
  const counts = new Map<string, number[]>()
  train.forEach((idx, c) => {
    for (const i of idx) {
      const cat = trainExamples[i].category
      let row = counts.get(cat)
      if (row === undefined) counts.set(cat, (row = new Array<number>(k).fill(0)))
      row[c]++
    }
  })
  let biggest = 0
  for (let c = 1; c < k; c++) if (train[c].length > train[biggest].length) biggest = c
  const byCat = new Map<string, number[]>()
  evalExamples.forEach((e, i) => {
    const g = byCat.get(e.category)
    if (g === undefined) byCat.set(e.category, [i])
    else g.push(i)
  })
  const out: Partition = Array.from({ length: k }, () => [])
  for (const [cat, idx] of byCat) {
    const row = counts.get(cat)
    if (row === undefined) {
      out[biggest].push(...idx)
      continue
    }
    const total = row.reduce((a, b) => a + b, 0)
    let cum = 0
    let from = 0
    for (let c = 0; c < k; c++) {
      cum += row[c]
      const to = c === k - 1 ? idx.length : Math.min(idx.length, Math.round((cum / total) * idx.length))
      for (let i = from; i < to; i++) out[c].push(idx[i])
      from = Math.max(from, to)
    }
  }
  return out.map((p) => p.sort((a, b) => a - b))
}

/** The largest categories of a set of examples, with counts (count desc, then name). */
export function topCategories(examples: readonly TaskExample[], idx: readonly number[], n = 3): Array<readonly [string, number]> {
  const counts = new Map<string, number>()
  for (const i of idx) counts.set(examples[i].category, (counts.get(examples[i].category) ?? 0) + 1)
  return [...counts]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, n)
}
