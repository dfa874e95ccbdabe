/**
 * Types of the evaluation harness: the small interface a model must offer to be simulated
 * (SimBackend), the run configuration, and the shape of results.json.
 *
 * The harness never touches tfjs: a backend owns the model, its task data and the local
 * trainer, and exposes only base weights of the adapted modules, "train this adapter for
 * S steps on these examples" and "score these held-out examples". Everything federated
 * (partitions, aggregation, merges, metrics) lives on plain typed arrays in the harness,
 * so the toy backend (src/eval/toy.ts) and the real model (src/eval/model-backend.ts) run
 * through the very same code.
 */
import type { AdapterSet, ModuleShape } from '../lora/types.js'

/** What the harness needs to know about an example: its category (for the non-IID split). */
export interface TaskExample {
  readonly category: string
}

/**
 * Per-example scores of the held-out set under the backend's current base weights (no
 * adapter): summed next-token loss over the response tokens, the number of those tokens,
 * and how many of them the argmax prediction got right (teacher forcing).
 */
export interface ExampleScores {
  readonly lossSum: Float64Array
  readonly tokens: Float64Array
  readonly correct: Float64Array
  /**
   * Tasks with accepted answers (the skills suite): 1 where the greedy answer is exactly an
   * accepted answer, token for token (every response token and the end token is the argmax
   * under teacher forcing, for some accepted answer), else 0. Absent for free-text tasks.
   */
  readonly exact?: Float64Array
}

export interface TrainJob {
  /** Adapter to start from; its ranks, alphas and scalings are kept. */
  readonly start: AdapterSet
  /** Indices into `trainExamples` the client owns. */
  readonly examples: readonly number[]
  readonly steps: number
  /** Seed of the batch order and dropout of this job. */
  readonly seed: string
  /** Train B only (FFA-LoRA). */
  readonly freezeA: boolean
  /** Learning rate of this job (unset: the run's lr). */
  readonly lr?: number
}

export interface TrainOutcome {
  readonly adapter: AdapterSet
  /** Mean training loss over the job's steps. */
  readonly meanLoss: number
}

/** A model + task the harness can simulate federated rounds on. */
export interface SimBackend {
  /** Human-readable facts for the report (model name, sizes, backend...). */
  readonly description: Readonly<Record<string, string | number | boolean>>
  /** The modules LoRA adapts (q_proj and v_proj of every layer), canonical order. */
  readonly shapes: readonly ModuleShape[]
  readonly trainExamples: readonly TaskExample[]
  readonly evalExamples: readonly TaskExample[]
  /** Exact match on the whole held-out set of the answer that ignores the question (tasks with accepted answers). */
  readonly ignoreQuestionBaseline?: number
  /** A copy of an adapted module's base weight, [out, in] row-major. */
  getBaseWeight(module: string): Float32Array
  /** Replaces an adapted module's base weight (values copied). */
  setBaseWeight(module: string, weight: Float32Array): void
  /** Local LoRA training on top of the current base weights; deterministic given the job. */
  train(job: TrainJob): Promise<TrainOutcome>
  /** Scores held-out examples (indices into `evalExamples`) with the current base weights. */
  evaluate(examples: readonly number[]): Promise<ExampleScores>
  dispose(): void | Promise<void>
}

/** Rank settings of the paper: rank 16 everywhere, or [64, 32, 16, 16, 8, 8, 4, 4, 4, 4]. */
export type SettingName = 'homo16' | 'hetero'

/** Methods besides the aggregation strategies. */
export type ReferenceName = 'centralized' | 'local-only'

/** The task the model backend trains and scores: WordNet definitions, or the skills suite (exact match). */
export type EvalData = 'wordnet' | 'skills'

export interface EvalConfig {
  readonly backend: 'model' | 'toy'
  /** Task of the model backend (default wordnet). */
  readonly data?: EvalData
  /** Linear modules LoRA adapts (model backend; default: the recipe's q_proj, v_proj). */
  readonly targets?: readonly string[]
  readonly clients: number
  readonly rounds: number
  readonly localSteps: number
  readonly settings: readonly SettingName[]
  readonly strategies: readonly string[]
  /** Also run the centralized and local-only references. */
  readonly references: boolean
  readonly seeds: number
  /** Multipliers of the aggregated update; 1 is the method as published. */
  readonly globalScales: readonly number[]
  /** Seed of the client partition (fixed across training seeds). */
  readonly partitionSeed: number
  /** Category shards per client (2: each client is dominated by ~2 lexicographer files). */
  readonly shardsPerClient: number
  /** Size of the training pool shared out to the clients. */
  readonly trainExamples: number
  /** Size of the held-out set (split over the clients by category). */
  readonly evalExamples: number
  readonly batchSize: number
  readonly lr: number
  readonly maxLen: number
  /** Rank of the centralized reference (unset: the largest client rank of the setting). */
  readonly centralRank?: number
  /**
   * Learning rates of the centralized reference (a sweep; unset: just `lr`). Each is its own
   * row, `centralized lr=X`; the report names the best one the tuned reference.
   */
  readonly centralLrs?: readonly number[]
  /** Model directory (model backend). */
  readonly modelDir?: string
  readonly quick: boolean
  readonly out: string
}

