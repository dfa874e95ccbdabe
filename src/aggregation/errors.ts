/**
 * Named errors of the aggregation layer. All extend AggregationError, so callers can
 * catch the layer's refusals in one place and branch on `err.name` or `instanceof`.
 */

/** Base class of every error thrown by src/aggregation. */
export class AggregationError extends Error {
  override readonly name: string = 'AggregationError'
}

/** A tensor's length does not match the shape it is used with. */
export class ShapeMismatchError extends AggregationError {
  override readonly name = 'ShapeMismatchError'
}

/** A strategy that averages factors was given adapters of different ranks. */
export class UnequalRanksError extends AggregationError {
  override readonly name = 'UnequalRanksError'
  constructor(
    readonly strategy: string,
    readonly module: string,
    readonly ranks: readonly number[],
  ) {
    super(
      `strategy '${strategy}' needs equal ranks, but module '${module}' has ranks ` +
        `[${ranks.join(', ')}]; use 'flora' (exact, any ranks), 'zero-padding' or 'flexlora'`,
    )
  }
}

/** Updates that cannot be combined by a strategy (different module sets, scalings, frozen A, ...). */
export class IncompatibleUpdatesError extends AggregationError {
  override readonly name = 'IncompatibleUpdatesError'
}

/** Bad round input: no updates, duplicate client ids, non-positive sample counts. */
export class InvalidRoundError extends AggregationError {
  override readonly name = 'InvalidRoundError'
}

/** getStrategy() with a name nobody registered. */
export class UnknownStrategyError extends AggregationError {
  override readonly name = 'UnknownStrategyError'
  constructor(readonly strategy: string, known: readonly string[]) {
    super(`unknown aggregation strategy '${strategy}'; known: ${known.join(', ')}`)
  }
}

/** registerStrategy() with a name that is already taken. */
export class DuplicateStrategyError extends AggregationError {
  override readonly name = 'DuplicateStrategyError'
}

/** Bad input to the state hash (duplicate names, shape/data disagreement). */
export class StateHashInputError extends AggregationError {
  override readonly name = 'StateHashInputError'
}

/** The merge worker pool was closed, or one of its workers died. */
export class MergePoolError extends AggregationError {
  override readonly name = 'MergePoolError'
}

/** nextAdapter() asked for something the round's aggregate cannot provide (e.g. a rank above what it holds). */
export class UnsupportedTargetError extends AggregationError {
  override readonly name = 'UnsupportedTargetError'
}
