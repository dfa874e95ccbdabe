/** Test-only builders for adapters (not part of src). */
import { createPrng, type Prng } from '../../src/lora/prng.js'
import { loraScaling } from '../../src/lora/scaling.js'
import type { AdapterSet, LoraModule, ModuleShape } from '../../src/lora/types.js'

/** A small decoder-style base model: q/v projections over `layers` layers. */
export function smallShapes(layers = 2, dim = 8, kvDim = 4): ModuleShape[] {
  const out: ModuleShape[] = []
  for (let l = 0; l < layers; l++) {
    out.push({ name: `layers.${l}.self_attn.q_proj`, inFeatures: dim, outFeatures: dim })
    out.push({ name: `layers.${l}.self_attn.v_proj`, inFeatures: dim, outFeatures: kvDim })
  }
  return out
}

export interface RandomAdapterOptions {
  readonly shapes?: readonly ModuleShape[]
  readonly rank?: number
  readonly alpha?: number
  readonly rslora?: boolean
  /** Scale of the random values (both A and B non-zero, unlike a fresh init). */
  readonly scale?: number
}

/** Adapter with random non-zero A and B, modules in shapes order (not sorted). */
export function randomAdapter(seed: number | string, options: RandomAdapterOptions = {}): AdapterSet {
  const prng: Prng = createPrng(seed)
  const shapes = options.shapes ?? smallShapes()
  const rank = options.rank ?? 3
  const alpha = options.alpha ?? 2 * rank
  const scale = options.scale ?? 1
  const scaling = loraScaling(alpha, rank, { rslora: options.rslora === true })
  const modules = shapes.map((s): LoraModule => ({
    name: s.name,
    rank,
    inFeatures: s.inFeatures,
    outFeatures: s.outFeatures,
    alpha,
    scaling,
    loraA: prng.fillUniform(new Float32Array(rank * s.inFeatures), -scale, scale),
    loraB: prng.fillUniform(new Float32Array(s.outFeatures * rank), -scale, scale),
  }))
  return { modules }
}

/** Element-wise bit equality of two float32 arrays (distinguishes -0 from 0). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false
  return true
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex')
}
