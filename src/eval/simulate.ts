/**
 * The simulation: K clients in one process, each round training every client locally with
 * its own rank and aggregating with a strategy, plus two references (centralized training
 * on the pooled data with the same total number of steps, and local-only training).
 *
 * One round of a strategy, on the strategy's own copy W of the adapted base weights:
 *   1. every client k trains, on W, from its start adapter (round 1: a fresh LoRA of rank
 *      r_k from the round's shared init seed; later: the strategy's nextAdapter, or a
 *      fresh LoRA when it gives none) for S steps on its own data;
 *   2. the strategy aggregates the K adapters (weights p_k = n_k / sum_j n_j);
 *   3. W <- W + x * merge terms (the deterministic merge kernel), x the global scale;
 *   4. the global model W + x * global terms is scored on every client's held-out data.
 *
 * Fairness and reproducibility: for one seed, client k's round-r job has the same data,
 * batch-order seed and (in round 1) the same initial adapter under every method, so the
 * methods differ only in what they do between rounds. Jobs are memoized by a hash of
 * everything they depend on (base weights, start adapter bytes, data, steps, seed), which
 * makes the shared first round free for all but the first method; the trainer must be
 * deterministic for that to be sound, and it is required to be anyway.
 */
import { createHash } from 'node:crypto'
import { cpus, platform, totalmem } from 'node:os'
import { AggregationError } from '../aggregation/errors.js'
import { mergeIntoWeightsSync } from '../aggregation/merge.js'
import { getStrategy } from '../aggregation/strategy.js'
import type { ClientUpdate, LowRankTerm, ModuleTerms, RoundAggregate, Strategy } from '../aggregation/types.js'
import { initAdapter } from '../lora/init.js'
import { loraScaling } from '../lora/scaling.js'
import type { AdapterSet, ModuleShape } from '../lora/types.js'
import { encodeAdapter } from '../lora/wire.js'
import { adapterTerms, checkAggregation, roundBytes, scatterScores, stat, summarizeScores } from './metrics.js'
import { alphaFor, ranksFor } from './settings.js'
import { splitClients, topCategories, type ClientSplit } from './split.js'
import type {
  ClientInfo,
  EvalConfig,
  EvalResults,
  ExampleScores,
  RoundRecord,
  RunRecord,
  ScoreSummary,
  SettingName,
  SimBackend,
  SummaryRow,
  TrainJob,
  TrainOutcome,
} from './types.js'

import '../aggregation/index.js' // registers the built-in strategies

export interface RunOptions {
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void
  readonly signal?: AbortSignal
  /** Called after every finished run (e.g. to save partial results of a long evaluation). */
  readonly onRun?: (run: RunRecord, runsSoFar: readonly RunRecord[]) => void | Promise<void>
}

type Weights = Map<string, Float32Array>

/** Zero-padded so that the strategies' canonical (id) order is the client order. */
export function clientId(k: number): string {
  return `client-${String(k).padStart(3, '0')}`
}

/** A fresh LoRA (A random, B zero) of rank r, alpha 2r; every client of a round shares the seed. */
export function freshAdapter(shapes: readonly ModuleShape[], rank: number, seed: number, round: number): AdapterSet {
  return initAdapter({ shapes, rank, alpha: alphaFor(rank), seed: `flora-eval/${seed}/init/round-${round}` })
}

function trainSeed(seed: number, round: number, client: number): string {
  return `flora-eval/${seed}/train/round-${round}/client-${client}`
}

function copyWeights(w: Weights): Weights {
  return new Map([...w].map(([k, v]) => [k, v.slice()]))
}

function weightsDigest(shapes: readonly ModuleShape[], w: Weights): string {
  const h = createHash('sha256')
  for (const s of shapes) {
    const x = w.get(s.name) as Float32Array
    h.update(s.name).update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength))
  }
  return h.digest('hex')
}

