/**
 * Seeded partitioners of a data set over K clients (peers). Each returns, per client, the
 * ascending list of example indices it owns; every index 0..n-1 is owned by exactly one
 * client. The result is a pure function of (inputs, seed): all randomness comes from
 * `createPrng(seed)` forked by purpose, so peers that share a seed agree on who owns what.
 *
 * - iid: shuffle, cut into K near-equal parts.
 * - category (pathological non-IID, as the Dolly-by-category splits of FedIT/FLoRA):
 *   order examples by category (category order shuffled), cut into K * shardsPerClient
 *   equal shards, deal shardsPerClient random shards to each client. Client sizes are
 *   equal (+-1 per shard) and each client is dominated by about shardsPerClient categories.
 * - dirichlet (Hsu et al. 2019): for each category, split its examples over the clients
 *   in proportions p ~ Dir(alpha, ..., alpha). Small alpha -> few categories per client and
 *   unequal sizes; large alpha -> close to IID.
 */
import { createPrng, type Prng, type SeedLike } from '../../lora/prng.js'
import { type InstructionExample, PartitionError } from './types.js'

/** Per client, the ascending indices of the examples it owns. */
export type Partition = number[][]

export type PartitionSpec =
  | { readonly kind: 'iid'; readonly seed: SeedLike }
  | { readonly kind: 'category'; readonly seed: SeedLike; readonly shardsPerClient?: number }
  | { readonly kind: 'dirichlet'; readonly seed: SeedLike; readonly alpha: number; readonly minPerClient?: number }

/** Partitions examples by `spec`; examples without a category count as category ''. */
export function partitionExamples(examples: readonly Pick<InstructionExample, 'category'>[], k: number, spec: PartitionSpec): Partition {
  const categories = examples.map((e) => e.category ?? '')
  switch (spec.kind) {
    case 'iid':
      return partitionIid(examples.length, k, spec.seed)
    case 'category':
      return partitionByCategory(categories, k, spec)
    case 'dirichlet':
      return partitionDirichlet(categories, k, spec)
  }
}

/** IID: a seeded shuffle of 0..n-1 cut into k parts whose sizes differ by at most one. */
export function partitionIid(n: number, k: number, seed: SeedLike): Partition {
  checkArgs(n, k)
  const order = createPrng(seed).fork('partition/iid').shuffle(range(n))
  const out: Partition = []
  for (let c = 0; c < k; c++) out.push(sortAsc(order.slice(Math.floor((c * n) / k), Math.floor(((c + 1) * n) / k))))
  return out
}

export interface CategoryPartitionOptions {
  readonly seed: SeedLike
  /** Shards dealt to each client (default 2): about how many categories dominate a client. */
  readonly shardsPerClient?: number
}

/** Pathological non-IID by category via equal shards of the category-sorted data. */
export function partitionByCategory(categories: readonly string[], k: number, options: CategoryPartitionOptions): Partition {
  const n = categories.length
  checkArgs(n, k)
  const s = options.shardsPerClient ?? 2
  if (!Number.isInteger(s) || s < 1) throw new PartitionError(`shardsPerClient must be an integer >= 1, got ${s}`)
  const shards = k * s
  if (n < shards) throw new PartitionError(`category partition needs at least k * shardsPerClient = ${shards} examples, got ${n}`)
  const prng = createPrng(options.seed).fork('partition/category')
  const groups = groupByCategory(categories)
  const names = prng.fork('category-order').shuffle([...groups.keys()].sort())
  const order: number[] = []
  for (const name of names) {
    // A category's internal order comes from its own stream, so adding or removing other
    // categories does not reshuffle it.
    for (const i of prng.fork(`within/${name}`).shuffle(groups.get(name) ?? [])) order.push(i)
  }
  const deal = prng.fork('deal').shuffle(range(shards))
  const out: Partition = []
  for (let c = 0; c < k; c++) {
    const mine: number[] = []
    for (let j = 0; j < s; j++) {
      const shard = deal[c * s + j]
      const from = Math.floor((shard * n) / shards)
      const to = Math.floor(((shard + 1) * n) / shards)
      for (let i = from; i < to; i++) mine.push(order[i])
    }
    out.push(sortAsc(mine))
  }
  return out
}

export interface DirichletPartitionOptions {
  readonly seed: SeedLike
  /** Concentration > 0: 0.1 very skewed, 1 moderate, 100 near IID. */
  readonly alpha: number
  /** Resample (up to maxTries) until every client has at least this many examples (default 1). */
  readonly minPerClient?: number
  readonly maxTries?: number
}

