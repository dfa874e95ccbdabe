/**
 * src/eval: the evaluation harness. Simulates K federated clients in one process on a
 * SimBackend (the bundled model, or the plain-JS toy task) and compares the aggregation
 * strategies against centralized and local-only references.
 */
export type * from './types.js'
export { main, parseEvalArgs, createBackend, writeOutputs, UsageError, USAGE } from './cli.js'
export { runEvaluation, summarize, scaleAggregate, freshAdapter, clientId, type RunOptions } from './simulate.js'
export { checkAggregation, lowRankDense, roundBytes, summarizeScores, stat } from './metrics.js'
export { splitClients, splitHeldOut } from './split.js'
export { ranksFor, alphaFor, SETTINGS, PAPER_HETERO_RANKS, DEFAULT_CONFIG, QUICK_OVERRIDES, DEFAULT_STRATEGIES } from './settings.js'
export { renderMarkdown, methodLabel } from './report.js'
export { writePlots } from './plots.js'
export { createToyBackend, type ToyOptions } from './toy.js'
