/**
 * Round preparation shared by the strategies: validation, canonical order and weights.
 *
 * Canonical order: updates sorted by id (UTF-16 code units, i.e. byte order for the ASCII
 * peer ids libp2p uses), so the arrival order of adapters never changes a result.
 * Weights: N = sum_k n_k summed in canonical order, p_k = fl64(n_k / N).
 */
import type { AdapterSet, LoraModule } from '../lora/types.js'
import { IncompatibleUpdatesError, InvalidRoundError, ShapeMismatchError, UnequalRanksError, UnsupportedTargetError } from './errors.js'
import type { AdapterTarget, ClientUpdate, LowRankTerm, ModuleTerms, RoundAggregate } from './types.js'

/** Code-unit order (the same in every JS engine); equals byte order for ASCII. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** One module across the round's clients, in canonical client order. */
export interface RoundModule {
  readonly name: string
  readonly inFeatures: number
  readonly outFeatures: number
  /** perClient[k] is client k's module (canonical order). */
  readonly perClient: readonly LoraModule[]
}

export interface PreparedRound {
  readonly clients: readonly string[]
  readonly weights: readonly number[]
  /** Modules sorted by name. */
  readonly modules: readonly RoundModule[]
}

/**
 * Validates the round and puts it in canonical order. Every update must carry the same
 * module names with the same shapes; tensors must match their declared shapes.
 */
export function prepareRound(strategy: string, updates: readonly ClientUpdate[]): PreparedRound {
  if (updates.length === 0) throw new InvalidRoundError(`${strategy}: a round needs at least one update`)
  const sorted = [...updates].sort((a, b) => compareIds(a.id, b.id))
  for (let k = 1; k < sorted.length; k++) {
    if (sorted[k].id === sorted[k - 1].id) throw new InvalidRoundError(`${strategy}: duplicate client id '${sorted[k].id}'`)
  }
  let total = 0
  for (const u of sorted) {
    if (!Number.isFinite(u.samples) || u.samples <= 0) {
      throw new InvalidRoundError(`${strategy}: client '${u.id}' has samples = ${u.samples}; need a finite number > 0`)
    }
    total += u.samples
  }
  const weights = sorted.map((u) => u.samples / total)

  const byName = sorted.map((u) => indexModules(strategy, u.id, u.adapter))
  const names = [...byName[0].keys()].sort(compareIds)
  for (let k = 1; k < sorted.length; k++) {
    const other = [...byName[k].keys()].sort(compareIds)
    if (other.length !== names.length || other.some((n, i) => n !== names[i])) {
      throw new IncompatibleUpdatesError(
        `${strategy}: client '${sorted[k].id}' adapts modules [${other.join(', ')}] but client '${sorted[0].id}' adapts [${names.join(', ')}]`,
      )
    }
  }
  const modules = names.map((name): RoundModule => {
    const perClient = byName.map((m) => m.get(name) as LoraModule)
    const { inFeatures, outFeatures } = perClient[0]
    perClient.forEach((m, k) => {
      if (m.inFeatures !== inFeatures || m.outFeatures !== outFeatures) {
        throw new ShapeMismatchError(
          `${strategy}: module '${name}' is [${m.outFeatures}, ${m.inFeatures}] at client '${sorted[k].id}' but [${outFeatures}, ${inFeatures}] at '${sorted[0].id}'`,
        )
      }
    })
    return { name, inFeatures, outFeatures, perClient }
  })
  return { clients: sorted.map((u) => u.id), weights, modules }
}

function indexModules(strategy: string, id: string, adapter: AdapterSet): Map<string, LoraModule> {
  const map = new Map<string, LoraModule>()
  if (adapter.modules.length === 0) throw new InvalidRoundError(`${strategy}: client '${id}' sent an adapter with no modules`)
  for (const m of adapter.modules) {
    if (map.has(m.name)) throw new InvalidRoundError(`${strategy}: client '${id}' has module '${m.name}' twice`)
    const where = `${strategy}: client '${id}', module '${m.name}'`
    if (!Number.isInteger(m.rank) || m.rank < 1) throw new ShapeMismatchError(`${where}: rank must be an integer >= 1, got ${m.rank}`)
    if (!Number.isInteger(m.inFeatures) || !Number.isInteger(m.outFeatures) || m.inFeatures < 1 || m.outFeatures < 1) {
      throw new ShapeMismatchError(`${where}: bad shape [${m.outFeatures}, ${m.inFeatures}]`)
    }
    if (m.loraA.length !== m.rank * m.inFeatures) {
      throw new ShapeMismatchError(`${where}: loraA has ${m.loraA.length} elements, [${m.rank}, ${m.inFeatures}] needs ${m.rank * m.inFeatures}`)
    }
    if (m.loraB.length !== m.outFeatures * m.rank) {
      throw new ShapeMismatchError(`${where}: loraB has ${m.loraB.length} elements, [${m.outFeatures}, ${m.rank}] needs ${m.outFeatures * m.rank}`)
    }
    if (!Number.isFinite(m.scaling)) throw new ShapeMismatchError(`${where}: scaling must be finite, got ${m.scaling}`)
    map.set(m.name, m)
  }
  return map
}

