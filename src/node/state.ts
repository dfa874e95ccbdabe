/**
 * The canonical shared state: the target modules' base weights (named Float32Arrays), the
 * global adapter of strategies that keep one (empty for FLoRA), the round it is at, and
 * its hash. The merge happens here, outside any training backend (docs/MERGE.md), so
 * the next state is a pure function of (state, the manifest's adapters, their order).
 */
import { getStrategy } from '../aggregation/index.js'
import { boundRound, type BoundedRound, type ContributionBounds } from '../aggregation/bounds.js'
import { mergeIntoWeights } from '../aggregation/merge.js'
import type { ClientUpdate, ModuleTerms, RoundAggregate } from '../aggregation/types.js'
import { computeStateHash } from './state-hash.js'
import type { ModuleShape } from '../lora/types.js'

export interface SwarmState {
  /** Last completed round (0: the base model). */
  readonly round: number
  readonly weights: ReadonlyMap<string, Float32Array>
  /** Global adapter terms kept on top of the weights (FedIT & co.); empty for FLoRA. */
  readonly global: ModuleTerms
  /** The aggregate that produced this state, for the next round's warm start (undefined at round 0). */
  readonly aggregate?: RoundAggregate
  readonly hash: string
}

/** The round-0 state over the given weights (copied, so the caller may keep its arrays). */
export function genesisState(weights: ReadonlyMap<string, Float32Array>, shapes: readonly ModuleShape[]): SwarmState {
  const copy = new Map<string, Float32Array>()
  for (const name of [...weights.keys()].sort()) copy.set(name, Float32Array.from(weights.get(name) as Float32Array))
  const global: ModuleTerms = new Map()
  return { round: 0, weights: copy, global, hash: computeStateHash(copy, global, shapes) }
}

export interface ApplyOptions {
  /** Merge worker threads (0: calling thread). Results are bit-identical for any value. */
  workers?: number
  /** The swarm's contribution bounds (weights cap, per-module norm clip); none when absent. */
  bounds?: ContributionBounds
  /** Told the bounded weights and the clipped modules of each contributor. */
  onBounded?: (report: BoundedRound['report']) => void
}

/** A round whose merge would leave a weight NaN or infinite: never committed. */
export class NonFiniteStateError extends Error {
  override readonly name = 'NonFiniteStateError'
}

/**
 * The state after merging a round's updates with a strategy. Untouched modules share
 * their arrays with `state` (copy on write), so keep states immutable. With no updates
 * the weights and global adapter carry over unchanged.
 */
export async function applyRound(
  state: SwarmState,
  strategyName: string,
  shapes: readonly ModuleShape[],
  updates: readonly ClientUpdate[],
  options: ApplyOptions = {},
): Promise<SwarmState> {
  const round = state.round + 1
  if (updates.length === 0) return { round, weights: state.weights, global: state.global, hash: state.hash }
  if (options.bounds != null) {
    const bounded = boundRound(updates, state.weights, options.bounds)
    options.onBounded?.(bounded.report)
    updates = bounded.updates
  }
  const aggregate = getStrategy(strategyName).aggregate(updates)
  const byName = new Map(shapes.map((s) => [s.name, s]))
  const weights = new Map(state.weights)
  for (const [name, terms] of aggregate.merge) {
    const shape = byName.get(name)
    const w = state.weights.get(name)
    if (shape == null || w == null) throw new Error(`merge targets unknown module ${name}`)
    if (terms.length === 0) continue
    const next = Float32Array.from(w)
    await mergeIntoWeights(next, shape, terms, { workers: options.workers ?? 0 })
    for (let i = 0; i < next.length; i++) {
      if (!Number.isFinite(next[i])) throw new NonFiniteStateError(`round ${round}: the merge leaves ${name}[${i}] = ${next[i]}; a state that is not finite is never committed`)
    }
    weights.set(name, next)
  }
  for (const [name, terms] of aggregate.global) {
    for (const t of terms) {
      if (!Number.isFinite(t.coef)) throw new NonFiniteStateError(`round ${round}: the global adapter of ${name} has coefficient ${t.coef}`)
    }
  }
  return { round, weights, global: aggregate.global, aggregate, hash: computeStateHash(weights, aggregate.global, shapes) }
}
