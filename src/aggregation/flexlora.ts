/**
 * FlexLoRA (Bai et al., NeurIPS 2024): aggregate the full update, redistribute by SVD.
 *
 * Formula (p_k = n_k / sum_j n_j, s_k the client's scaling):
 *   dW = sum_k p_k s_k B_k A_k = B_stack A_stack           (global: the stacked terms)
 *   dW = U S V^T;  a client of rank r and scaling s gets
 *   B' = U[:, :r] S[:r] / s,   A' = V^T[:r, :]              (best rank-r approximation)
 * Exact: yes for the global model (merge + global equal the stacked sum, as FLoRA); the
 * redistribution to clients is a truncation with Eckart-Young error
 * ||dW - s B' A'||_F = sqrt(sum_{i > r} S_i^2) (plus float32 rounding of B', A').
 * Cheap route: dW has rank <= R = sum r_k, so with thin QRs B_stack = Q_B R_B and
 * A_stack^T = Q_A R_A (Householder, float64), dW = Q_B (R_B R_A^T) Q_A^T and only the small
 * R x R core M = R_B R_A^T needs an SVD (one-sided Jacobi): U = Q_B U_M, V = Q_A V_M.
 * B_stack's columns are fl64(p_k s_k B_k[:, t]) as in the merge kernel. A client whose rank
 * exceeds rank(dW) gets extra orthonormal A rows with zero B columns. The SVD is computed
 * lazily per module on the first nextAdapter() call and cached; all of it is deterministic.
 * Bytes per client per round: upload r_k (in + out) floats per module; download
 * r_k (in + out) from a server — peer-to-peer, every peer computes dW itself and needs
 * every other adapter: sum_{j != k} r_j (in + out).
 */
import type { LoraModule, ModuleShape } from '../lora/types.js'
import { type RoundModule, checkTarget, factorBytes, prepareRound, stackedTerms, targetModule, termsMap } from './common.js'
import { UnsupportedTargetError } from './errors.js'
import { householderQr, jacobiSvd } from './linalg.js'
import type { AdapterTarget, ClientUpdate, LowRankTerm, RoundAggregate, Strategy } from './types.js'

/** Truncated SVD of a module's dW: left vectors [out] and right vectors [in], s descending. */
export interface ModuleSvd {
  readonly s: Float64Array
  readonly u: readonly Float64Array[]
  readonly v: readonly Float64Array[]
}

/** A FlexLoRA round: RoundAggregate plus the spectrum it redistributes. */
export interface FlexLoraAggregate extends RoundAggregate {
  /** SVD of the module's aggregated dW (at most min(out, in, R) triplets). */
  svd(module: string): ModuleSvd
}

/** SVD of dW = sum_k coef_k B_k A_k via QR of the stacked factors (see header). */
export function stackedSvd(mod: { inFeatures: number; outFeatures: number }, terms: readonly LowRankTerm[]): ModuleSvd {
  const { inFeatures: inF, outFeatures: out } = mod
  const bCols: Float64Array[] = []
  const aCols: Float64Array[] = []
  for (const { coef, rank, loraA, loraB } of terms) {
    for (let t = 0; t < rank; t++) {
      const b = new Float64Array(out)
      for (let i = 0; i < out; i++) b[i] = coef * loraB[i * rank + t]
      bCols.push(b)
      aCols.push(Float64Array.from(loraA.subarray(t * inF, (t + 1) * inF)))
    }
  }
  const R = bCols.length
  const qb = householderQr(bCols, out) // B_stack = Q_B R_B,   R_B [kB, R]
  const qa = householderQr(aCols, inF) // A_stack^T = Q_A R_A, R_A [kA, R]
  // M = R_B R_A^T  [kB, kA]
  const m = new Float64Array(qb.k * qa.k)
  for (let x = 0; x < qb.k; x++) {
    for (let y = 0; y < qa.k; y++) {
      let acc = 0
      for (let s = 0; s < R; s++) acc += qb.r[x * R + s] * qa.r[y * R + s]
      m[x * qa.k + y] = acc
    }
  }
  const core = jacobiSvd(m, qb.k, qa.k, { keepRightOrthonormal: true })
  // U = Q_B U_M, V = Q_A V_M
  const lift = (q: readonly Float64Array[], small: readonly Float64Array[], len: number): Float64Array[] =>
    small.map((w) => {
      const out64 = new Float64Array(len)
      for (let c = 0; c < w.length; c++) {
        const f = w[c]
        if (f === 0) continue
        const qc = q[c]
        for (let i = 0; i < len; i++) out64[i] += f * qc[i]
      }
      return out64
    })
  return { s: core.s, u: lift(qb.q, core.u, out), v: lift(qa.q, core.v, inF) }
}

