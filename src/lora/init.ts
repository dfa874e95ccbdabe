/**
 * Fresh adapters (PEFT default init) and small AdapterSet helpers.
 *
 * A ~ kaiming_uniform(a = sqrt(5)) on a [r, in] weight: gain = sqrt(2 / (1 + a^2)) = sqrt(1/3),
 * bound = gain * sqrt(3 / fan_in) = 1 / sqrt(in), so A ~ U(-1/sqrt(in), 1/sqrt(in)); B = 0,
 * hence dW = s * B @ A = 0 at the start of every round.
 *
 * Determinism: module m draws from createPrng(seed).fork('lora.init').fork(m.name), filled
 * row-major with lo + (hi - lo) * u (IEEE-exact ops) and stored to float32 (round to nearest
 * even). The same (seed, shapes, rank) therefore gives bit-identical tensors on every
 * machine, whatever the order of `shapes`.
 */
import { LoraConfigError } from './errors.js'
import { createPrng, type SeedLike } from './prng.js'
import { loraScaling } from './scaling.js'
import type { AdapterSet, LoraModule, ModuleShape } from './types.js'
import { compareModuleNames, indexShapes, matchesTarget } from './validate.js'

export interface InitAdapterOptions {
  /** The base model's adaptable linear layers. */
  readonly shapes: readonly ModuleShape[]
  readonly rank: number
  readonly alpha: number
  readonly seed: SeedLike
  /** Scale by alpha / sqrt(r) (rsLoRA) instead of alpha / r. */
  readonly rslora?: boolean
  /**
   * PEFT target_modules: adapt only modules whose name equals a target or ends with
   * '.' + target. Default: every module in `shapes`. A target matching nothing is an error.
   */
  readonly targets?: readonly string[]
}

/** Label of the init sub-stream, so init draws never collide with other uses of one seed. */
export const INIT_STREAM_LABEL = 'lora.init'

export function initAdapter(options: InitAdapterOptions): AdapterSet {
  const { shapes, rank, alpha, seed } = options
  const byName = indexShapes(shapes)
  const scaling = loraScaling(alpha, rank, { rslora: options.rslora === true })
  let selected = [...byName.values()]
  if (options.targets !== undefined) {
    const targets = options.targets
    if (!Array.isArray(targets) || targets.length === 0) throw new LoraConfigError('targets', 'must be a non-empty array of module names or suffixes')
    for (const t of targets) {
      if (typeof t !== 'string' || t.length === 0) throw new LoraConfigError('targets', `invalid target ${JSON.stringify(t)}`)
      if (!selected.some((s) => matchesTarget(s.name, [t]))) throw new LoraConfigError('targets', `target ${t} matches no module of the base model`)
    }
    selected = selected.filter((s) => matchesTarget(s.name, targets))
  }
  if (selected.length === 0) throw new LoraConfigError('shapes', 'no module to adapt')
  selected.sort((a, b) => compareModuleNames(a.name, b.name))

  const root = createPrng(seed).fork(INIT_STREAM_LABEL)
  const modules = selected.map((s): LoraModule => {
    const bound = 1 / Math.sqrt(s.inFeatures)
    const loraA = allocate(rank * s.inFeatures, s.name, 'loraA')
    root.fork(s.name).fillUniform(loraA, -bound, bound)
    const loraB = allocate(s.outFeatures * rank, s.name, 'loraB')
    return { name: s.name, rank, inFeatures: s.inFeatures, outFeatures: s.outFeatures, alpha, scaling, loraA, loraB }
  })
  return { modules }
}

function allocate(n: number, module: string, field: string): Float32Array {
  // Typed arrays in V8 hold at most 2^32 - 1 elements (less on some builds): fail with a
  // named error instead of a RangeError from the allocator.
  if (!Number.isSafeInteger(n) || n > 0xffffffff) throw new LoraConfigError('rank', `module ${module}: ${field} would need ${n} elements`)
  return new Float32Array(n)
}

/** Trainable parameters: sum over modules of r * (in + out). */
export function adapterParamCount(set: AdapterSet): number {
  let n = 0
  for (const m of set.modules) n += m.rank * (m.inFeatures + m.outFeatures)
  return n
}

/** Deep copy (fresh Float32Arrays), module order kept. */
export function cloneAdapter(set: AdapterSet): AdapterSet {
  return { modules: set.modules.map((m) => ({ ...m, loraA: m.loraA.slice(), loraB: m.loraB.slice() })) }
}

/** Same modules in canonical order (shares the tensors; does not validate). */
export function sortAdapter(set: AdapterSet): AdapterSet {
  return { modules: [...set.modules].sort((a, b) => compareModuleNames(a.name, b.name)) }
}

/** Module by name, or undefined. */
export function findModule(set: AdapterSet, name: string): LoraModule | undefined {
  return set.modules.find((m) => m.name === name)
}
