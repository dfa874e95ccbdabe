/**
 * Structural checks on module names, base-model shapes and in-memory adapters.
 *
 * Module names are restricted to printable ASCII without spaces (0x21..0x7e), 1..256 bytes.
 * HF module paths (`layers.0.self_attn.q_proj`) fit, and the restriction makes the canonical
 * order unambiguous: for ASCII, JS string order (UTF-16 code units), byte order and code
 * point order all agree, so every implementation sorts modules the same way.
 */
import { InvalidAdapterError, LoraConfigError } from './errors.js'
import { isValidAlpha, isValidRank, MAX_WIRE_U32, scalingKind } from './scaling.js'
import type { AdapterSet, LoraModule, ModuleShape } from './types.js'

export const MAX_MODULE_NAME_BYTES = 256

const NAME_RE = /^[\x21-\x7e]{1,256}$/

export function isValidModuleName(name: string): boolean {
  return typeof name === 'string' && NAME_RE.test(name)
}

/** Canonical module order (plain code-unit order; names are ASCII, so it is byte order too). */
export function compareModuleNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** True when `n` is an integer in [1, 2^32 - 1] (a feature count the wire can carry). */
export function isValidFeatureCount(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= MAX_WIRE_U32
}

/**
 * Checks a base-model shape list (names valid and unique, features positive) and returns a
 * name -> shape map. Throws LoraConfigError: a bad shape list is the caller's bug.
 */
export function indexShapes(shapes: readonly ModuleShape[], field = 'shapes'): Map<string, ModuleShape> {
  if (!Array.isArray(shapes)) throw new LoraConfigError(field, 'must be an array of ModuleShape')
  const byName = new Map<string, ModuleShape>()
  for (const s of shapes) {
    if (!isValidModuleName(s.name)) {
      throw new LoraConfigError(field, `invalid module name ${JSON.stringify(s.name)} (printable ASCII, 1..256 chars)`)
    }
    if (!isValidFeatureCount(s.inFeatures) || !isValidFeatureCount(s.outFeatures)) {
      throw new LoraConfigError(field, `module ${s.name}: in/out features must be integers in [1, 2^32-1], got ${s.inFeatures}x${s.outFeatures}`)
    }
    if (byName.has(s.name)) throw new LoraConfigError(field, `duplicate module ${s.name}`)
    byName.set(s.name, s)
  }
  return byName
}

/** Checks one module's metadata and tensors; throws InvalidAdapterError naming the module. */
export function validateModule(m: LoraModule): void {
  const name = m.name
  if (!isValidModuleName(name)) {
    throw new InvalidAdapterError('BAD_NAME', `invalid module name ${JSON.stringify(name)} (printable ASCII, 1..256 chars)`, name)
  }
  if (!isValidRank(m.rank)) throw new InvalidAdapterError('BAD_RANK', `module ${name}: rank must be an integer >= 1, got ${m.rank}`, name)
  if (!isValidFeatureCount(m.inFeatures) || !isValidFeatureCount(m.outFeatures)) {
    throw new InvalidAdapterError('SHAPE_MISMATCH', `module ${name}: in/out features must be positive integers, got ${m.inFeatures}x${m.outFeatures}`, name)
  }
  if (!isValidAlpha(m.alpha)) throw new InvalidAdapterError('BAD_ALPHA', `module ${name}: alpha must be finite and > 0, got ${m.alpha}`, name)
  if (scalingKind(m.alpha, m.rank, m.scaling) === undefined) {
    throw new InvalidAdapterError('BAD_SCALING', `module ${name}: scaling ${m.scaling} is neither alpha/r nor alpha/sqrt(r) for alpha=${m.alpha}, r=${m.rank}`, name)
  }
  checkTensor(name, 'loraA', m.loraA, m.rank * m.inFeatures)
  checkTensor(name, 'loraB', m.loraB, m.outFeatures * m.rank)
}

function checkTensor(name: string, field: string, t: Float32Array, expected: number): void {
  if (!(t instanceof Float32Array)) throw new InvalidAdapterError('BAD_TENSOR', `module ${name}: ${field} must be a Float32Array`, name)
  if (t.length !== expected) {
    throw new InvalidAdapterError('BAD_TENSOR', `module ${name}: ${field} has ${t.length} elements, expected ${expected}`, name)
  }
  for (let i = 0; i < t.length; i++) {
    if (!Number.isFinite(t[i])) throw new InvalidAdapterError('NON_FINITE', `module ${name}: ${field}[${i}] is ${t[i]}`, name)
  }
}

export interface ValidateAdapterOptions {
  /** Require modules to already be in canonical order (types.ts contract); default false. */
  readonly requireSorted?: boolean
}

/**
 * Checks an in-memory AdapterSet: at least one module, every module valid, names unique
 * (and sorted when requireSorted). Throws InvalidAdapterError.
 */
export function validateAdapter(set: AdapterSet, options: ValidateAdapterOptions = {}): void {
  if (set === null || typeof set !== 'object' || !Array.isArray(set.modules)) {
    throw new InvalidAdapterError('EMPTY', 'adapter must be an object with a modules array')
  }
  if (set.modules.length === 0) throw new InvalidAdapterError('EMPTY', 'adapter has no modules')
  const seen = new Set<string>()
  let prev: string | undefined
  for (const m of set.modules) {
    validateModule(m)
    if (seen.has(m.name)) throw new InvalidAdapterError('DUPLICATE_MODULE', `module ${m.name} appears twice`, m.name)
    seen.add(m.name)
    if (options.requireSorted === true && prev !== undefined && compareModuleNames(prev, m.name) > 0) {
      throw new InvalidAdapterError('UNSORTED', `module ${m.name} is out of canonical order (after ${prev})`, m.name)
    }
    prev = m.name
  }
}

export interface ShapeCheckOptions {
  /** Every declared module must be present. Default false (an adapter may target a subset). */
  readonly requireAllModules?: boolean
}

/** validateAdapter plus: every module is declared in `shapes` with the same in/out features. */
export function validateAdapterAgainstShapes(set: AdapterSet, shapes: readonly ModuleShape[], options: ShapeCheckOptions = {}): void {
  const byName = indexShapes(shapes)
  validateAdapter(set)
  for (const m of set.modules) {
    const s = byName.get(m.name)
    if (s === undefined) throw new InvalidAdapterError('UNKNOWN_MODULE', `module ${m.name} is not in the base model`, m.name)
    if (s.inFeatures !== m.inFeatures || s.outFeatures !== m.outFeatures) {
      throw new InvalidAdapterError('SHAPE_MISMATCH', `module ${m.name}: adapter is ${m.outFeatures}x${m.inFeatures} (out x in), base model has ${s.outFeatures}x${s.inFeatures}`, m.name)
    }
  }
  if (options.requireAllModules === true) {
    const present = new Set(set.modules.map((m) => m.name))
    for (const s of shapes) {
      if (!present.has(s.name)) throw new InvalidAdapterError('MISSING_MODULE', `module ${s.name} of the base model is missing`, s.name)
    }
  }
}

/**
 * PEFT-style target matching: a module is targeted when its name equals a target or ends
 * with '.' + target (so 'q_proj' matches 'layers.0.self_attn.q_proj').
 */
export function matchesTarget(name: string, targets: readonly string[]): boolean {
  for (const t of targets) {
    if (name === t || name.endsWith(`.${t}`)) return true
  }
  return false
}
