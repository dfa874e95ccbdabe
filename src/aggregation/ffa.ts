/**
 * FFA-LoRA (Sun et al., ICLR 2024): every client keeps the same frozen random A0 (shared
 * seed) and trains only B.
 *
 * Formula (equal rank r and scaling s, A_k = A0 bit for bit on every client):
 *   B = sum_k p_k B_k          (float64 sum in canonical order, then fl32)
 *   global adapter: s B A0, kept on top of the unchanged base and trained further
 * Exact: yes: sum_k p_k s B_k A0 = s (sum_k p_k B_k) A0 (only B's float32 rounding remains).
 * Needs equal ranks (UnequalRanksError), equal scalings and identical A
 * (IncompatibleUpdatesError).
 * Bytes per client per round: upload r out floats per module (B only; A0 comes from the
 * seed); download r out from a server (peer-to-peer: sum_{j != k} r out).
 */
import type { ModuleShape } from '../lora/types.js'
import {
  globalAdapterAggregate,
  prepareRound,
  requireEqualRanks,
  requireEqualScaling,
  weightedSum,
} from './common.js'
import { IncompatibleUpdatesError } from './errors.js'
import type { ClientUpdate, LowRankTerm, RoundAggregate, Strategy } from './types.js'

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
  return true
}

export const ffaStrategy: Strategy = {
  name: 'ffa',
  exact: true,
  requiresEqualRanks: true,
  aggregate(updates: readonly ClientUpdate[]): RoundAggregate {
    const round = prepareRound('ffa', updates)
    const global = round.modules.map((mod) => {
      const rank = requireEqualRanks('ffa', mod)
      const s = requireEqualScaling('ffa', mod)
      const a0 = mod.perClient[0].loraA
      mod.perClient.forEach((m, k) => {
        if (!sameBits(m.loraA, a0)) {
          throw new IncompatibleUpdatesError(
            `ffa: module '${mod.name}': client '${round.clients[k]}' has a different A than '${round.clients[0]}'; FFA-LoRA needs one frozen A (shared seed)`,
          )
        }
      })
      const b = Float32Array.from(weightedSum(mod.perClient.map((m) => m.loraB), round.weights, mod.outFeatures * rank))
      const term: LowRankTerm = { coef: s, rank, loraA: a0.slice(), loraB: b }
      return [mod, term] as const
    })
    return globalAdapterAggregate('ffa', round, global)
  },
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement = 4): number {
    let n = 0
    for (const m of modules) n += rank * m.outFeatures
    return n * bytesPerElement
  },
}