/** x * (update): merge and global coefficients scaled, next adapters' B scaled. */
export function scaleAggregate(agg: RoundAggregate, x: number): Pick<RoundAggregate, 'merge' | 'global' | 'nextAdapter'> {
  if (x === 1) return agg
  const scaleTerms = (m: ModuleTerms): ModuleTerms =>
    new Map([...m].map(([name, terms]) => [name, terms.map((t): LowRankTerm => ({ ...t, coef: t.coef * x }))]))
  return {
    merge: scaleTerms(agg.merge),
    global: scaleTerms(agg.global),
    nextAdapter(target) {
      const a = agg.nextAdapter(target)
      if (a === undefined) return undefined
      return { modules: a.modules.map((m) => ({ ...m, loraB: m.loraB.map((v) => v * x) })) }
    },
  }
}

/** Runs the whole evaluation described by `config` on `backend`. */
export async function runEvaluation(config: EvalConfig, backend: SimBackend, options: RunOptions = {}): Promise<EvalResults> {
  const sim = new Simulation(config, backend, options)
  return sim.run()
}

class Simulation {
  private readonly shapes: readonly ModuleShape[]
  private readonly split: ClientSplit
  private readonly initial: Weights
  private readonly evalAll: number[]
  private readonly trainAll: number[]
  private readonly samples: number[]
  private cache = new Map<string, TrainOutcome>()
  private cacheHits = 0
  private base: { evalLoss: ScoreSummary; tokenAccuracy: ScoreSummary; exactMatch?: ScoreSummary } | undefined

  constructor(
    private readonly config: EvalConfig,
    private readonly backend: SimBackend,
    private readonly options: RunOptions,
  ) {
    this.shapes = backend.shapes
    this.split = splitClients(backend.trainExamples, backend.evalExamples, config.clients, {
      seed: config.partitionSeed,
      shardsPerClient: config.shardsPerClient,
    })
    this.split.train.forEach((idx, k) => {
      if (idx.length === 0) throw new Error(`client ${k} got no training examples; use fewer clients or more data`)
    })
    this.initial = new Map(this.shapes.map((s) => [s.name, backend.getBaseWeight(s.name)]))
    this.evalAll = backend.evalExamples.map((_, i) => i)
    this.trainAll = this.split.train.flat().sort((a, b) => a - b)
    this.samples = this.split.train.map((idx) => idx.length)
  }

  private log(line: string): void {
    this.options.log?.(line)
  }

  async run(): Promise<EvalResults> {
    const t0 = performance.now()
    const cfg = this.config
    this.setBase(this.initial)
    const baseScores = await this.backend.evaluate(this.evalAll)
    this.base = summarizeScores(baseScores, this.split.eval)
    this.log(`base model: held-out loss ${fmt(this.base.evalLoss.pooled)}, token accuracy ${fmt(this.base.tokenAccuracy.pooled)}${exactNote(this.base)}`)
    if (this.backend.ignoreQuestionBaseline !== undefined) {
      this.log(`the answer that ignores the question (each task's commonest training answer): exact match ${fmt(this.backend.ignoreQuestionBaseline)}`)
    }
    const runs: RunRecord[] = []
    const push = async (r: RunRecord): Promise<void> => {
      runs.push(r)
      await this.options.onRun?.(r, runs)
      this.options.signal?.throwIfAborted()
    }
    for (let seed = 0; seed < cfg.seeds; seed++) {
      this.cache.clear() // jobs only repeat within one seed
      for (const setting of cfg.settings) {
        for (const x of cfg.globalScales) {
          for (const name of cfg.strategies) {
            await push(await this.runStrategy(getStrategy(name), setting, seed, x))
          }
        }
        if (cfg.references) {
          const lrs = cfg.centralLrs ?? [cfg.lr]
          for (const lr of lrs) await push(await this.runCentralized(setting, seed, lr, lrs.length > 1))
          await push(await this.runLocalOnly(setting, seed))
        }
      }
    }
    this.setBase(this.initial)
    const clients: ClientInfo[] = this.split.train.map((idx, k) => ({
      id: clientId(k),
      trainSize: idx.length,
      evalSize: this.split.eval[k].length,
      topCategories: topCategories(this.backend.trainExamples, idx),
    }))
    return {
      version: 1,
      config: cfg,
      backend: this.backend.description,
      machine: machineInfo(),
      clients,
      base: this.base,
      ...(this.backend.ignoreQuestionBaseline !== undefined ? { ignoreQuestionBaseline: this.backend.ignoreQuestionBaseline } : {}),
      runs,
      summary: summarize(runs),
      seconds: (performance.now() - t0) / 1000,
      cacheHits: this.cacheHits,
    }
  }