/** Non-IID by Dirichlet(alpha) proportions of each category over the clients. */
export function partitionDirichlet(categories: readonly string[], k: number, options: DirichletPartitionOptions): Partition {
  const n = categories.length
  checkArgs(n, k)
  const { alpha } = options
  if (!(Number.isFinite(alpha) && alpha > 0)) throw new PartitionError(`Dirichlet alpha must be a finite number > 0, got ${alpha}`)
  const minPerClient = options.minPerClient ?? 1
  const maxTries = options.maxTries ?? 100
  if (!Number.isInteger(minPerClient) || minPerClient < 0 || minPerClient * k > n) {
    throw new PartitionError(`minPerClient must be an integer in [0, n/k] = [0, ${Math.floor(n / k)}], got ${minPerClient}`)
  }
  const prng = createPrng(options.seed).fork('partition/dirichlet')
  const groups = groupByCategory(categories)
  const names = [...groups.keys()].sort()
  const shuffled = new Map(names.map((name) => [name, prng.fork(`within/${name}`).shuffle([...(groups.get(name) ?? [])])]))
  for (let attempt = 0; attempt < maxTries; attempt++) {
    const tryPrng = prng.fork(`try/${attempt}`)
    const out: Partition = Array.from({ length: k }, () => [])
    for (const name of names) {
      const idx = shuffled.get(name) ?? []
      const p = sampleDirichlet(tryPrng.fork(`p/${name}`), alpha, k)
      // Client c takes idx[round(P_{c-1} m) .. round(P_c m)), P the cumulative proportions;
      // the last boundary is m exactly, so every example lands once.
      let cum = 0
      let from = 0
      for (let c = 0; c < k; c++) {
        cum += p[c]
        const to = c === k - 1 ? idx.length : Math.min(idx.length, Math.round(cum * idx.length))
        for (let i = from; i < to; i++) out[c].push(idx[i])
        from = Math.max(from, to)
      }
    }
    if (out.every((part) => part.length >= minPerClient)) return out.map(sortAsc)
  }
  throw new PartitionError(
    `Dirichlet(alpha=${alpha}) partition over ${k} clients gave some client fewer than ${minPerClient} examples in ${maxTries} tries; raise alpha or lower minPerClient`,
  )
}

/**
 * One draw of Dir(alpha * 1_k): normalized Gamma(alpha) draws, computed from log-gammas so
 * tiny alphas (whose gamma draws underflow to 0) still give a valid distribution.
 */
export function sampleDirichlet(prng: Prng, alpha: number, k: number): number[] {
  const logs = Array.from({ length: k }, () => logGamma(prng, alpha))
  const max = Math.max(...logs)
  const w = logs.map((l) => Math.exp(l - max))
  const sum = w.reduce((a, b) => a + b, 0)
  return w.map((x) => x / sum)
}

/**
 * log of a Gamma(shape, 1) draw. Marsaglia & Tsang (2000) for shape >= 1; for shape < 1,
 * Gamma(a) = Gamma(a + 1) * U^(1/a), i.e. log G(a) = log G(a + 1) + log(U) / a.
 */
export function logGamma(prng: Prng, shape: number): number {
  if (shape < 1) {
    const u = 1 - prng.nextFloat() // (0, 1]
    return logGamma(prng, shape + 1) + Math.log(u) / shape
  }
  const d = shape - 1 / 3
  const c = 1 / Math.sqrt(9 * d)
  for (;;) {
    const x = prng.normal()
    const t = 1 + c * x
    if (t <= 0) continue
    const v = t * t * t
    const u = 1 - prng.nextFloat()
    // Accept if u < 1 - 0.0331 x^4 (squeeze) or log u < x^2/2 + d (1 - v + log v).
    if (u < 1 - 0.0331 * x * x * x * x || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) {
      return Math.log(d) + Math.log(v)
    }
  }
}

export interface ClientStats {
  readonly client: number
  readonly size: number
  /** Example count per category, categories sorted by count (desc) then name. */
  readonly categories: ReadonlyArray<readonly [string, number]>
  /** Share of the client's largest category (0 when empty). */
  readonly topShare: number
}

/** Per-client sizes and category mix, for logs and for checking skew. */
export function partitionStats(partition: Partition, categories: readonly string[]): ClientStats[] {
  return partition.map((idx, client) => {
    const counts = new Map<string, number>()
    for (const i of idx) counts.set(categories[i], (counts.get(categories[i]) ?? 0) + 1)
    const sorted = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    return { client, size: idx.length, categories: sorted, topShare: idx.length === 0 ? 0 : sorted[0][1] / idx.length }
  })
}

/** Throws unless `partition` assigns every index in 0..n-1 to exactly one client. */
export function assertExactCover(partition: Partition, n: number): void {
  const seen = new Uint8Array(n)
  let total = 0
  for (let c = 0; c < partition.length; c++) {
    for (const i of partition[c]) {
      if (!Number.isInteger(i) || i < 0 || i >= n) throw new PartitionError(`client ${c} holds index ${i}, outside [0, ${n})`)
      if (seen[i] !== 0) throw new PartitionError(`index ${i} is assigned twice (again to client ${c})`)
      seen[i] = 1
      total++
    }
  }
  if (total !== n) throw new PartitionError(`partition covers ${total} of ${n} examples`)
}

function checkArgs(n: number, k: number): void {
  if (!Number.isInteger(k) || k < 1) throw new PartitionError(`number of clients must be an integer >= 1, got ${k}`)
  if (!Number.isInteger(n) || n < 0) throw new PartitionError(`number of examples must be an integer >= 0, got ${n}`)
}

function groupByCategory(categories: readonly string[]): Map<string, number[]> {
  const groups = new Map<string, number[]>()
  for (let i = 0; i < categories.length; i++) {
    const g = groups.get(categories[i])
    if (g === undefined) groups.set(categories[i], [i])
    else g.push(i)
  }
  return groups
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
}

function sortAsc(xs: number[]): number[] {
  return xs.sort((a, b) => a - b)
}
