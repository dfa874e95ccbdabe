/**
 * The Llama configuration: a plain object, and its mapping to and from HF `config.json`.
 *
 * Supported: `model_type: "llama"` (LlamaForCausalLM) and `"mistral"` without a sliding
 * window (then it is the same network). Anything that changes the equations (attention or
 * MLP biases, rope scaling, another activation, sliding-window attention) is refused with
 * UnsupportedModelError rather than silently computed wrong.
 */
import { z } from 'zod'

export interface LlamaConfig {
  readonly vocabSize: number
  readonly hiddenSize: number
  readonly intermediateSize: number
  readonly numLayers: number
  readonly numHeads: number
  /** Key/value heads (GQA); numHeads % numKvHeads === 0. */
  readonly numKvHeads: number
  readonly headDim: number
  readonly maxPositionEmbeddings: number
  readonly rmsNormEps: number
  readonly ropeTheta: number
  /** lm_head shares the embedding matrix. */
  readonly tieWordEmbeddings: boolean
  readonly bosTokenId?: number
  readonly eosTokenId?: number
  readonly padTokenId?: number
}

/** A config.json this implementation cannot run faithfully. */
export class UnsupportedModelError extends Error {
  override readonly name = 'UnsupportedModelError'
}

/** A config that is malformed or inconsistent (bad numbers, heads that do not divide). */
export class ModelConfigError extends Error {
  override readonly name = 'ModelConfigError'
}

/** Defaults for the optional fields; headDim defaults to hiddenSize / numHeads. */
export function llamaConfig(
  c: Pick<LlamaConfig, 'vocabSize' | 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads'> & Partial<LlamaConfig>,
): LlamaConfig {
  const config: LlamaConfig = {
    numKvHeads: c.numHeads,
    headDim: Math.floor(c.hiddenSize / c.numHeads),
    maxPositionEmbeddings: 2048,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: false,
    ...c,
  }
  validateConfig(config)
  return config
}

const posInt = (name: string) => (v: number) => {
  if (!Number.isSafeInteger(v) || v < 1) throw new ModelConfigError(`${name} must be a positive integer, got ${v}`)
}

export function validateConfig(c: LlamaConfig): void {
  posInt('vocabSize')(c.vocabSize)
  posInt('hiddenSize')(c.hiddenSize)
  posInt('intermediateSize')(c.intermediateSize)
  posInt('numLayers')(c.numLayers)
  posInt('numHeads')(c.numHeads)
  posInt('numKvHeads')(c.numKvHeads)
  posInt('headDim')(c.headDim)
  posInt('maxPositionEmbeddings')(c.maxPositionEmbeddings)
  if (c.numHeads % c.numKvHeads !== 0) {
    throw new ModelConfigError(`numHeads (${c.numHeads}) must be a multiple of numKvHeads (${c.numKvHeads})`)
  }
  if (c.headDim % 2 !== 0) throw new ModelConfigError(`headDim must be even for rotary embeddings, got ${c.headDim}`)
  if (!(c.rmsNormEps > 0) || !Number.isFinite(c.rmsNormEps)) throw new ModelConfigError(`rmsNormEps must be > 0, got ${c.rmsNormEps}`)
  if (!(c.ropeTheta > 0) || !Number.isFinite(c.ropeTheta)) throw new ModelConfigError(`ropeTheta must be > 0, got ${c.ropeTheta}`)
}

const tokenId = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish()

const HfConfigSchema = z
  .object({
    model_type: z.string().optional(),
    architectures: z.array(z.string()).nullish(),
    vocab_size: z.number().int().positive(),
    hidden_size: z.number().int().positive(),
    intermediate_size: z.number().int().positive(),
    num_hidden_layers: z.number().int().positive(),
    num_attention_heads: z.number().int().positive(),
    num_key_value_heads: z.number().int().positive().nullish(),
    head_dim: z.number().int().positive().nullish(),
    max_position_embeddings: z.number().int().positive().optional(),
    rms_norm_eps: z.number().positive().optional(),
    rope_theta: z.number().positive().optional(),
    tie_word_embeddings: z.boolean().optional(),
    hidden_act: z.string().optional(),
    attention_bias: z.boolean().optional(),
    mlp_bias: z.boolean().optional(),
    rope_scaling: z.unknown().optional(),
    sliding_window: z.number().nullish(),
    bos_token_id: tokenId,
    eos_token_id: tokenId,
    pad_token_id: tokenId,
  })
  .passthrough()

