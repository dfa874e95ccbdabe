/**
 * src/aggregation: aggregation strategies and the deterministic merge kernel. Pure
 * functions on typed arrays, no I/O; knows nothing of tfjs or libp2p.
 * Importing this module registers the six built-in strategies.
 */
import { feditStrategy } from './fedit.js'
import { ffaStrategy } from './ffa.js'
import { flexloraStrategy } from './flexlora.js'
import { floraStrategy } from './flora.js'
import { floraPdStrategy } from './flora-pd.js'
import { hasStrategy, registerStrategy } from './strategy.js'
import type { Strategy } from './types.js'
import { zeroPaddingStrategy } from './zero-padding.js'

export * from './errors.js'
export type * from './types.js'
export {
  closeDefaultMergePools,
  defaultMergePool,
  defaultMergeWorkers,
  denseDelta,
  mergeFlops,
  mergeIntoWeights,
  mergeIntoWeightsSync,
  MergePool,
  wasmSimdAvailable,
  type MergeBackend,
  type MergeOptions,
  type MergePoolOptions,
} from './merge.js'
export { stateHash, stateHashStreamed, STATE_HASH_MAGIC, type DeferredNamedTensor, type NamedTensor } from './state-hash.js'
export { getStrategy, hasStrategy, listStrategies, registerStrategy } from './strategy.js'
export { floraStrategy } from './flora.js'
export { floraPdStrategy } from './flora-pd.js'
export { feditStrategy } from './fedit.js'
export { zeroPaddingStrategy } from './zero-padding.js'
export { flexloraStrategy, stackedSvd, type FlexLoraAggregate, type FlexLoraStrategy, type ModuleSvd } from './flexlora.js'
export { ffaStrategy } from './ffa.js'

/** The six built-in strategies, in a fixed order. */
export const BUILTIN_STRATEGIES: readonly Strategy[] = [floraStrategy, floraPdStrategy, feditStrategy, zeroPaddingStrategy, flexloraStrategy, ffaStrategy]

/** Registers the built-ins (idempotent; a name already taken by the same object is skipped). */
export function registerBuiltinStrategies(): void {
  for (const s of BUILTIN_STRATEGIES) if (!hasStrategy(s.name)) registerStrategy(s)
}

registerBuiltinStrategies()
