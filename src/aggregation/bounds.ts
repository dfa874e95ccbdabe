/**
 * Bounded contributions: what one member can do to a round, applied to the round's updates
 * before any strategy sees them. Every function here is a pure float64 computation in a
 * fixed (canonical) order, so every peer that replays a manifest gets the same bits.
 *
 * - Weights: p_k from the declared sample counts (or equal), capped at `maxWeight` by water
 *   filling: contributors above the cap get exactly the cap, the rest of the mass is shared
 *   by the others in proportion to their samples, repeated until nobody is above the cap.
 *   With n contributors and n x maxWeight <= 1 every contributor gets 1/n.
 * - Norms: per module and contributor, ||s_k B_k A_k||_F (computed exactly as
 *   sqrt(<B^T B, A A^T>), which costs O((in + out) r^2) instead of forming the product) is
 *   clipped to a bound: B_k is scaled by bound / norm, rounded to float32.
 */
import type { AdapterSet, LoraModule } from '../lora/types.js'
import { compareIds } from './common.js'
import { InvalidRoundError } from './errors.js'
import type { ClientUpdate } from './types.js'

export interface ContributionBounds {
  readonly weighting: 'samples' | 'equal'
  /** Cap on any contributor's weight p_k, in (0, 1]. */
  readonly maxWeight: number
  /** Per-module bound on ||s_k B_k A_k||_F, as a multiple of the module's ||W||_F. */
  readonly maxDeltaRatio: number
}

/**
 * Water-filled weights: p_k proportional to `raw` (all finite and > 0), none above `cap`
 * unless n x cap < 1 (then all equal 1/n). Aligned with `raw`; sums to 1 up to rounding.
 */
export function cappedWeights(raw: readonly number[], cap: number): number[] {
  const n = raw.length
  if (n === 0) return []
  for (const x of raw) if (!Number.isFinite(x) || x <= 0) throw new InvalidRoundError(`weights must be finite and > 0, got ${x}`)
  if (!(cap > 0 && cap <= 1)) throw new InvalidRoundError(`maxWeight must be in (0, 1], got ${cap}`)
  if (n * cap <= 1) return raw.map(() => 1 / n)
  const capped = new Array<boolean>(n).fill(false)
  const out = new Array<number>(n).fill(0)
  for (;;) {
    let free = 0
    let fixed = 0
    for (let k = 0; k < n; k++) {
      if (capped[k]) fixed++
      else free += raw[k]
    }
    const mass = 1 - fixed * cap
    let changed = false
    for (let k = 0; k < n; k++) {
      if (capped[k]) {
        out[k] = cap
        continue
      }
      out[k] = (raw[k] / free) * mass
      if (out[k] > cap) {
        capped[k] = true
        changed = true
      }
    }
    if (!changed) return out
  }
}

/** ||W||_F in float64, row-major order. */
export function frobeniusNorm(w: Float32Array): number {
  let s = 0
  for (let i = 0; i < w.length; i++) s += w[i] * w[i]
  return Math.sqrt(s)
}

/**
 * ||s B A||_F in float64 without forming B A: sqrt(sum_ij (B^T B)_ij (A A^T)_ij).
 * NaN when any element is not finite.
 */
export function deltaNorm(m: LoraModule): number {
  const r = m.rank
  const gA = new Float64Array(r * r)
  const gB = new Float64Array(r * r)
  // A A^T: rows i, j of A ([r, in]).
  for (let i = 0; i < r; i++) {
    const ai = i * m.inFeatures
    for (let j = i; j < r; j++) {
      const aj = j * m.inFeatures
      let s = 0
      for (let c = 0; c < m.inFeatures; c++) s += m.loraA[ai + c] * m.loraA[aj + c]
      gA[i * r + j] = s
      gA[j * r + i] = s
    }
  }
  // B^T B: columns i, j of B ([out, r]).
  for (let i = 0; i < r; i++) {
    for (let j = i; j < r; j++) {
      let s = 0
      for (let o = 0; o < m.outFeatures; o++) s += m.loraB[o * r + i] * m.loraB[o * r + j]
      gB[i * r + j] = s
      gB[j * r + i] = s
    }
  }
  let sq = 0
  for (let i = 0; i < r * r; i++) sq += gA[i] * gB[i]
  if (!Number.isFinite(sq)) return Number.NaN
  return Math.abs(m.scaling) * Math.sqrt(Math.max(0, sq))
}

export interface ClippedModule {
  readonly module: string
  readonly norm: number
  readonly bound: number
}

/**
 * The adapter with every module whose ||s B A||_F exceeds its bound scaled down to it
 * (B multiplied by bound / norm, rounded to float32), and the modules that were clipped.
 * Throws InvalidRoundError when a norm is not finite.
 */
export function clipAdapter(
  id: string,
  adapter: AdapterSet,
  boundOf: (module: string) => number,
): { adapter: AdapterSet; clipped: ClippedModule[] } {
  const clipped: ClippedModule[] = []
  const modules = adapter.modules.map((m): LoraModule => {
    const norm = deltaNorm(m)
    if (!Number.isFinite(norm)) throw new InvalidRoundError(`client '${id}': module ${m.name} has a non-finite update norm`)
    const bound = boundOf(m.name)
    if (norm <= bound) return m
    const factor = bound / norm
    const loraB = new Float32Array(m.loraB.length)
    for (let i = 0; i < loraB.length; i++) loraB[i] = m.loraB[i] * factor
    clipped.push({ module: m.name, norm, bound })
    return { ...m, loraB }
  })
  return { adapter: clipped.length > 0 ? { modules } : adapter, clipped }
}

export interface BoundedRound {
  /** The updates in canonical order, `samples` replaced by the bounded weights p_k. */
  readonly updates: readonly ClientUpdate[]
  /** Per contributor (canonical order): its weight and the modules clipped. */
  readonly report: readonly { readonly id: string; readonly weight: number; readonly clipped: readonly ClippedModule[] }[]
}

/**
 * Applies the bounds to a round's updates on the given parent weights. The result's
 * `samples` are the bounded weights (a strategy normalizes them again, a no-op up to
 * rounding, identical on every peer).
 */
export function boundRound(updates: readonly ClientUpdate[], parent: ReadonlyMap<string, Float32Array>, bounds: ContributionBounds): BoundedRound {
  const sorted = [...updates].sort((a, b) => compareIds(a.id, b.id))
  const raw = sorted.map((u) => (bounds.weighting === 'equal' ? 1 : u.samples))
  const weights = cappedWeights(raw, bounds.maxWeight)
  const normCache = new Map<string, number>()
  const boundOf = (module: string): number => {
    let n = normCache.get(module)
    if (n == null) {
      const w = parent.get(module)
      if (w == null) throw new InvalidRoundError(`no parent weight for module ${module}`)
      n = frobeniusNorm(w)
      normCache.set(module, n)
    }
    return bounds.maxDeltaRatio * n
  }
  const out: ClientUpdate[] = []
  const report: { id: string; weight: number; clipped: ClippedModule[] }[] = []
  sorted.forEach((u, k) => {
    const { adapter, clipped } = clipAdapter(u.id, u.adapter, boundOf)
    out.push({ id: u.id, samples: weights[k], adapter })
    report.push({ id: u.id, weight: weights[k], clipped })
  })
  return { updates: out, report }
}
