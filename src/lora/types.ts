/**
 * Core LoRA data types, in HF PEFT conventions (docs/MERGE.md states the update they define).
 *
 * A frozen linear layer W0 has shape [out, in] (nn.Linear layout, row-major).
 * A rank-r adapter on it has loraA [r, in] and loraB [out, r], and contributes
 *   dW = scaling * loraB @ loraA,   scaling = alpha / r   (rsLoRA: alpha / sqrt(r)).
 * All matrices are row-major Float32Arrays.
 */

/** Shape of one adaptable linear layer of the base model, e.g. `layers.0.self_attn.q_proj`. */
export interface ModuleShape {
  /** Module name, unique within a model (HF naming without the `base_model.model.` prefix). */
  readonly name: string
  readonly inFeatures: number
  readonly outFeatures: number
}

/** One target module's adapter. */
export interface LoraModule {
  readonly name: string
  readonly rank: number
  readonly inFeatures: number
  readonly outFeatures: number
  readonly alpha: number
  /** alpha / rank, or alpha / sqrt(rank) with rsLoRA. Kept explicit so no reader re-derives it differently. */
  readonly scaling: number
  /** [rank, inFeatures], row-major. */
  readonly loraA: Float32Array
  /** [outFeatures, rank], row-major. */
  readonly loraB: Float32Array
}

/** One peer's adapter for all its target modules, modules sorted by name (canonical order). */
export interface AdapterSet {
  readonly modules: readonly LoraModule[]
}

/** Element type of the encoded tensors on the wire. Decoding always yields Float32Array. */
export type WireDType = 'f32' | 'f16' | 'bf16'
