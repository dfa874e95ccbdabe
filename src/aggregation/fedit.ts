/**
 * FedIT: FedAvg on the LoRA factors (Zhang et al. 2024), the standard baseline.
 *
 * Formula (equal rank r and scaling s on every client, p_k = n_k / sum_j n_j):
 *   A = sum_k p_k A_k,   B = sum_k p_k B_k     (float64 sums in canonical order, then fl32)
 *   global adapter: s B A, kept on top of the unchanged base and trained further (warm start)
 * Exact: no. The aggregation error is
 *   sum_k p_k s B_k A_k - s B A = s sum_k p_k (B_k - B)(A_k - A)
 * (cross terms of the averaged factors). Needs equal ranks (UnequalRanksError) and equal
 * scalings (IncompatibleUpdatesError).
 * Bytes per client per round: upload r (in + out) floats per module; download the global
 * adapter, r (in + out), from a server — in this peer-to-peer setting every peer fetches
 * every other adapter instead: sum_{j != k} r (in + out).
 */
import type { ModuleShape } from '../lora/types.js'
import {
  factorBytes,
  globalAdapterAggregate,
  prepareRound,
  requireEqualRanks,
  requireEqualScaling,
  weightedSum,
} from './common.js'
import type { ClientUpdate, LowRankTerm, RoundAggregate, Strategy } from './types.js'

export const feditStrategy: Strategy = {
  name: 'fedit',
  exact: false,
  requiresEqualRanks: true,
  aggregate(updates: readonly ClientUpdate[]): RoundAggregate {
    const round = prepareRound('fedit', updates)
    const global = round.modules.map((mod) => {
      const rank = requireEqualRanks('fedit', mod)
      const s = requireEqualScaling('fedit', mod)
      const a = Float32Array.from(weightedSum(mod.perClient.map((m) => m.loraA), round.weights, rank * mod.inFeatures))
      const b = Float32Array.from(weightedSum(mod.perClient.map((m) => m.loraB), round.weights, mod.outFeatures * rank))
      const term: LowRankTerm = { coef: s, rank, loraA: a, loraB: b }
      return [mod, term] as const
    })
    return globalAdapterAggregate('fedit', round, global)
  },
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement = 4): number {
    return factorBytes(modules, rank, bytesPerElement)
  },
}
