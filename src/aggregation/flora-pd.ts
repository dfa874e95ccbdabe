/**
 * FLoRA with principal-direction A init ("flora-pd"): FLoRA's exact stacked merge, but the
 * next round starts A in the directions the federation just moved instead of at random.
 *
 * Formula: the merge is FLoRA's, term for term (p_k = n_k / sum_j n_j, s_k the client's
 * scaling, coef_k = fl64(p_k * s_k), canonical client order):
 *   W <- W + sum_k p_k s_k B_k A_k = W + dW
 * Next round, a client of rank r starts from, per module,
 *   dW = U S V^T (stackedSvd, as FlexLoRA),   A' = sqrt(1/3) V^T[:r, :],   B' = 0
 * the top-r right singular vectors (principal input directions) of this round's dW, each
 * scaled to the expected squared row norm of a fresh LoRA's A (entries U(+-1/sqrt(in)):
 * in * 1/(3 in) = 1/3). Where r exceeds the number of singular vectors, the rows are
 * completed to an orthonormal basis deterministically (completeBasis, e_0, e_1, ... in
 * order); r > in cannot have orthonormal rows and is refused (UnsupportedTargetError).
 * Exact: yes, for any mix of ranks. B' = 0, so the start adapter adds nothing (s B' A' = 0)
 * and what a client sends after training is exactly its update s_k B_k A_k on top of the
 * merged W, as with a fresh LoRA; the merge itself is FLoRA's, bit for bit. Only float
 * rounding remains, bounded in merge.ts. There is no global adapter. The SVD is computed
 * lazily per module on the first nextAdapter() call and cached; float64 throughout, no
 * randomness, so every peer derives the same start adapter bit for bit.
 * Why: FLoRA restarts every round from a random A and B = 0, so each round's update starts
 * in random input directions. Starting A along the directions the federation just moved
 * lets a few local steps go further along them, without giving up exactness.
 * Measured (docs/RESULTS.md, 10 clients, 5 seeds): with many short rounds (10 x 3 local
 * steps) it beats FLoRA by 2.1 (equal ranks) and 6.6 (ranks 64..4) points of held-out exact
 * match; with one local epoch per round it does not help (-2.6 and +0.7, not resolved).
 * Bytes per client per round: as FLoRA, upload r_k (in + out) floats per module; download
 * sum_{j != k} r_j (in + out) floats per module (every other adapter: each peer computes
 * the merge and the SVD itself; nothing extra goes on the wire).
 */
import type { LoraModule, ModuleShape } from '../lora/types.js'
import { type RoundModule, checkTarget, factorBytes, prepareRound, stackedTerms, targetModule, termsMap } from './common.js'
import { UnsupportedTargetError } from './errors.js'
import { type ModuleSvd, completeBasis, lazyStackedSvd } from './flexlora.js'
import type { AdapterTarget, ClientUpdate, RoundAggregate, Strategy } from './types.js'

/** Unit rows times sqrt(1/3) have a fresh A row's expected squared norm: in entries U(+-1/sqrt(in)) of variance 1/(3 in). */
const ROW_SCALE = Math.sqrt(1 / 3)

/** Start adapter of rank target.rank: A' = sqrt(1/3) V^T[:r, :] (completed), B' = 0. */
function principalStart(mod: RoundModule, svd: ModuleSvd, target: AdapterTarget): LoraModule {
  const r = target.rank
  const inF = mod.inFeatures
  const rows = completeBasis(svd.v.slice(0, Math.min(r, svd.v.length)), r, inF)
  if (rows.length < r) throw new UnsupportedTargetError(`flora-pd: module '${mod.name}': could only complete ${rows.length} of ${r} orthonormal A rows`)
  const a = new Float32Array(r * inF)
  for (let t = 0; t < r; t++) {
    const v = rows[t]
    for (let j = 0; j < inF; j++) a[t * inF + j] = v[j] * ROW_SCALE
  }
  return targetModule(mod, target, a, new Float32Array(mod.outFeatures * r))
}

export const floraPdStrategy: Strategy = {
  name: 'flora-pd',
  exact: true,
  requiresEqualRanks: false,
  aggregate(updates: readonly ClientUpdate[]): RoundAggregate {
    const round = prepareRound('flora-pd', updates)
    const terms = round.modules.map((m) => [m, stackedTerms(m, round.weights)] as const)
    const svdOf = lazyStackedSvd()
    return {
      strategy: 'flora-pd',
      clients: round.clients,
      weights: round.weights,
      merge: termsMap(terms.map(([m, t]) => [m.name, t] as const)),
      global: new Map(),
      nextAdapter(target: AdapterTarget) {
        checkTarget('flora-pd', target)
        for (const [m] of terms) {
          if (target.rank > m.inFeatures) {
            throw new UnsupportedTargetError(`flora-pd: module '${m.name}' has ${m.inFeatures} input features; rank ${target.rank} cannot have orthonormal A rows`)
          }
        }
        return { modules: terms.map(([m, t]) => principalStart(m, svdOf(m, t), target)) }
      },
    }
  },
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement = 4): number {
    return factorBytes(modules, rank, bytesPerElement)
  },
}