/** Mean, sample standard deviation and count of one metric over seeds. */
export interface Stat {
  readonly mean: number
  readonly std: number
  readonly n: number
}

export interface ScoreSummary {
  /** Token-weighted mean loss / accuracy over all held-out examples. */
  readonly pooled: number
  /** Per client, over that client's held-out examples (client order). */
  readonly perClient: readonly number[]
}

export interface BytesPerClient {
  /** Mean over clients of what one client uploads (its adapter's factors, f32). */
  readonly up: number
  /** Mean inbound bytes of a peer in the serverless exchange: every other client's upload. */
  readonly downP2P: number
  /** Mean of what a server would send a client (FLoRA: the whole stack; others: the global adapter at the client's rank). */
  readonly downServer: number
}

export interface RoundRecord {
  readonly round: number
  /** Mean over clients of their mean local training loss this round (NaN at round 0). */
  readonly trainLoss: number
  readonly evalLoss: ScoreSummary
  readonly tokenAccuracy: ScoreSummary
  /** Share of held-out questions answered exactly (per question, not per token); tasks with accepted answers only. */
  readonly exactMatch?: ScoreSummary
  /**
   * ||dW_agg - x sum_k p_k s_k B_k A_k||_F / ||x sum_k p_k s_k B_k A_k||_F over all adapted
   * modules (x the global scale); null for references and round 0.
   */
  readonly aggError: number | null
  /**
   * sum_k p_k ||s_k B'_k A'_k - G||_F / ||G||_F: how far the adapters the clients start the
   * next round from are from the global update G they should represent (0 for FLoRA, FedIT,
   * FFA; the SVD / zero-padding truncation for FlexLoRA and zero-padding).
   */
  readonly startError: number | null
  readonly bytes: BytesPerClient | null
}

export interface RunRecord {
  readonly setting: SettingName
  /** Strategy name or reference name. */
  readonly method: string
  readonly kind: 'strategy' | 'reference'
  readonly globalScale: number
  readonly seed: number
  readonly ranks: readonly number[]
  readonly applicable: boolean
  /** Why a method does not apply (the strategy's own error message). */
  readonly reason?: string
  readonly rounds: readonly RoundRecord[]
  /** Local-only: mean over clients of each client's model scored on the whole pooled held-out set (final round). */
  readonly crossEvalLoss?: number
  readonly crossTokenAccuracy?: number
  readonly crossExactMatch?: number
  /** Learning rate of the run (set on centralized runs, which may sweep it). */
  readonly lr?: number
  /** Wall-clock seconds (not part of the reproducibility contract). */
  readonly seconds: number
}

export interface SummaryRow {
  readonly setting: SettingName
  readonly method: string
  readonly kind: 'strategy' | 'reference'
  readonly globalScale: number
  readonly applicable: boolean
  readonly reason?: string
  /** Final-round pooled held-out loss and token accuracy, over seeds. */
  readonly evalLoss?: Stat
  readonly tokenAccuracy?: Stat
  /** Final-round pooled exact match, over seeds (tasks with accepted answers). */
  readonly exactMatch?: Stat
  /** Best round's pooled loss (the minimum over rounds), over seeds. */
  readonly bestEvalLoss?: Stat
  /** Worst client's final loss, over seeds. */
  readonly worstClientLoss?: Stat
  /** Mean over rounds of the aggregation error, over seeds. */
  readonly aggError?: Stat
  readonly startError?: Stat
  readonly bytes?: BytesPerClient
  readonly crossEvalLoss?: Stat
  readonly crossExactMatch?: Stat
}

export interface ClientInfo {
  readonly id: string
  readonly trainSize: number
  readonly evalSize: number
  /** Largest categories with their counts. */
  readonly topCategories: ReadonlyArray<readonly [string, number]>
}

export interface EvalResults {
  readonly version: 1
  readonly config: EvalConfig
  readonly backend: Readonly<Record<string, string | number | boolean>>
  readonly machine: Readonly<Record<string, string | number>>
  readonly clients: readonly ClientInfo[]
  /** The base model before any training (round 0 of every run). */
  readonly base: { readonly evalLoss: ScoreSummary; readonly tokenAccuracy: ScoreSummary; readonly exactMatch?: ScoreSummary }
  /**
   * Exact match of the answer that ignores the question (each task's most common training
   * answer) on the held-out set; tasks with accepted answers only.
   */
  readonly ignoreQuestionBaseline?: number
  readonly runs: readonly RunRecord[]
  readonly summary: readonly SummaryRow[]
  readonly seconds: number
  /** Training jobs answered from the cache (identical start state, data and seed). */
  readonly cacheHits: number
}