/** Throws UnequalRanksError unless every client has the same rank for this module. */
export function requireEqualRanks(strategy: string, mod: RoundModule): number {
  const ranks = mod.perClient.map((m) => m.rank)
  if (ranks.some((r) => r !== ranks[0])) throw new UnequalRanksError(strategy, mod.name, ranks)
  return ranks[0]
}

/** Throws IncompatibleUpdatesError unless every client uses the same scaling for this module. */
export function requireEqualScaling(strategy: string, mod: RoundModule): number {
  const s = mod.perClient.map((m) => m.scaling)
  if (s.some((x) => !Object.is(x, s[0]))) {
    throw new IncompatibleUpdatesError(
      `${strategy}: module '${mod.name}' has scalings [${s.join(', ')}]; averaging factors needs one scaling (same alpha and rank)`,
    )
  }
  return s[0]
}

/** out[x] = sum_k w_k * xs_k[x], float64, k ascending (one rounding per product and per sum). */
export function weightedSum(xs: readonly Float32Array[], w: readonly number[], length: number): Float64Array {
  const out = new Float64Array(length)
  xs.forEach((x, k) => {
    const wk = w[k]
    for (let i = 0; i < length; i++) out[i] += wk * x[i]
  })
  return out
}

/** The stacked FLoRA terms of one module: coef_k = fl64(p_k * s_k), in canonical client order. */
export function stackedTerms(mod: RoundModule, weights: readonly number[]): LowRankTerm[] {
  return mod.perClient.map((m, k) => ({ coef: weights[k] * m.scaling, rank: m.rank, loraA: m.loraA, loraB: m.loraB }))
}

/** Map with modules in the given (sorted) order. */
export function termsMap(entries: readonly (readonly [string, readonly LowRankTerm[]])[]): ModuleTerms {
  return new Map(entries)
}

/** A LoraModule for a client target, owning fresh copies of the factors. */
export function targetModule(mod: RoundModule, target: AdapterTarget, loraA: Float32Array, loraB: Float32Array): LoraModule {
  return {
    name: mod.name,
    rank: target.rank,
    inFeatures: mod.inFeatures,
    outFeatures: mod.outFeatures,
    alpha: target.alpha,
    scaling: target.scaling,
    loraA,
    loraB,
  }
}

/** Validates a nextAdapter() target. */
export function checkTarget(strategy: string, target: AdapterTarget): void {
  if (!Number.isInteger(target.rank) || target.rank < 1) throw new UnsupportedTargetError(`${strategy}: target rank must be an integer >= 1, got ${target.rank}`)
  if (!Number.isFinite(target.scaling) || target.scaling <= 0) {
    throw new UnsupportedTargetError(`${strategy}: target scaling must be finite and > 0, got ${target.scaling}`)
  }
}

/** Bytes of rank-`rank` A and B factors over `modules`. */
export function factorBytes(modules: readonly { inFeatures: number; outFeatures: number }[], rank: number, bytesPerElement: number): number {
  let n = 0
  for (const m of modules) n += rank * (m.inFeatures + m.outFeatures)
  return n * bytesPerElement
}

/** B scaled so that target.scaling * B' A equals s * B A; an exact copy when the scalings agree. */
export function rescaleB(b: Float32Array, from: number, to: number): Float32Array {
  if (Object.is(from, to)) return b.slice()
  const f = from / to
  const out = new Float32Array(b.length)
  for (let i = 0; i < b.length; i++) out[i] = b[i] * f
  return out
}

/**
 * The aggregate of strategies that keep one global adapter per module (FedIT, FFA): nothing
 * merged into the base, the global term kept on top of it, and every client warm-starts
 * from that adapter at the same rank (B rescaled to the client's scaling).
 */
export function globalAdapterAggregate(
  strategy: string,
  round: PreparedRound,
  global: readonly (readonly [RoundModule, LowRankTerm])[],
): RoundAggregate {
  return {
    strategy,
    clients: round.clients,
    weights: round.weights,
    merge: new Map(),
    global: termsMap(global.map(([mod, t]) => [mod.name, [t]] as const)),
    nextAdapter(target: AdapterTarget) {
      checkTarget(strategy, target)
      const modules: LoraModule[] = global.map(([mod, t]) => {
        if (target.rank !== t.rank) {
          throw new UnsupportedTargetError(`${strategy}: the global adapter of '${mod.name}' has rank ${t.rank}, target asks for ${target.rank}`)
        }
        return targetModule(mod, target, t.loraA.slice(), rescaleB(t.loraB, t.coef, target.scaling))
      })
      return { modules }
    },
  }
}
