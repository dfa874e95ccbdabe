/**
 * The Llama-family configuration: a plain object, and its mapping to and from HF `config.json`.
 *
 * Supported `model_type`s:
 * - `llama` (LlamaForCausalLM: Llama 1-3.x, TinyLlama, SmolLM/SmolLM2, ...), with
 *   `attention_bias` (q/k/v/o biases) and RoPE scaling `llama3` (Llama 3.1/3.2) or `linear`;
 * - `qwen2` (Qwen2ForCausalLM: Qwen2, Qwen2.5): q/k/v biases, o_proj none;
 * - `mistral` (MistralForCausalLM), with its sliding window.
 * Anything else that changes the equations (MLP biases, another RoPE scaling, another
 * activation, Qwen2's use_sliding_window) is refused with UnsupportedModelError, by name,
 * rather than silently computed wrong.
 */
import { z } from 'zod'

/** The linear layers of a Llama block, the modules LoRA can adapt (canonical order). */
export const LINEAR_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const
export type LinearModuleKind = (typeof LINEAR_MODULES)[number]

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
  /** RoPE frequency scaling (HF `rope_scaling`); absent: plain RoPE. */
  readonly ropeScaling?: RopeScaling
  /** q_proj, k_proj and v_proj have biases (Qwen2; Llama with attention_bias). */
  readonly qkvBias?: boolean
  /** o_proj has a bias (Llama with attention_bias). */
  readonly oBias?: boolean
  /** Sliding-window attention (Mistral): a query sees the last `slidingWindow` positions, itself included. */
  readonly slidingWindow?: number
  /** The HF model_type the config was read from (written back by toHfConfig); default 'llama'. */
  readonly modelType?: SupportedModelType
}

/**
 * HF's RoPE scalings that change only the rotary frequencies (attention factor 1):
 * `linear` divides every frequency by `factor`; `llama3` (Llama 3.1/3.2) divides the low
 * frequencies by `factor`, keeps the high ones and interpolates between.
 */
export type RopeScaling =
  | { readonly type: 'linear'; readonly factor: number }
  | {
      readonly type: 'llama3'
      readonly factor: number
      readonly lowFreqFactor: number
      readonly highFreqFactor: number
      readonly originalMaxPositionEmbeddings: number
    }

export type SupportedModelType = 'llama' | 'mistral' | 'qwen2'

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
  const s = c.ropeScaling
  if (s !== undefined) {
    if (!(s.factor > 0) || !Number.isFinite(s.factor)) throw new ModelConfigError(`rope scaling factor must be > 0, got ${s.factor}`)
    if (s.type === 'llama3') {
      posInt('rope scaling original_max_position_embeddings')(s.originalMaxPositionEmbeddings)
      if (!(s.lowFreqFactor > 0) || !(s.highFreqFactor > s.lowFreqFactor)) {
        throw new ModelConfigError(`llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, got ${s.lowFreqFactor}, ${s.highFreqFactor}`)
      }
    }
  }
  if (c.slidingWindow !== undefined) posInt('slidingWindow')(c.slidingWindow)
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

const SUPPORTED: Record<SupportedModelType, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' }