  private setBase(w: Weights): void {
    for (const s of this.shapes) this.backend.setBaseWeight(s.name, w.get(s.name) as Float32Array)
  }

  private round0(): RoundRecord {
    const b = this.base as NonNullable<Simulation['base']>
    return {
      round: 0,
      trainLoss: NaN,
      evalLoss: b.evalLoss,
      tokenAccuracy: b.tokenAccuracy,
      ...(b.exactMatch !== undefined ? { exactMatch: b.exactMatch } : {}),
      aggError: null,
      startError: null,
      bytes: null,
    }
  }

  /** Trains one job, or returns the identical job's earlier result. `stateKey` digests the base weights it runs on. */
  private async train(job: TrainJob, stateKey: string): Promise<TrainOutcome> {
    const h = createHash('sha256').update(stateKey)
    const bytes = encodeAdapter(job.start)
    h.update(bytes).update(new Uint8Array(Int32Array.from(job.examples).buffer))
    h.update(`${job.steps}/${job.seed}/${job.freezeA}/${job.lr ?? ''}`)
    const key = h.digest('hex')
    const hit = this.cache.get(key)
    if (hit !== undefined) {
      this.cacheHits++
      return hit
    }
    const out = await this.backend.train(job)
    this.cache.set(key, out)
    return out
  }

  /** Scores `w` plus the given terms on the held-out examples `idx` (all of them by default). */
  private async score(w: Weights, extra: ModuleTerms, idx: readonly number[] = this.evalAll): Promise<ExampleScores> {
    const evalW = copyWeights(w)
    for (const s of this.shapes) {
      const terms = extra.get(s.name)
      if (terms !== undefined && terms.length > 0) mergeIntoWeightsSync(evalW.get(s.name) as Float32Array, s, terms)
    }
    this.setBase(evalW)
    return this.backend.evaluate(idx)
  }