/** stackedSvd per module, computed on first use and kept (one aggregate's modules). */
export function lazyStackedSvd(): (mod: RoundModule, terms: readonly LowRankTerm[]) => ModuleSvd {
  const cache = new Map<string, ModuleSvd>()
  return (mod, terms) => {
    let s = cache.get(mod.name)
    if (s === undefined) {
      s = stackedSvd(mod, terms)
      cache.set(mod.name, s)
    }
    return s
  }
}

/**
 * Extends orthonormal rows to `r` rows by Gram-Schmidt (two passes) on e_0, e_1, ... in
 * order: a client whose rank exceeds rank(dW) still gets orthonormal A rows (with zero B
 * columns, like a fresh LoRA), never dead all-zero components. Deterministic.
 */
export function completeBasis(rows: Float64Array[], r: number, n: number): Float64Array[] {
  const out = [...rows]
  for (let j = 0; j < n && out.length < r; j++) {
    const x = new Float64Array(n)
    x[j] = 1
    for (let pass = 0; pass < 2; pass++) {
      for (const q of out) {
        let d = 0
        for (let i = 0; i < n; i++) d += q[i] * x[i]
        for (let i = 0; i < n; i++) x[i] -= d * q[i]
      }
    }
    let nn = 0
    for (let i = 0; i < n; i++) nn += x[i] * x[i]
    const norm = Math.sqrt(nn)
    if (norm < 1e-3) continue // e_j (almost) in the span already
    for (let i = 0; i < n; i++) x[i] /= norm
    out.push(x)
  }
  return out
}

/** Client factors of rank r from an SVD: B' = U[:, :r] S[:r] / scaling, A' = V^T[:r, :]. */
function truncate(mod: RoundModule, svd: ModuleSvd, target: AdapterTarget): LoraModule {
  const r = target.rank
  const { inFeatures: inF, outFeatures: out } = mod
  if (r > inF) {
    throw new UnsupportedTargetError(`flexlora: module '${mod.name}' has ${inF} input features; rank ${r} cannot have orthonormal A rows`)
  }
  const used = Math.min(r, svd.s.length)
  const rows = completeBasis(svd.v.slice(0, used), r, inF)
  const a = new Float32Array(r * inF)
  const b = new Float32Array(out * r)
  for (let t = 0; t < r; t++) {
    a.set(rows[t], t * inF)
    if (t >= used) continue // beyond rank(dW): B column stays 0
    const f = svd.s[t] / target.scaling
    const u = svd.u[t]
    for (let i = 0; i < out; i++) b[i * r + t] = u[i] * f
  }
  return targetModule(mod, target, a, b)
}

export interface FlexLoraStrategy extends Strategy {
  aggregate(updates: readonly ClientUpdate[]): FlexLoraAggregate
}

export const flexloraStrategy: FlexLoraStrategy = {
  name: 'flexlora',
  exact: true,
  requiresEqualRanks: false,
  aggregate(updates: readonly ClientUpdate[]): FlexLoraAggregate {
    const round = prepareRound('flexlora', updates)
    const terms = round.modules.map((m) => [m, stackedTerms(m, round.weights)] as const)
    const svdOf = lazyStackedSvd()
    return {
      strategy: 'flexlora',
      clients: round.clients,
      weights: round.weights,
      merge: new Map(),
      global: termsMap(terms.map(([m, t]) => [m.name, t] as const)),
      nextAdapter(target: AdapterTarget) {
        checkTarget('flexlora', target)
        return { modules: terms.map(([m, t]) => truncate(m, svdOf(m, t), target)) }
      },
      svd(module: string): ModuleSvd {
        const entry = terms.find(([m]) => m.name === module)
        if (entry === undefined) throw new UnsupportedTargetError(`flexlora: no module '${module}' in this round`)
        return svdOf(entry[0], entry[1])
      },
    }
  },
  bytesPerClient(modules: readonly ModuleShape[], rank: number, bytesPerElement = 4): number {
    return factorBytes(modules, rank, bytesPerElement)
  },
}
