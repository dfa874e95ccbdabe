/**
 * Zero-padding (HetLoRA-style, Cho et al. 2024): average heterogeneous ranks by padding.
 *
 * Formula (r_max = max_k r_k, p_k = n_k / sum_j n_j): pad A_k with zero rows and B_k with
 * zero columns up to r_max, fold each client's scaling into B, and average:
 *   A[t, :] = sum_{k : r_k > t} p_k A_k[t, :]
 *   B[:, t] = sum_{k : r_k > t} p_k s_k B_k[:, t]      (float64 sums in canonical order, then fl32)
 *   global adapter: 1 * B A (rank r_max); a client of rank r truncates:
 *   A' = A[:r, :],  B' = B[:, :r] / s_client
 * Folding s_k into B keeps clients with different alpha/r comparable; with one common
 * scaling s this is exactly FedIT (s (sum p B)(sum p A)).
 * Exact: no: cross terms as in FedIT, plus the truncation for lower-rank clients.
 * Bytes per client per round: upload r_k (in + out) floats per module; download the padded
 * global, r_max (in + out), from a server (peer-to-peer: every other adapter,
 * sum_{j != k} r_j (in + out)).
 */
import type { LoraModule, ModuleShape } from '../lora/types.js'
import { checkTarget, factorBytes, prepareRound, targetModule, termsMap } from './common.js'
import { UnsupportedTargetError } from './errors.js'
import type { AdapterTarget, ClientUpdate, LowRankTerm, RoundAggregate, Strategy } from './types.js'

export const zeroPaddingStrategy: Strategy = {
  name: 'zero-padding',
  exact: false,
  requiresEqualRanks: false,
  aggregate(updates: readonly ClientUpdate[]): RoundAggregate {
    const round = prepareRound('zero-padding', updates)
    const p = round.weights
    const global = round.modules.map((mod) => {
      const { inFeatures: inF, outFeatures: out } = mod
      const rMax = Math.max(...mod.perClient.map((m) => m.rank))
      const a = new Float64Array(rMax * inF)
      const b = new Float64Array(out * rMax)
      mod.perClient.forEach((m, k) => {
        const r = m.rank
        for (let x = 0; x < r * inF; x++) a[x] += p[k] * m.loraA[x] // row t of A_k is row t of A
        const c = p[k] * m.scaling
        for (let i = 0; i < out; i++) {
          for (let t = 0; t < r; t++) b[i * rMax + t] += c * m.loraB[i * r + t]
        }
      })
      const term: LowRankTerm = { coef: 1, rank: rMax, loraA: Float32Array.from(a), loraB: Float32Array.from(b) }
      return { mod, term, b64: b }
    })
    return {
      strategy: 'zero-padding',
      clients: round.clients,
      weights: round.weights,
      merge: new Map(),
      global: termsMap(global.map((g) => [g.mod.name, [g.term]] as const)),
      nextAdapter(target: AdapterTarget) {
        checkTarget('zero-padding', target)
        const modules: LoraModule[] = global.map(({ mod, term, b64 }) => {
          const r = target.rank
          const rMax = term.rank
          if (r > rMax) {
            throw new UnsupportedTargetError(
              `zero-padding: module '${mod.name}' was aggregated at rank ${rMax}; a rank-${r} client would get dead (all-zero) components`,
            )
          }
          const a = term.loraA.slice(0, r * mod.inFeatures)
          const b = new Float32Array(mod.outFeatures * r)
          // B' = B[:, :r] / s_client, from the float64 sums (one rounding to float32)
          for (let i = 0; i < mod.outFeatures; i++) {
            for (let t = 0; t < r; t++) b[i * r + t] = b64[i * rMax + t] / target.scaling
          }
          return targetModule(mod, target, a, b)
        })
        return { modules }
      },
    }
  },
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement = 4): number {
    return factorBytes(modules, rank, bytesPerElement)
  },
}