  private async runStrategy(strategy: Strategy, setting: SettingName, seed: number, x: number): Promise<RunRecord> {
    const t0 = performance.now()
    const cfg = this.config
    const ranks = ranksFor(setting, cfg.clients)
    const label = `[${setting} seed ${seed} ${strategy.name}${x === 1 ? '' : ` x${x}`}]`
    const record = (rounds: RoundRecord[], extra: Partial<RunRecord> = {}): RunRecord => ({
      setting,
      method: strategy.name,
      kind: 'strategy',
      globalScale: x,
      seed,
      ranks,
      applicable: true,
      rounds,
      seconds: (performance.now() - t0) / 1000,
      ...extra,
    })
    // Equal-rank strategies refuse heterogeneous ranks: ask the strategy itself, on fresh
    // adapters, so the reported reason is its own error message.
    if (strategy.requiresEqualRanks && ranks.some((r) => r !== ranks[0])) {
      try {
        strategy.aggregate(ranks.map((r, k) => ({ id: clientId(k), samples: this.samples[k], adapter: freshAdapter(this.shapes, r, seed, 1) })))
      } catch (err) {
        if (!(err instanceof AggregationError)) throw err
        this.log(`${label} not applicable: ${err.message}`)
        return record([], { applicable: false, reason: `${err.name}: ${err.message}` })
      }
    }
    const freezeA = strategy.name === 'ffa'
    const w = copyWeights(this.initial)
    let starts: (AdapterSet | undefined)[] = ranks.map(() => undefined)
    const rounds: RoundRecord[] = [this.round0()]
    for (let round = 1; round <= cfg.rounds; round++) {
      const tr = performance.now()
      this.setBase(w)
      const stateKey = weightsDigest(this.shapes, w)
      const adapters: AdapterSet[] = []
      let lossSum = 0
      for (let k = 0; k < cfg.clients; k++) {
        const start = starts[k] ?? freshAdapter(this.shapes, ranks[k], seed, round)
        const out = await this.train(
          { start, examples: this.split.train[k], steps: cfg.localSteps, seed: trainSeed(seed, round, k), freezeA },
          stateKey,
        )
        adapters.push(out.adapter)
        lossSum += out.meanLoss
      }
      const updates: ClientUpdate[] = adapters.map((adapter, k) => ({ id: clientId(k), samples: this.samples[k], adapter }))
      let agg: Pick<RoundAggregate, 'merge' | 'global' | 'nextAdapter'>
      let next: (AdapterSet | undefined)[]
      try {
        agg = scaleAggregate(strategy.aggregate(updates), x)
        next = ranks.map((r) => {
          const alpha = alphaFor(r)
          return agg.nextAdapter({ rank: r, alpha, scaling: loraScaling(alpha, r) })
        })
      } catch (err) {
        if (!(err instanceof AggregationError)) throw err
        this.log(`${label} round ${round}: not applicable: ${err.message}`)
        return record([], { applicable: false, reason: `${err.name}: ${err.message}` })
      }
      const check = checkAggregation(this.shapes, adapters, this.samples, agg.merge, agg.global, next, x)
      for (const s of this.shapes) {
        const terms = agg.merge.get(s.name)
        if (terms !== undefined && terms.length > 0) mergeIntoWeightsSync(w.get(s.name) as Float32Array, s, terms)
      }
      const scores = summarizeScores(await this.score(w, agg.global), this.split.eval)
      starts = next
      rounds.push({
        round,
        trainLoss: lossSum / cfg.clients,
        ...scores,
        aggError: check.aggError,
        startError: check.startError,
        bytes: roundBytes(strategy, this.shapes, ranks),
      })
      this.log(
        `${label} round ${round}/${cfg.rounds}: train ${fmt(lossSum / cfg.clients)}, held-out ${fmt(scores.evalLoss.pooled)}, ` +
          `acc ${fmt(scores.tokenAccuracy.pooled)}${exactNote(scores)}, agg err ${check.aggError.toExponential(2)} (${secs(tr)})`,
      )
    }
    return record(rounds)
  }

  /**
   * One adapter trained on the pooled data, K * S steps per round, warm-started across
   * rounds, at learning rate `lr` (named `centralized lr=X` when the lr is swept).
   */
  private async runCentralized(setting: SettingName, seed: number, lr: number, swept: boolean): Promise<RunRecord> {
    const t0 = performance.now()
    const cfg = this.config
    const ranks = ranksFor(setting, cfg.clients)
    const rank = cfg.centralRank ?? Math.max(...ranks)
    const method = swept ? `centralized lr=${lr}` : 'centralized'
    const label = `[${setting} seed ${seed} ${method} r=${rank}]`
    this.setBase(this.initial)
    const stateKey = weightsDigest(this.shapes, this.initial)
    let adapter = freshAdapter(this.shapes, rank, seed, 1)
    const rounds: RoundRecord[] = [this.round0()]
    for (let round = 1; round <= cfg.rounds; round++) {
      const tr = performance.now()
      this.setBase(this.initial)
      const out = await this.train(
        { start: adapter, examples: this.trainAll, steps: cfg.localSteps * cfg.clients, seed: `flora-eval/${seed}/central/round-${round}`, freezeA: false, lr },
        stateKey,
      )
      adapter = out.adapter
      const terms = new Map(this.shapes.map((s) => [s.name, adapterTerms(adapter, s.name)]))
      const scores = summarizeScores(await this.score(this.initial, terms), this.split.eval)
      rounds.push({ round, trainLoss: out.meanLoss, ...scores, aggError: null, startError: null, bytes: null })
      this.log(`${label} round ${round}/${cfg.rounds}: train ${fmt(out.meanLoss)}, held-out ${fmt(scores.evalLoss.pooled)}${exactNote(scores)} (${secs(tr)})`)
    }
    return {
      setting,
      method,
      kind: 'reference',
      globalScale: 1,
      seed,
      ranks: [rank],
      applicable: true,
      lr,
      rounds,
      seconds: (performance.now() - t0) / 1000,
    }
  }

