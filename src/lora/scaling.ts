import { LoraConfigError } from './errors.js'

export interface ScalingOptions {
  /** rsLoRA (Kalajdzievski 2023): scale by alpha / sqrt(r) instead of alpha / r. */
  readonly rslora?: boolean
}

/** Largest rank the wire format can carry (u32). */
export const MAX_WIRE_U32 = 0xffffffff

/** True when `rank` is an integer in [1, 2^32 - 1]. */
export function isValidRank(rank: number): boolean {
  return Number.isInteger(rank) && rank >= 1 && rank <= MAX_WIRE_U32
}

/** True when `alpha` is finite and > 0 (alpha <= 0 would zero or flip the update). */
export function isValidAlpha(alpha: number): boolean {
  return Number.isFinite(alpha) && alpha > 0
}

/**
 * LoRA scaling factor s in dW = s * B @ A:
 *   s = alpha / r          (PEFT default)
 *   s = alpha / sqrt(r)    (rsLoRA)
 * Both are single correctly rounded IEEE operations, so every machine gets the same bits,
 * which is what lets the wire decoder check a declared scaling exactly.
 */
export function loraScaling(alpha: number, rank: number, options: ScalingOptions = {}): number {
  if (!isValidAlpha(alpha)) throw new LoraConfigError('alpha', `must be finite and > 0, got ${alpha}`)
  if (!isValidRank(rank)) throw new LoraConfigError('rank', `must be an integer in [1, 2^32-1], got ${rank}`)
  return options.rslora === true ? alpha / Math.sqrt(rank) : alpha / rank
}

/**
 * Which convention a declared scaling follows, or undefined when it is neither exactly.
 * For r = 1 both conventions agree and 'standard' is reported.
 */
export function scalingKind(alpha: number, rank: number, scaling: number): 'standard' | 'rslora' | undefined {
  if (!isValidAlpha(alpha) || !isValidRank(rank)) return undefined
  if (Object.is(scaling, alpha / rank)) return 'standard'
  if (Object.is(scaling, alpha / Math.sqrt(rank))) return 'rslora'
  return undefined
}
