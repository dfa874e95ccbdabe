/**
 * Strategy registry. Strategies are pure functions of a round's updates (see types.ts);
 * the registry lets configuration and the CLI pick one by name.
 */
import { DuplicateStrategyError, UnknownStrategyError } from './errors.js'
import type { Strategy } from './types.js'

export type { AdapterTarget, ClientUpdate, LowRankTerm, ModuleTerms, RoundAggregate, Strategy } from './types.js'

const registry = new Map<string, Strategy>()

/** Registers a strategy under its name; throws DuplicateStrategyError if the name is taken (unless `replace`). */
export function registerStrategy(strategy: Strategy, options: { readonly replace?: boolean } = {}): void {
  if (registry.has(strategy.name) && options.replace !== true) {
    throw new DuplicateStrategyError(`aggregation strategy '${strategy.name}' is already registered`)
  }
  registry.set(strategy.name, strategy)
}

/** The strategy registered as `name`; throws UnknownStrategyError otherwise. */
export function getStrategy(name: string): Strategy {
  const s = registry.get(name)
  if (s === undefined) throw new UnknownStrategyError(name, listStrategies())
  return s
}

/** Registered strategy names, sorted. */
export function listStrategies(): string[] {
  return [...registry.keys()].sort()
}

/** True when `name` is registered. */
export function hasStrategy(name: string): boolean {
  return registry.has(name)
}
