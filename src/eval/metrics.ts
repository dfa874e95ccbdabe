/**
 * Metrics of the harness, computed on plain typed arrays in float64 and independently of
 * src/aggregation (so the aggregation error checks the strategies rather than repeating
 * them).
 *
 *   aggregation error  = ||dW_agg - x sum_k p_k s_k B_k A_k||_F / ||x sum_k p_k s_k B_k A_k||_F
 *   start error        = sum_k p_k ||s_k B'_k A'_k - G||_F / ||G||_F
 *
 * where dW_agg = (merged terms) + (global terms) is what the strategy adds on top of the
 * base weights the clients trained on, x the global scale, G the global terms alone and
 * (B'_k, A'_k) the adapter client k starts the next round from. Norms are taken over all
 * adapted modules together (the Frobenius norm of the concatenation).
 */
import type { LowRankTerm, ModuleTerms, Strategy } from '../aggregation/types.js'
import type { AdapterSet, ModuleShape } from '../lora/types.js'
import type { BytesPerClient, ExampleScores, ScoreSummary, Stat } from './types.js'

/** sum_t coef_t B_t A_t as a dense [out, in] float64 matrix (plain triple loop). */
export function lowRankDense(shape: ModuleShape, terms: readonly LowRankTerm[]): Float64Array {
  const { outFeatures: out, inFeatures: inF } = shape
  const d = new Float64Array(out * inF)
  for (const { coef, rank, loraA, loraB } of terms) {
    for (let i = 0; i < out; i++) {
      const row = i * inF
      for (let t = 0; t < rank; t++) {
        const b = coef * loraB[i * rank + t]
        if (b === 0) continue
        const a = t * inF
        for (let j = 0; j < inF; j++) d[row + j] += b * loraA[a + j]
      }
    }
  }
  return d
}

/** The adapter's own update s B A of one module as terms (empty when the module is absent). */
export function adapterTerms(adapter: AdapterSet | undefined, module: string, coefScale = 1): LowRankTerm[] {
  const m = adapter?.modules.find((x) => x.name === module)
  return m === undefined ? [] : [{ coef: coefScale * m.scaling, rank: m.rank, loraA: m.loraA, loraB: m.loraB }]
}

/** The ideal update sum_k p_k s_k B_k A_k of one module, p_k = n_k / sum_j n_j. */
export function idealTerms(adapters: readonly AdapterSet[], samples: readonly number[], module: string, scale = 1): LowRankTerm[] {
  const total = samples.reduce((a, b) => a + b, 0)
  return adapters.flatMap((a, k) => adapterTerms(a, module, (scale * samples[k]) / total))
}

/** Squared Frobenius norm of x - y (y omitted: of x). */
export function sqDist(x: Float64Array, y?: Float64Array): number {
  let s = 0
  for (let i = 0; i < x.length; i++) {
    const v = y === undefined ? x[i] : x[i] - y[i]
    s += v * v
  }
  return s
}

/** Relative error ||got - want|| / ||want||; 0 when both are zero, Infinity when only want is. */
export function relativeError(num2: number, den2: number): number {
  if (den2 === 0) return num2 === 0 ? 0 : Infinity
  return Math.sqrt(num2 / den2)
}

export interface AggregationCheck {
  readonly aggError: number
  readonly startError: number
}

/**
 * Aggregation and start errors of one round (see the module comment). `starts[k]` is the
 * adapter client k starts the next round from (undefined: a fresh LoRA, i.e. zero update).
 */
export function checkAggregation(
  shapes: readonly ModuleShape[],
  adapters: readonly AdapterSet[],
  samples: readonly number[],
  merge: ModuleTerms,
  global: ModuleTerms,
  starts: readonly (AdapterSet | undefined)[],
  scale: number,
): AggregationCheck {
  const total = samples.reduce((a, b) => a + b, 0)
  let errNum = 0
  let errDen = 0
  const startNum = new Array<number>(adapters.length).fill(0)
  let gDen = 0
  for (const shape of shapes) {
    const ideal = lowRankDense(shape, idealTerms(adapters, samples, shape.name, scale))
    const g = lowRankDense(shape, global.get(shape.name) ?? [])
    const agg = lowRankDense(shape, merge.get(shape.name) ?? [])
    for (let i = 0; i < agg.length; i++) agg[i] += g[i]
    errNum += sqDist(agg, ideal)
    errDen += sqDist(ideal)
    gDen += sqDist(g)
    starts.forEach((s, k) => {
      startNum[k] += sqDist(lowRankDense(shape, adapterTerms(s, shape.name)), g)
    })
  }
  let startError = 0
  startNum.forEach((num, k) => {
    startError += (samples[k] / total) * relativeError(num, gDen)
  })
  return { aggError: relativeError(errNum, errDen), startError }
}

