/**
 * Types shared by the merge kernel and the aggregation strategies.
 * Tensors follow src/lora/types.ts: row-major Float32Array, W [out, in], A [r, in], B [out, r].
 */
import type { AdapterSet, ModuleShape } from '../lora/types.js'

/** Shape of the weight a merge writes into: W is [outFeatures, inFeatures]. */
export interface MatrixShape {
  readonly outFeatures: number
  readonly inFeatures: number
}

/** Contributes `coef * loraB @ loraA` to one module's weight. */
export interface LowRankTerm {
  /** Float64 multiplier, e.g. c_k = p_k * s_k for FLoRA. */
  readonly coef: number
  readonly rank: number
  /** [rank, inFeatures], row-major. */
  readonly loraA: Float32Array
  /** [outFeatures, rank], row-major. */
  readonly loraB: Float32Array
}

/** Low-rank terms per module name. Term order is the canonical summation order. */
export type ModuleTerms = ReadonlyMap<string, readonly LowRankTerm[]>

/** One client's (peer's) contribution to a round. */
export interface ClientUpdate {
  /** Unique within the round; updates are put in canonical order by id. */
  readonly id: string
  /** Number of local training examples n_k (> 0); p_k = n_k / sum_j n_j. */
  readonly samples: number
  readonly adapter: AdapterSet
}

/** What a client asks the aggregate for when it starts the next round. */
export interface AdapterTarget {
  readonly rank: number
  readonly alpha: number
  /** The client's scaling for `rank` (alpha / rank, or alpha / sqrt(rank) with rsLoRA). */
  readonly scaling: number
}

/** The outcome of one round of aggregation. */
export interface RoundAggregate {
  readonly strategy: string
  /** Client ids in the canonical order the aggregate was computed in. */
  readonly clients: readonly string[]
  /** p_k = n_k / sum_j n_j, aligned with `clients`. */
  readonly weights: readonly number[]
  /** Merged into the base weights for good (FLoRA: the stacked terms p_k s_k B_k A_k). */
  readonly merge: ModuleTerms
  /** The global adapter kept on top of the (new) base for evaluation and the next round; empty for FLoRA. */
  readonly global: ModuleTerms
  /** Adapter a client of this rank starts the next round from; undefined => fresh init (A random, B zero). */
  nextAdapter(target: AdapterTarget): AdapterSet | undefined
}

/** A Flower-like aggregation strategy: a pure function of the round's updates. */
export interface Strategy {
  readonly name: string
  /**
   * True when merge + global reproduce sum_k p_k s_k B_k A_k exactly in real arithmetic
   * (the only error left is floating-point rounding).
   */
  readonly exact: boolean
  /** True when all clients must use the same rank (and scaling) per module. */
  readonly requiresEqualRanks: boolean
  /** Aggregates one round. Updates may come in any order; the result does not depend on it. */
  aggregate(updates: readonly ClientUpdate[]): RoundAggregate
  /**
   * Bytes one client of rank `rank` uploads per round (its payload, f32 unless
   * `bytesPerElement` says otherwise); each file's header states the download side.
   */
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement?: number): number
}