  /**
   * Every client keeps training its own adapter on its own data (warm start, no exchange).
   * Per round, each client's model is scored on its own held-out data ("pooled" is then the
   * token-weighted mean of those); after the last round each client model is also scored
   * on the whole held-out set (crossEvalLoss, the mean over clients).
   */
  private async runLocalOnly(setting: SettingName, seed: number): Promise<RunRecord> {
    const t0 = performance.now()
    const cfg = this.config
    const ranks = ranksFor(setting, cfg.clients)
    const label = `[${setting} seed ${seed} local-only]`
    const stateKey = weightsDigest(this.shapes, this.initial)
    const own: (AdapterSet | undefined)[] = ranks.map(() => undefined)
    const rounds: RoundRecord[] = [this.round0()]
    const n = this.evalAll.length
    let cross: { loss: number; acc: number; exact: number } | undefined
    for (let round = 1; round <= cfg.rounds; round++) {
      const tr = performance.now()
      let lossSum = 0
      this.setBase(this.initial)
      for (let k = 0; k < cfg.clients; k++) {
        const start = own[k] ?? freshAdapter(this.shapes, ranks[k], seed, 1)
        const out = await this.train(
          { start, examples: this.split.train[k], steps: cfg.localSteps, seed: trainSeed(seed, round, k), freezeA: false },
          stateKey,
        )
        own[k] = out.adapter
        lossSum += out.meanLoss
      }
      const all: ExampleScores = {
        lossSum: new Float64Array(n),
        tokens: new Float64Array(n),
        correct: new Float64Array(n),
        ...(this.base?.exactMatch !== undefined ? { exact: new Float64Array(n) } : {}),
      }
      const crossLoss: number[] = []
      const crossAcc: number[] = []
      const crossExact: number[] = []
      for (let k = 0; k < cfg.clients; k++) {
        const terms = new Map(this.shapes.map((s) => [s.name, adapterTerms(own[k], s.name)]))
        if (round === cfg.rounds) {
          const fullScores = await this.score(this.initial, terms)
          const full = summarizeScores(fullScores, [this.evalAll])
          crossLoss.push(full.evalLoss.pooled)
          crossAcc.push(full.tokenAccuracy.pooled)
          crossExact.push(full.exactMatch?.pooled ?? NaN)
          scatterScores(all, this.split.eval[k], pick(fullScores, this.split.eval[k]))
        } else if (this.split.eval[k].length > 0) {
          scatterScores(all, this.split.eval[k], await this.score(this.initial, terms, this.split.eval[k]))
        }
      }
      if (round === cfg.rounds) cross = { loss: mean(crossLoss), acc: mean(crossAcc), exact: mean(crossExact) }
      const scores = summarizeScores(all, this.split.eval)
      rounds.push({ round, trainLoss: lossSum / cfg.clients, ...scores, aggError: null, startError: null, bytes: null })
      this.log(`${label} round ${round}/${cfg.rounds}: train ${fmt(lossSum / cfg.clients)}, own held-out ${fmt(scores.evalLoss.pooled)}${exactNote(scores)} (${secs(tr)})`)
    }
    return {
      setting,
      method: 'local-only',
      kind: 'reference',
      globalScale: 1,
      seed,
      ranks,
      applicable: true,
      rounds,
      ...(cross !== undefined ? { crossEvalLoss: cross.loss, crossTokenAccuracy: cross.acc, ...(Number.isNaN(cross.exact) ? {} : { crossExactMatch: cross.exact }) } : {}),
      seconds: (performance.now() - t0) / 1000,
    }
  }
}