/** HF `rope_scaling` -> RopeScaling; null for none (or `default`). */
function parseRopeScaling(raw: unknown): RopeScaling | undefined {
  if (raw == null) return undefined
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ModelConfigError(`rope_scaling must be an object or null, got ${JSON.stringify(raw)}`)
  const r = raw as Record<string, unknown>
  const kind = r.rope_type ?? r.type
  const num = (key: string): number => {
    const v = r[key]
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UnsupportedModelError(`rope_scaling type '${String(kind)}' needs a number ${key}, got ${JSON.stringify(v)}`)
    return v
  }
  if (kind === 'default') return undefined
  if (kind === 'linear') return { type: 'linear', factor: num('factor') }
  if (kind === 'llama3') {
    return {
      type: 'llama3',
      factor: num('factor'),
      lowFreqFactor: num('low_freq_factor'),
      highFreqFactor: num('high_freq_factor'),
      originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
    }
  }
  throw new UnsupportedModelError(`rope_scaling type '${String(kind)}' is not supported (supported: llama3, linear)`)
}

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
  // The model type: given, or the one of the architecture named.
  const type = (modelType ?? Object.entries(SUPPORTED).find(([, a]) => archs.includes(a))?.[0] ?? 'llama') as SupportedModelType
  if (h.mlp_bias === true) throw new UnsupportedModelError('mlp_bias = true is not supported')
  if (h.attention_bias === true && type !== 'llama') throw new UnsupportedModelError(`attention_bias = true is not supported for model_type ${type}`)
  const ropeScaling = parseRopeScaling(h.rope_scaling)
  const maxPos = h.max_position_embeddings ?? 2048
  let slidingWindow: number | undefined
  if (type === 'qwen2') {
    // Qwen2 configs carry a sliding_window that only applies with use_sliding_window (off in every release).
    if (raw.use_sliding_window === true) throw new UnsupportedModelError('qwen2 with use_sliding_window = true is not supported')
  } else if (h.sliding_window != null && h.sliding_window < maxPos) {
    if (type !== 'mistral') throw new UnsupportedModelError(`sliding_window ${h.sliding_window} is not part of model_type ${type}`)
    slidingWindow = h.sliding_window
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
    ...(ropeScaling !== undefined ? { ropeScaling } : {}),
    ...(type === 'qwen2' || h.attention_bias === true ? { qkvBias: true } : {}),
    ...(type === 'qwen2' ? { oBias: false } : h.attention_bias === true ? { oBias: true } : {}),
    ...(slidingWindow !== undefined ? { slidingWindow } : {}),
    ...(type !== 'llama' ? { modelType: type } : {}),
  }
  validateConfig(config)
  return config
}

function hfRopeScaling(s: RopeScaling | undefined): Record<string, unknown> | null {
  if (s === undefined) return null
  if (s.type === 'linear') return { rope_type: 'linear', factor: s.factor }
  return {
    rope_type: 'llama3',
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings,
  }
}

function optionalId(key: string, v: number | number[] | null | undefined): Record<string, number> {
  const id = Array.isArray(v) ? v[0] : v
  return id == null ? {} : { [key]: id }
}

/** The HF config.json object for a config (its model_type; llama by default). */
export function toHfConfig(c: LlamaConfig): Record<string, unknown> {
  const type = c.modelType ?? 'llama'
  return {
    architectures: [SUPPORTED[type]],
    model_type: type,
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
    rope_scaling: hfRopeScaling(c.ropeScaling),
    tie_word_embeddings: c.tieWordEmbeddings,
    hidden_act: 'silu',
    ...(type === 'llama' ? { attention_bias: c.qkvBias === true, mlp_bias: false } : {}),
    ...(type === 'qwen2' ? { use_sliding_window: false } : {}),
    ...(type === 'mistral' ? { sliding_window: c.slidingWindow ?? null } : {}),
    torch_dtype: 'float32',
    ...(c.bosTokenId !== undefined ? { bos_token_id: c.bosTokenId } : {}),
    ...(c.eosTokenId !== undefined ? { eos_token_id: c.eosTokenId } : {}),
    ...(c.padTokenId !== undefined ? { pad_token_id: c.padTokenId } : {}),
  }
}

/** Parameter count of the base model (embeddings counted once when tied). */
export function parameterCount(c: LlamaConfig): number {
  const d = c.hiddenSize
  const attn =
    d * c.numHeads * c.headDim * 2 +
    d * c.numKvHeads * c.headDim * 2 +
    (c.qkvBias === true ? (c.numHeads + 2 * c.numKvHeads) * c.headDim : 0) +
    (c.oBias === true ? d : 0)
  const mlp = 3 * d * c.intermediateSize
  const perLayer = attn + mlp + 2 * d
  const embed = c.vocabSize * d
  return embed + c.numLayers * perLayer + d + (c.tieWordEmbeddings ? 0 : embed)
}