/**
 * Bytes per client per round (f32 factors). `up` is the strategy's own count for the
 * client's rank; a peer in the serverless exchange downloads every other client's upload;
 * a server would send FLoRA's whole stack, zero-padding's padded rank-r_max global, and
 * the global adapter at the client's rank for the others.
 */
export function roundBytes(strategy: Strategy, shapes: readonly ModuleShape[], ranks: readonly number[]): BytesPerClient {
  const up = ranks.map((r) => strategy.bytesPerClient(shapes, r))
  const totalUp = up.reduce((a, b) => a + b, 0)
  const rMax = Math.max(...ranks)
  const server = ranks.map((r) => {
    // FLoRA and flora-pd merge the whole stack: a server would send every client all of it.
    if (strategy.name === 'flora' || strategy.name === 'flora-pd') return totalUp
    if (strategy.name === 'zero-padding') return strategy.bytesPerClient(shapes, rMax)
    return strategy.bytesPerClient(shapes, r)
  })
  const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
  return { up: mean(up), downP2P: mean(up.map((u) => totalUp - u)), downServer: mean(server) }
}

/**
 * Token-weighted loss and accuracy, pooled and per client, from per-example scores; with
 * per-question exact match (`scores.exact`), also its share of questions.
 */
export function summarizeScores(
  scores: ExampleScores,
  perClient: readonly (readonly number[])[],
): { evalLoss: ScoreSummary; tokenAccuracy: ScoreSummary; exactMatch?: ScoreSummary } {
  const agg = (idx: Iterable<number>): [number, number] => {
    let loss = 0
    let tok = 0
    let cor = 0
    for (const i of idx) {
      loss += scores.lossSum[i]
      tok += scores.tokens[i]
      cor += scores.correct[i]
    }
    return tok === 0 ? [NaN, NaN] : [loss / tok, cor / tok]
  }
  const all = agg(perClient.flat())
  const per = perClient.map((idx) => agg(idx))
  const exact = scores.exact
  const share = (idx: readonly number[]): number => {
    if (exact === undefined || idx.length === 0) return NaN
    let n = 0
    for (const i of idx) n += exact[i]
    return n / idx.length
  }
  return {
    evalLoss: { pooled: all[0], perClient: per.map((x) => x[0]) },
    tokenAccuracy: { pooled: all[1], perClient: per.map((x) => x[1]) },
    ...(exact !== undefined ? { exactMatch: { pooled: share(perClient.flat()), perClient: perClient.map(share) } } : {}),
  }
}

/** Scores of a subset, re-indexed: out[j] = scores[idx[j]] laid out at position map[j]. */
export function scatterScores(into: ExampleScores, idx: readonly number[], part: ExampleScores): void {
  idx.forEach((i, j) => {
    into.lossSum[i] = part.lossSum[j]
    into.tokens[i] = part.tokens[j]
    into.correct[i] = part.correct[j]
    if (into.exact !== undefined && part.exact !== undefined) into.exact[i] = part.exact[j]
  })
}

/** Mean and sample standard deviation (n - 1; 0 for a single value); NaNs are skipped. */
export function stat(values: readonly number[]): Stat {
  const xs = values.filter((v) => !Number.isNaN(v))
  const n = xs.length
  if (n === 0) return { mean: NaN, std: NaN, n: 0 }
  const mean = xs.reduce((a, b) => a + b, 0) / n
  if (n === 1) return { mean, std: 0, n }
  const v = xs.reduce((a, b) => a + (b - mean) * (b - mean), 0) / (n - 1)
  return { mean, std: Math.sqrt(v), n }
}
