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
import type { LoraModule, ModuleShape } from '../lora/types.js'
import {
  checkTarget,
  factorBytes,
  prepareRound,
  requireEqualRanks,
  requireEqualScaling,
  targetModule,
  termsMap,
  weightedSum,
} from './common.js'
import { UnsupportedTargetError } from './errors.js'
import type { AdapterTarget, ClientUpdate, LowRankTerm, RoundAggregate, Strategy } from './types.js'

/** B scaled so that target.scaling * B' A equals s * B A; an exact copy when the scalings agree. */
export function rescaleB(b: Float32Array, from: number, to: number): Float32Array {
  if (Object.is(from, to)) return b.slice()
  const f = from / to
  const out = new Float32Array(b.length)
  for (let i = 0; i < b.length; i++) out[i] = b[i] * f
  return out
}

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
    return {
      strategy: 'fedit',
      clients: round.clients,
      weights: round.weights,
      merge: new Map(),
      global: termsMap(global.map(([mod, t]) => [mod.name, [t]] as const)),
      nextAdapter(target: AdapterTarget) {
        checkTarget('fedit', target)
        const modules: LoraModule[] = global.map(([mod, t]) => {
          if (target.rank !== t.rank) {
            throw new UnsupportedTargetError(`fedit: the global adapter of '${mod.name}' has rank ${t.rank}, target asks for ${target.rank}`)
          }
          return targetModule(mod, target, t.loraA.slice(), rescaleB(t.loraB, t.coef, target.scaling))
        })
        return { modules }
      },
    }
  },
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement = 4): number {
    return factorBytes(modules, rank, bytesPerElement)
  },
}
