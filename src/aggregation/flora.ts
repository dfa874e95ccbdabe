/**
 * FLoRA stacking (Wang et al., NeurIPS 2024, arXiv 2409.05976) — the project's method.
 *
 * Formula: with p_k = n_k / sum_j n_j and s_k the client's own scaling,
 *   A_stack = [p_1 s_1 A_1 ; ... ; p_K s_K A_K]   ([sum r_k, in])
 *   B_stack = [B_1 | ... | B_K]                     ([out, sum r_k])
 *   W <- W + B_stack A_stack = W + sum_k p_k s_k B_k A_k
 * Exact: yes, for any mix of ranks (no cross terms); only float rounding remains, bounded
 * in merge.ts. The terms are returned as `merge` (coef_k = fl64(p_k * s_k), canonical
 * client order); there is no global adapter, and every client restarts from a fresh LoRA
 * of its own rank (nextAdapter => undefined).
 * Bytes per client per round: upload r_k (in + out) floats per module (its own adapter);
 * download sum_{j != k} r_j (in + out) floats per module (every other adapter), since each
 * peer computes the merge itself.
 */
import type { ModuleShape } from '../lora/types.js'
import { factorBytes, prepareRound, stackedTerms, termsMap } from './common.js'
import type { ClientUpdate, RoundAggregate, Strategy } from './types.js'

export const floraStrategy: Strategy = {
  name: 'flora',
  exact: true,
  requiresEqualRanks: false,
  aggregate(updates: readonly ClientUpdate[]): RoundAggregate {
    const round = prepareRound('flora', updates)
    return {
      strategy: 'flora',
      clients: round.clients,
      weights: round.weights,
      merge: termsMap(round.modules.map((m) => [m.name, stackedTerms(m, round.weights)] as const)),
      global: new Map(),
      nextAdapter: () => undefined,
    }
  },
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement = 4): number {
    return factorBytes(modules, rank, bytesPerElement)
  },
}