const SUPPORTED: Record<string, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM' }

/** Parse and check an HF config.json object. */
export function fromHfConfig(json: unknown): LlamaConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelConfigError('config.json must be a JSON object')
  }
  const raw = json as Record<string, unknown>
  const modelType = typeof raw.model_type === 'string' ? raw.model_type : undefined
  const archs = Array.isArray(raw.architectures) ? raw.architectures.filter((a): a is string => typeof a === 'string') : []
  if (modelType === undefined && archs.length === 0) {
    throw new UnsupportedModelError('config.json has neither model_type nor architectures; expected a llama model')
  }
  if (modelType !== undefined && !(modelType in SUPPORTED)) {
    throw new UnsupportedModelError(
      `unsupported model_type '${modelType}' (architectures: ${archs.join(', ') || 'none'}); supported: ${Object.keys(SUPPORTED).join(', ')}`,
    )
  }
  const known = new Set(Object.values(SUPPORTED))
  const badArch = archs.find((a) => !known.has(a))
  if (badArch !== undefined) {
    throw new UnsupportedModelError(`unsupported architecture '${badArch}'; supported: ${[...known].join(', ')}`)
  }
  const parsed = HfConfigSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new ModelConfigError(`config.json: field '${issue.path.join('.')}': ${issue.message}`)
  }
  const h = parsed.data
  if (h.hidden_act !== undefined && h.hidden_act !== 'silu') {
    throw new UnsupportedModelError(`unsupported hidden_act '${h.hidden_act}' (only silu)`)
  }
  if (h.attention_bias === true) throw new UnsupportedModelError('attention_bias = true is not supported')
  if (h.mlp_bias === true) throw new UnsupportedModelError('mlp_bias = true is not supported')
  if (h.rope_scaling != null) {
    throw new UnsupportedModelError(`rope_scaling ${JSON.stringify(h.rope_scaling)} is not supported (plain RoPE only)`)
  }
  const maxPos = h.max_position_embeddings ?? 2048
  if (h.sliding_window != null && h.sliding_window < maxPos) {
    throw new UnsupportedModelError(
      `sliding_window ${h.sliding_window} < max_position_embeddings ${maxPos}: sliding-window attention is not supported`,
    )
  }
  const config: LlamaConfig = {
    vocabSize: h.vocab_size,
    hiddenSize: h.hidden_size,
    intermediateSize: h.intermediate_size,
    numLayers: h.num_hidden_layers,
    numHeads: h.num_attention_heads,
    numKvHeads: h.num_key_value_heads ?? h.num_attention_heads,
    headDim: h.head_dim ?? Math.floor(h.hidden_size / h.num_attention_heads),
    maxPositionEmbeddings: maxPos,
    rmsNormEps: h.rms_norm_eps ?? 1e-6,
    ropeTheta: h.rope_theta ?? 10000,
    tieWordEmbeddings: h.tie_word_embeddings ?? false,
    ...optionalId('bosTokenId', h.bos_token_id),
    ...optionalId('eosTokenId', h.eos_token_id),
    ...optionalId('padTokenId', h.pad_token_id),
  }
  validateConfig(config)
  return config
}

function optionalId(key: string, v: number | number[] | null | undefined): Record<string, number> {
  const id = Array.isArray(v) ? v[0] : v
  return id == null ? {} : { [key]: id }
}

/** The HF config.json object for a config (model_type llama). */
export function toHfConfig(c: LlamaConfig): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: c.tieWordEmbeddings,
    hidden_act: 'silu',
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: 'float32',
    ...(c.bosTokenId !== undefined ? { bos_token_id: c.bosTokenId } : {}),
    ...(c.eosTokenId !== undefined ? { eos_token_id: c.eosTokenId } : {}),
    ...(c.padTokenId !== undefined ? { pad_token_id: c.padTokenId } : {}),
  }
}

/** Parameter count of the base model (embeddings counted once when tied). */
export function parameterCount(c: LlamaConfig): number {
  const d = c.hiddenSize
  const attn = d * c.numHeads * c.headDim * 2 + d * c.numKvHeads * c.headDim * 2
  const mlp = 3 * d * c.intermediateSize
  const perLayer = attn + mlp + 2 * d
  const embed = c.vocabSize * d
  return embed + c.numLayers * perLayer + d + (c.tieWordEmbeddings ? 0 : embed)
}