/** Scores of `idx` out of full-set scores, in idx order. */
function pick(s: ExampleScores, idx: readonly number[]): ExampleScores {
  const exact = s.exact
  return {
    lossSum: Float64Array.from(idx, (i) => s.lossSum[i]),
    tokens: Float64Array.from(idx, (i) => s.tokens[i]),
    correct: Float64Array.from(idx, (i) => s.correct[i]),
    ...(exact !== undefined ? { exact: Float64Array.from(idx, (i) => exact[i]) } : {}),
  }
}

/** ", exact match X" when the scores have it. */
function exactNote(s: { exactMatch?: ScoreSummary }): string {
  return s.exactMatch === undefined ? '' : `, exact match ${fmt(s.exactMatch.pooled)}`
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length
}

function fmt(v: number): string {
  return Number.isFinite(v) ? v.toFixed(4) : String(v)
}

function secs(t: number): string {
  return `${((performance.now() - t) / 1000).toFixed(1)} s`
}

/** Summary rows: one per (setting, method, global scale), statistics over seeds. */
export function summarize(runs: readonly RunRecord[]): SummaryRow[] {
  const groups = new Map<string, RunRecord[]>()
  for (const r of runs) {
    const key = `${r.setting}\0${r.method}\0${r.globalScale}`
    const g = groups.get(key)
    if (g === undefined) groups.set(key, [r])
    else g.push(r)
  }
  const rows: SummaryRow[] = []
  for (const g of groups.values()) {
    const first = g[0]
    const head = { setting: first.setting, method: first.method, kind: first.kind, globalScale: first.globalScale }
    if (!first.applicable) {
      rows.push({ ...head, applicable: false, ...(first.reason !== undefined ? { reason: first.reason } : {}) })
      continue
    }
    const last = (r: RunRecord): RoundRecord => r.rounds[r.rounds.length - 1]
    const trained = (r: RunRecord): RoundRecord[] => r.rounds.filter((x) => x.round > 0)
    const meanOf = (xs: readonly (number | null)[]): number => {
      const v = xs.filter((x): x is number => x !== null)
      return v.length === 0 ? NaN : mean(v)
    }
    const firstBytes = trained(first)[0]?.bytes ?? null
    rows.push({
      ...head,
      applicable: true,
      evalLoss: stat(g.map((r) => last(r).evalLoss.pooled)),
      tokenAccuracy: stat(g.map((r) => last(r).tokenAccuracy.pooled)),
      ...(last(first).exactMatch !== undefined ? { exactMatch: stat(g.map((r) => last(r).exactMatch?.pooled ?? NaN)) } : {}),
      bestEvalLoss: stat(g.map((r) => Math.min(...trained(r).map((x) => x.evalLoss.pooled)))),
      worstClientLoss: stat(g.map((r) => Math.max(...last(r).evalLoss.perClient.filter((v) => !Number.isNaN(v))))),
      ...(first.kind === 'strategy'
        ? {
            aggError: stat(g.map((r) => meanOf(trained(r).map((x) => x.aggError)))),
            startError: stat(g.map((r) => meanOf(trained(r).map((x) => x.startError)))),
          }
        : {}),
      ...(firstBytes !== null ? { bytes: firstBytes } : {}),
      ...(first.crossEvalLoss !== undefined ? { crossEvalLoss: stat(g.map((r) => r.crossEvalLoss ?? NaN)) } : {}),
      ...(first.crossExactMatch !== undefined ? { crossExactMatch: stat(g.map((r) => r.crossExactMatch ?? NaN)) } : {}),
    })
  }
  return rows
}

function machineInfo(): Record<string, string | number> {
  const c = cpus()
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: c.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    platform: `${platform()} ${process.arch}`,
    node: process.version,
  }
}
