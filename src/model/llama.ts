/**
 * The Llama decoder in tfjs, with LoRA on chosen linear layers. One file, top to bottom:
 * weights, RMSNorm, rotary embeddings, attention, MLP, the forward pass, then the LoRA
 * and base-weight plumbing the federation uses.
 *
 *   h_0     = embed[ids]
 *   a_l     = h_{l-1} + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = rmsnorm(h_{l-1})
 *   h_l     = a_l + down_proj(silu(gate_proj(m)) * up_proj(m)),                     m = rmsnorm(a_l)
 *   logits  = rmsnorm(h_L) @ lm_head^T
 *
 * Every linear layer is a LoraLinear (lora-layer.ts): y = x W^T + s * (x A^T) B^T with a
 * frozen W and, where an adapter is set, trainable A [r, in], B [out, r]. Base weights
 * are read and written in HF layout (getBaseWeight/setBaseWeight), exactly.
 * RMSNorm and RoPE have two implementations: the tf ops below (the reference, used on the
 * native backends) and fused JS kernels (kernels.ts) on wasm/cpu; tests hold them equal.
 */
import * as tf from '@tensorflow/tfjs'
import { createPrng, type SeedLike } from '../lora/prng.js'
import type { AdapterSet, LoraModule, ModuleShape } from '../lora/types.js'
import { compareModuleNames, validateAdapterAgainstShapes } from '../lora/validate.js'
import { activeNativeKernels, nativeKernelsActive } from './native-state.js'
import { canHoldFrozenWeights, NativeFrozenWeight, type FrozenDtype, type HalfBits } from './frozen-weight.js'
import { type LlamaConfig, parameterCount, type RopeScaling, validateConfig } from './config.js'
import { type ComputePath, fusedAttention, fusedCausalSoftmax, fusedRmsNorm, fusedRope, fusedSwiglu, resolveComputePath } from './kernels.js'
import { type DropoutFn, frozenMatMul, LoraDropout, LoraLinear, transpose2d } from './lora-layer.js'
import { attentionSublayer, mlpSublayer, type SublayerContext } from './layer-grad.js'
import { FrozenEmbedding } from './embedding.js'
import { TRAINING_RECIPE } from './recipe.js'

import { LINEAR_MODULES, type LinearModuleKind } from './config.js'

export { LINEAR_MODULES, type LinearModuleKind }
/** The paper's (and PEFT's usual) default targets. */
export const DEFAULT_TARGET_MODULES: readonly LinearModuleKind[] = TRAINING_RECIPE.targets

/** HF weight name -> row-major values in HF layout ([out, in] for linear layers). */
export type WeightMap = ReadonlyMap<string, Float32Array>

/**
 * Weights read on demand (a checkpoint streamed tensor by tensor, streamed-weights.ts):
 * shapes come from `shapeOf` up front, and `get` is called once per tensor as the model
 * copies it where it lives.
 */
export interface WeightSource {
  keys(): IterableIterator<string>
  shapeOf(name: string): readonly number[] | undefined
  get(name: string): Float32Array | undefined
  /** A half-precision tensor's bits as stored, for weights the native addon keeps (optional). */
  getHalf?(name: string): HalfBits | undefined
}

function isWeightSource(w: WeightMap | WeightSource): w is WeightSource {
  return typeof (w as Partial<WeightSource>).shapeOf === 'function'
}

/** Missing, unexpected or wrongly sized base weights. */
export class ModelWeightError extends Error {
  override readonly name = 'ModelWeightError'
  constructor(
    message: string,
    readonly weight?: string,
  ) {
    super(weight === undefined ? message : `weight '${weight}': ${message}`)
  }
}

export interface LlamaModelOptions {
  /** Which linear layers targetModuleShapes() offers for LoRA (default q_proj, v_proj). */
  readonly targetModules?: readonly LinearModuleKind[]
  /**
   * Keep each frozen weight in both layouts so the backward pass uses a plain matmul
   * (x2 base-weight memory). Default: on for the wasm and cpu backends, off for the
   * native TensorFlow backends and the native GEMM (native.ts), whose transposed
   * matmuls are as fast as plain ones.
   */
  readonly backwardWeightCopies?: boolean
  /**
   * How the model computes (kernels.ts ComputePath): 'native', 'fused' or 'stock'. Chosen
   * once, here; default: the fastest the active backend offers. A path the backend cannot
   * run is refused.
   */
  readonly compute?: ComputePath
  /**
   * Where the frozen weights of the linear layers that take no LoRA (those outside
   * targetModules) live: 'native' in the native addon's memory, out of the 4 GiB wasm
   * heap, in BF16/F16 when the checkpoint's values are (frozen-weight.ts); 'tfjs' as
   * float32 tensors. Default 'auto': native when the native kernels run and the base
   * weights in float32 would take more than AUTO_NATIVE_FROZEN_BYTES of the wasm heap
   * (both give the same bits, at the same speed: bench/frozen-weights.ts; small models
   * keep tfjs tensors, as before). Target modules stay float32 tensors either way (merges
   * write them).
   */
  readonly frozenWeights?: 'auto' | 'native' | 'tfjs'
}

export interface ForwardOptions {
  /** LoRA dropout on the adapter input, training only (PEFT lora_dropout). */
  readonly loraDropout?: number
  /** Seed for the dropout masks of this call. */
  readonly dropoutSeed?: number
}

const MASK_VALUE = -1e9

/** frozenWeights 'auto' moves frozen weights to the native addon above this many float32 bytes of base weights. */
export const AUTO_NATIVE_FROZEN_BYTES = 1 << 30

/**
 * The most float32 base-weight bytes a model keeps as tensors on the wasm backend: its heap
 * holds 4 GiB at most (the wasm32 address space), and activations, gradients and the
 * optimizer's state need the rest.
 */
export const WASM_BASE_WEIGHT_CEILING = 3 * 2 ** 30

/** Bytes of base-weight tensors a model of `c` keeps on the tfjs backend. */
export function tfjsBaseWeightBytes(c: LlamaConfig, targets: readonly LinearModuleKind[], nativeFrozen: boolean, copies: boolean): number {
  const vd = c.vocabSize * c.hiddenSize
  // the embedding and the transposed lm_head (and its backward copy when untied), unless the
  // addon holds the frozen weights (the embedding is then in JS memory: embedding.ts)
  let floats = nativeFrozen ? 0 : 2 * vd + (copies && !c.tieWordEmbeddings ? vd : 0)
  const lin = linearShapes(c)
  for (const kind of LINEAR_MODULES) {
    if (nativeFrozen && !targets.includes(kind)) continue
    floats += c.numLayers * lin[kind][0] * lin[kind][1] * (copies ? 2 : 1)
  }
  return floats * 4
}

/** Refuses, with the reason and the way out, a model whose tensors cannot fit the wasm heap. */
function checkWasmCeiling(c: LlamaConfig, targets: readonly LinearModuleKind[], nativeFrozen: boolean, copies: boolean, nativeKernels: boolean): void {
  const bytes = tfjsBaseWeightBytes(c, targets, nativeFrozen, copies)
  if (bytes <= WASM_BASE_WEIGHT_CEILING) return
  const gib = (b: number): string => `${(b / 2 ** 30).toFixed(1)} GiB`
  const way = !nativeKernels
    ? 'with the native kernels (npm run build:native) the layers that take no LoRA live outside the heap, in the checkpoint\'s precision'
    : !nativeFrozen
      ? "frozenWeights 'native' (the default for models this size) keeps the layers that take no LoRA outside the heap"
      : 'fewer LoRA target modules (their weights stay float32 tensors) or a smaller model'
  throw new ModelWeightError(
    `this ${(parameterCount(c) / 1e9).toFixed(2)}B-parameter model needs ${gib(bytes)} of float32 weight tensors on the wasm backend, more than the ${gib(WASM_BASE_WEIGHT_CEILING)} its 4 GiB heap leaves for weights; ${way}`,
  )
}

// ---------------------------------------------------------------------------------
// Weight names and shapes
// ---------------------------------------------------------------------------------

function linearShapes(c: LlamaConfig): Record<LinearModuleKind, [number, number]> {
  const d = c.hiddenSize
  return {
    q_proj: [c.numHeads * c.headDim, d],
    k_proj: [c.numKvHeads * c.headDim, d],
    v_proj: [c.numKvHeads * c.headDim, d],
    o_proj: [d, c.numHeads * c.headDim],
    gate_proj: [c.intermediateSize, d],
    up_proj: [c.intermediateSize, d],
    down_proj: [d, c.intermediateSize],
  }
}

/** Whether a linear layer has a bias: q/k/v with `qkvBias` (Qwen2, Llama attention_bias), o with `oBias`. */
export function hasBias(c: LlamaConfig, kind: LinearModuleKind): boolean {
  if (kind === 'q_proj' || kind === 'k_proj' || kind === 'v_proj') return c.qkvBias === true
  return kind === 'o_proj' && c.oBias === true
}

/** Module name of a linear layer, e.g. `model.layers.0.self_attn.q_proj`. */
export function moduleName(layer: number, kind: LinearModuleKind): string {
  const block = kind === 'gate_proj' || kind === 'up_proj' || kind === 'down_proj' ? 'mlp' : 'self_attn'
  return `model.layers.${layer}.${block}.${kind}`
}

/** Every base weight the config needs, in HF naming and layout. */
export function expectedWeightShapes(c: LlamaConfig): Map<string, number[]> {
  const out = new Map<string, number[]>()
  out.set('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize])
  const lin = linearShapes(c)
  for (let i = 0; i < c.numLayers; i++) {
    out.set(`model.layers.${i}.input_layernorm.weight`, [c.hiddenSize])
    for (const kind of LINEAR_MODULES) {
      out.set(`${moduleName(i, kind)}.weight`, lin[kind])
      if (hasBias(c, kind)) out.set(`${moduleName(i, kind)}.bias`, [lin[kind][0]])
    }
    out.set(`model.layers.${i}.post_attention_layernorm.weight`, [c.hiddenSize])
  }
  out.set('model.norm.weight', [c.hiddenSize])
  if (!c.tieWordEmbeddings) out.set('lm_head.weight', [c.vocabSize, c.hiddenSize])
  return out
}

/** Random base weights (N(0, 0.02), norms 1), for tests and benchmarks. */
export function randomLlamaWeights(c: LlamaConfig, seed: SeedLike, std = 0.02): Map<string, Float32Array> {
  const prng = createPrng(seed).fork('llama.random-weights')
  const out = new Map<string, Float32Array>()
  for (const [name, shape] of expectedWeightShapes(c)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1))
    if (name.endsWith('norm.weight')) data.fill(1)
    else prng.fork(name).fillNormal(data, 0, std)
    out.set(name, data)
  }
  return out
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

interface Block {
  inputNorm: tf.Tensor1D
  postNorm: tf.Tensor1D
  readonly q: LoraLinear
  readonly k: LoraLinear
  readonly v: LoraLinear
  readonly o: LoraLinear
  readonly gate: LoraLinear
  readonly up: LoraLinear
  readonly down: LoraLinear
}

export class LlamaModel {
  readonly config: LlamaConfig
  readonly targetModules: readonly LinearModuleKind[]
  private readonly embed: FrozenEmbedding // [vocab, d]
  private lmHeadT: tf.Tensor2D | undefined // [d, vocab] (undefined when the addon holds lm_head)
  private nativeHead: NativeFrozenWeight | undefined // lm_head [vocab, d] in the native addon
  private lmHeadW: tf.Tensor2D | undefined // [vocab, d] for the backward pass (untied, with copies)
  private readonly copies: boolean
  /** How this model computes (LlamaModelOptions.compute), fixed when it is made. */
  readonly compute: ComputePath
  private finalNorm: tf.Tensor1D
  private readonly blocks: Block[]
  private readonly linears = new Map<string, LoraLinear>()
  private rope: { cos: tf.Tensor2D; sin: tf.Tensor2D; length: number } | undefined
  private disposed = false

  constructor(config: LlamaConfig, weights: WeightMap | WeightSource, options: LlamaModelOptions = {}) {
    validateConfig(config)
    this.config = config
    this.targetModules = options.targetModules ?? DEFAULT_TARGET_MODULES
    for (const t of this.targetModules) {
      if (!LINEAR_MODULES.includes(t)) throw new ModelWeightError(`unknown target module '${String(t)}' (one of ${LINEAR_MODULES.join(', ')})`)
    }
    // Where the frozen weights of non-target layers live (see LlamaModelOptions.frozenWeights).
    this.compute = resolveComputePath(options.compute)
    const kernels = activeNativeKernels()
    const storage = options.frozenWeights ?? 'auto'
    if (storage === 'native' && !canHoldFrozenWeights(kernels)) {
      throw new ModelWeightError(`frozenWeights 'native' needs the native kernels on the wasm backend (${tf.getBackend()} is active; see npm run build:native)`)
    }
    const wanted = storage === 'native' || (storage === 'auto' && parameterCount(config) * 4 > AUTO_NATIVE_FROZEN_BYTES)
    const nativeFrozen = wanted && canHoldFrozenWeights(kernels) ? kernels : undefined
    this.copies = options.backwardWeightCopies ?? (tf.getBackend() !== 'tensorflow' && !nativeKernelsActive())
    if (tf.getBackend() === 'wasm') checkWasmCeiling(config, this.targetModules, nativeFrozen !== undefined, this.copies, kernels !== undefined)
    const expected = expectedWeightShapes(config)
    for (const [name, shape] of expected) {
      if (isWeightSource(weights)) {
        const s = weights.shapeOf(name)
        if (s === undefined) throw new ModelWeightError('missing', name)
        if (s.length !== shape.length || s.some((d, i) => d !== shape[i])) {
          throw new ModelWeightError(`has shape [${s.join(', ')}], expected [${shape.join(', ')}]`, name)
        }
        continue
      }
      const w = weights.get(name)
      if (w === undefined) throw new ModelWeightError('missing', name)
      checkSize(name, w, shape)
    }
    for (const name of weights.keys()) {
      if (!expected.has(name) && !(config.tieWordEmbeddings && name === 'lm_head.weight')) {
        throw new ModelWeightError('not a weight of this config', name)
      }
    }
    const get = (name: string): Float32Array => {
      const w = weights.get(name)
      if (w === undefined) throw new ModelWeightError('missing', name)
      checkSize(name, w, expected.get(name) ?? (name === 'lm_head.weight' ? [c.vocabSize, c.hiddenSize] : []))
      return w
    }
    const c = config
    // The lm_head is frozen too: with the addon holding frozen weights, it lives there, and
    // the embedding leaves the wasm heap for JS memory in its checkpoint precision (embedding.ts).
    const halfOf = (name: string): HalfBits | undefined => (nativeFrozen !== undefined && isWeightSource(weights) ? weights.getHalf?.(name) : undefined)
    let embedValues: Float32Array | HalfBits | undefined = halfOf('model.embed_tokens.weight') ?? get('model.embed_tokens.weight')
    this.embed = new FrozenEmbedding(embedValues, c.vocabSize, c.hiddenSize, nativeFrozen !== undefined)
    if (nativeFrozen !== undefined) {
      const head = c.tieWordEmbeddings ? embedValues : (halfOf('lm_head.weight') ?? get('lm_head.weight'))
      this.nativeHead = new NativeFrozenWeight(nativeFrozen, head, c.vocabSize, c.hiddenSize)
    } else {
      const head = c.tieWordEmbeddings ? (embedValues as Float32Array) : get('lm_head.weight')
      this.lmHeadT = tf.tensor2d(transpose2d(head, c.vocabSize, c.hiddenSize), [c.hiddenSize, c.vocabSize])
      if (this.copies && !c.tieWordEmbeddings) this.lmHeadW = tf.tensor2d(head, [c.vocabSize, c.hiddenSize])
    }
    // The tensors hold copies: let the largest decoded array go before the layers load.
    embedValues = undefined
    this.finalNorm = tf.tensor1d(get('model.norm.weight'))
    const shapes = linearShapes(c)
    const linear = (layer: number, kind: LinearModuleKind): LoraLinear => {
      const name = moduleName(layer, kind)
      const [out, inF] = shapes[kind]
      const holder = this.targetModules.includes(kind) ? undefined : nativeFrozen
      const weight = (holder !== undefined ? halfOf(`${name}.weight`) : undefined) ?? get(`${name}.weight`)
      const l = new LoraLinear(name, weight, out, inF, this.copies, hasBias(c, kind) ? get(`${name}.bias`) : undefined, holder)
      this.linears.set(name, l)
      return l
    }
    this.blocks = []
    for (let i = 0; i < c.numLayers; i++) {
      this.blocks.push({
        inputNorm: tf.tensor1d(get(`model.layers.${i}.input_layernorm.weight`)),
        postNorm: tf.tensor1d(get(`model.layers.${i}.post_attention_layernorm.weight`)),
        q: linear(i, 'q_proj'),
        k: linear(i, 'k_proj'),
        v: linear(i, 'v_proj'),
        o: linear(i, 'o_proj'),
        gate: linear(i, 'gate_proj'),
        up: linear(i, 'up_proj'),
        down: linear(i, 'down_proj'),
      })
    }
  }

  /** A model with random weights (tests, benchmarks). */
  static random(config: LlamaConfig, seed: SeedLike, options: LlamaModelOptions = {}): LlamaModel {
    return new LlamaModel(config, randomLlamaWeights(config, seed), options)
  }

  // -------------------------------------------------------------------------------
  // Forward pass
  // -------------------------------------------------------------------------------

  /** Logits [B, T, vocab] for token ids [B, T] (int32). The caller owns the result. */
  forward(inputIds: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, t] = inputIds.shape
      return this.lmHead(this.hiddenStates(inputIds, options)).reshape([b, t, this.config.vocabSize])
    })
  }

  /** Final-norm hidden states [B*T, hidden] for token ids [B, T]. */
  hiddenStates(inputIds: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor2D {
    this.assertLive()
    const [b, t] = inputIds.shape
    if (t > this.config.maxPositionEmbeddings) {
      throw new RangeError(`sequence length ${t} exceeds maxPositionEmbeddings ${this.config.maxPositionEmbeddings}`)
    }
    const drop = loraDropout(options)
    const dropout = drop?.fn
    const ops = this.compute === 'stock' ? TF_OPS : FUSED_OPS
    const eps = this.config.rmsNormEps
    return tf.tidy(() => {
      const { cos, sin } = this.ropeTables(t)
      // Sliding-window attention (Mistral) differs from causal attention only past the window.
      const window = this.config.slidingWindow !== undefined && t > this.config.slidingWindow ? this.config.slidingWindow : undefined
      let x = this.embed.gather(inputIds.reshape([b * t]))
      if (this.compute === 'native' && window === undefined) {
        // Each sublayer one tape node with its own backward pass: far less memory (layer-grad.ts).
        const { numHeads: heads, numKvHeads: kvHeads, headDim } = this.config
        const ctx: SublayerContext = { batch: b, seqLen: t, heads, kvHeads, headDim, eps, cos, sin, dropout: drop }
        for (const blk of this.blocks) {
          x = attentionSublayer(x, { norm: blk.inputNorm, q: blk.q, k: blk.k, v: blk.v, o: blk.o }, ctx)
          x = mlpSublayer(x, { norm: blk.postNorm, gate: blk.gate, up: blk.up, down: blk.down }, ctx)
        }
        return fusedRmsNorm(x, this.finalNorm, eps)
      }
      const mask = causalMask(t, window)
      const causalSoftmax = window === undefined ? ops.causalSoftmax : undefined
      for (const blk of this.blocks) {
        const n = ops.rmsNorm(x, blk.inputNorm, eps)
        x = x.add(this.attention(n, blk, b, t, (z) => ops.rope(z, cos, sin), mask, causalSoftmax, dropout))
        const m = ops.rmsNorm(x, blk.postNorm, eps)
        x = x.add(this.mlp(m, blk, ops.swiglu, dropout))
      }
      return ops.rmsNorm(x, this.finalNorm, eps)
    })
  }

  /** Logits [rows, vocab] for hidden states [rows, hidden]. */
  lmHead(hidden: tf.Tensor2D): tf.Tensor2D {
    if (this.nativeHead !== undefined) return this.nativeHead.matMul(hidden)
    const backward = this.copies ? (this.config.tieWordEmbeddings ? this.embed.tensor : this.lmHeadW) : undefined
    return frozenMatMul(hidden, this.lmHeadT as tf.Tensor2D, backward)
  }

  private attention(
    x: tf.Tensor2D,
    blk: Block,
    b: number,
    t: number,
    rope: (x: tf.Tensor4D) => tf.Tensor4D,
    mask: tf.Tensor2D,
    causalSoftmax: ElementwiseOps['causalSoftmax'],
    dropout: DropoutFn | undefined,
  ): tf.Tensor2D {
    const { numHeads: nh, numKvHeads: nkv, headDim: hd } = this.config
    const rep = nh / nkv
    if (causalSoftmax !== undefined && this.compute === 'native') {
      // One native kernel each way, on the projections' own [B, T, heads, hd] layout.
      const q = rope(blk.q.forward(x, dropout).reshape<tf.Tensor4D>([b, t, nh, hd]))
      const k = rope(blk.k.forward(x, dropout).reshape<tf.Tensor4D>([b, t, nkv, hd]))
      const v = blk.v.forward(x, dropout).reshape<tf.Tensor4D>([b, t, nkv, hd])
      return blk.o.forward(fusedAttention(q, k, v, 1 / Math.sqrt(hd)).reshape([b * t, nh * hd]), dropout)
    }
    // [B*T, heads*hd] -> [B, T, heads, hd] -> rope -> [B, heads, T, hd]
    const q = rope(blk.q.forward(x, dropout).reshape<tf.Tensor4D>([b, t, nh, hd])).transpose([0, 2, 1, 3])
    const k = rope(blk.k.forward(x, dropout).reshape<tf.Tensor4D>([b, t, nkv, hd])).transpose([0, 2, 1, 3])
    const v = blk.v.forward(x, dropout).reshape([b, t, nkv, hd]).transpose([0, 2, 1, 3])
    // GQA without repeating k/v: query head h uses kv head floor(h / rep) (HF repeat_kv), so
    // the rep query heads of one kv head stack into rows: q [B, KV, rep*T, hd].
    // scores = q k^T / sqrt(hd) + causal mask, softmax over keys
    let probs: tf.Tensor4D
    if (causalSoftmax !== undefined) {
      probs = causalSoftmax(tf.matMul(q.reshape<tf.Tensor4D>([b, nkv, rep * t, hd]), k, false, true), 1 / Math.sqrt(hd))
    } else {
      const qg = q.mul(1 / Math.sqrt(hd)).reshape([b, nkv, rep * t, hd])
      const scores = tf.matMul(qg, k, false, true).reshape([b, nkv, rep, t, t]).add(mask)
      probs = tf.softmax(scores).reshape([b, nkv, rep * t, t])
    }
    const out = tf.matMul(probs, v) // [B, KV, rep*T, hd] = [B, H, T, hd]
    const merged = out.reshape([b, nh, t, hd]).transpose([0, 2, 1, 3]).reshape([b * t, nh * hd]) as tf.Tensor2D
    return blk.o.forward(merged, dropout)
  }

  private mlp(x: tf.Tensor2D, blk: Block, swiglu: ElementwiseOps['swiglu'], dropout: DropoutFn | undefined): tf.Tensor2D {
    // down(silu(gate(x)) * up(x)),  silu(z) = z * sigmoid(z)
    const g = blk.gate.forward(x, dropout)
    const u = blk.up.forward(x, dropout)
    return blk.down.forward(swiglu(g, u), dropout)
  }

  /** cos/sin tables [T, hd] for positions 0..T-1 (cached for the longest T seen). */
  private ropeTables(t: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
    if (this.rope === undefined || this.rope.length < t) {
      this.rope?.cos.dispose()
      this.rope?.sin.dispose()
      const length = Math.min(this.config.maxPositionEmbeddings, Math.max(t, 2 ** Math.ceil(Math.log2(Math.max(t, 16)))))
      const { cos, sin } = ropeTableValues(length, this.config.headDim, this.config.ropeTheta, this.config.ropeScaling)
      this.rope = {
        cos: tf.keep(tf.tensor2d(cos, [length, this.config.headDim])),
        sin: tf.keep(tf.tensor2d(sin, [length, this.config.headDim])),
        length,
      }
    }
    const hd = this.config.headDim
    return { cos: this.rope.cos.slice([0, 0], [t, hd]), sin: this.rope.sin.slice([0, 0], [t, hd]) }
  }

  // -------------------------------------------------------------------------------
  // LoRA
  // -------------------------------------------------------------------------------

  /** Shapes of the configured target modules, in canonical (name) order. */
  targetModuleShapes(): ModuleShape[] {
    return this.moduleShapes().filter((s) => this.targetModules.some((t) => s.name.endsWith(`.${t}`)))
  }

  /** Shapes of every linear layer (what an adapter may target), in canonical order. */
  moduleShapes(): ModuleShape[] {
    return [...this.linears.values()]
      .map((l) => ({ name: l.name, inFeatures: l.inFeatures, outFeatures: l.outFeatures }))
      .sort((a, b) => compareModuleNames(a.name, b.name))
  }

  /**
   * Replace the LoRA adapters by `adapter` (its modules may be any subset of the linear
   * layers; the others run without LoRA). Values are copied into fresh variables.
   */
  setAdapter(adapter: AdapterSet): void {
    this.assertLive()
    validateAdapterAgainstShapes(adapter, this.moduleShapes())
    this.clearAdapter()
    for (const m of adapter.modules) (this.linears.get(m.name) as LoraLinear).setAdapter(m)
  }

  /** Remove every adapter (the model is then the base model). */
  clearAdapter(): void {
    for (const l of this.linears.values()) l.clearAdapter()
  }

  /** The current adapter as plain Float32Arrays, modules in canonical order. */
  getAdapter(): AdapterSet {
    this.assertLive()
    return { modules: this.adaptedLinears().map((l) => l.getAdapter() as LoraModule) }
  }

  /** getAdapter(), reading the factors asynchronously: on a GPU backend (WebGPU) the way to read them. */
  async readAdapter(): Promise<AdapterSet> {
    this.assertLive()
    return { modules: (await Promise.all(this.adaptedLinears().map((l) => l.readAdapter()))) as LoraModule[] }
  }

  /** Names of the modules that carry an adapter, canonical order. */
  adapterModuleNames(): string[] {
    return this.adaptedLinears().map((l) => l.name)
  }

  /** The trainable variables (A then B of each adapted module, canonical order). */
  trainableVariables(): tf.Variable[] {
    return this.adaptedLinears().flatMap((l) => l.variables())
  }

  private adaptedLinears(): LoraLinear[] {
    return [...this.linears.values()].filter((l) => l.hasAdapter).sort((a, b) => compareModuleNames(a.name, b.name))
  }

  // -------------------------------------------------------------------------------
  // Base weights (HF names and layout)
  // -------------------------------------------------------------------------------

  /** Names of every base weight (HF naming). */
  baseWeightNames(): string[] {
    return [...expectedWeightShapes(this.config).keys()]
  }

  /**
   * A base weight in HF layout (`model.layers.0.self_attn.q_proj.weight` is [out, in]).
   * A module name without `.weight` is accepted for linear layers.
   */
  getBaseWeight(name: string): Float32Array {
    this.assertLive()
    const [kind, key] = this.resolveWeight(name)
    switch (kind) {
      case 'linear':
        return (this.linears.get(key) as LoraLinear).getWeight()
      case 'bias':
        return (this.linears.get(key) as LoraLinear).getBias() as Float32Array
      case 'embed':
        return this.embed.read()
      case 'lm_head':
        if (this.nativeHead !== undefined) return this.nativeHead.read()
        return transpose2d((this.lmHeadT as tf.Tensor2D).dataSync() as Float32Array, this.config.hiddenSize, this.config.vocabSize)
      case 'norm':
        return this.normTensor(key).dataSync().slice() as Float32Array
    }
  }

  /** getBaseWeight(), reading asynchronously: on a GPU backend (WebGPU) the way to read a weight. */
  async readBaseWeight(name: string): Promise<Float32Array> {
    this.assertLive()
    const [kind, key] = this.resolveWeight(name)
    switch (kind) {
      case 'linear':
        return (this.linears.get(key) as LoraLinear).readWeight()
      case 'bias':
        return (await (this.linears.get(key) as LoraLinear).readBias()) as Float32Array
      case 'embed':
        return this.embed.readAsync()
      case 'lm_head':
        if (this.nativeHead !== undefined) return this.nativeHead.read()
        return transpose2d((await (this.lmHeadT as tf.Tensor2D).data()) as Float32Array, this.config.hiddenSize, this.config.vocabSize)
      case 'norm':
        return ((await this.normTensor(key).data()) as Float32Array).slice()
    }
  }

  /** Replace a base weight (HF layout); the values are copied. */
  setBaseWeight(name: string, data: Float32Array): void {
    this.assertLive()
    const [kind, key] = this.resolveWeight(name)
    const c = this.config
    const shape = expectedWeightShapes(c).get(kind === 'linear' ? `${key}.weight` : kind === 'bias' ? `${key}.bias` : key) as number[]
    checkSize(name, data, shape)
    switch (kind) {
      case 'linear':
        ;(this.linears.get(key) as LoraLinear).setWeight(data)
        return
      case 'bias':
        ;(this.linears.get(key) as LoraLinear).setBias(data)
        return
      case 'embed': {
        this.embed.set(data)
        if (c.tieWordEmbeddings) this.replaceLmHead(data)
        return
      }
      case 'lm_head':
        this.replaceLmHead(data)
        return
      case 'norm': {
        const t = tf.tensor1d(data.slice())
        if (key === 'model.norm.weight') {
          this.finalNorm.dispose()
          this.finalNorm = t
        } else {
          const m = /^model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight$/.exec(key) as RegExpExecArray
          const blk = this.blocks[Number(m[1])]
          if (m[2] === 'input_layernorm') {
            blk.inputNorm.dispose()
            blk.inputNorm = t
          } else {
            blk.postNorm.dispose()
            blk.postNorm = t
          }
        }
        return
      }
    }
  }

  private replaceLmHead(data: Float32Array): void {
    const c = this.config
    if (this.nativeHead !== undefined) {
      this.nativeHead.set(data)
      return
    }
    const old = [this.lmHeadT, this.lmHeadW]
    this.lmHeadT = tf.tensor2d(transpose2d(data, c.vocabSize, c.hiddenSize), [c.hiddenSize, c.vocabSize])
    if (this.copies && !c.tieWordEmbeddings) this.lmHeadW = tf.tensor2d(data.slice(), [c.vocabSize, c.hiddenSize])
    tf.dispose(old.filter((t): t is tf.Tensor2D => t !== undefined))
  }

  private resolveWeight(name: string): ['linear' | 'bias' | 'embed' | 'lm_head' | 'norm', string] {
    if (name.endsWith('.bias')) {
      const key = name.slice(0, -'.bias'.length)
      if (this.linears.get(key)?.getBias() !== undefined) return ['bias', key]
      throw new ModelWeightError('no such base weight', name)
    }
    const moduleKey = name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : name
    if (this.linears.has(moduleKey)) return ['linear', moduleKey]
    if (name === 'model.embed_tokens.weight') return ['embed', name]
    if (name === 'lm_head.weight') {
      if (this.config.tieWordEmbeddings) {
        throw new ModelWeightError('lm_head is tied to model.embed_tokens.weight; use that name', name)
      }
      return ['lm_head', name]
    }
    if (expectedWeightShapes(this.config).has(name) && name.endsWith('norm.weight')) return ['norm', name]
    throw new ModelWeightError('no such base weight', name)
  }

  private normTensor(name: string): tf.Tensor1D {
    if (name === 'model.norm.weight') return this.finalNorm
    const m = /^model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight$/.exec(name) as RegExpExecArray
    const blk = this.blocks[Number(m[1])]
    return m[2] === 'input_layernorm' ? blk.inputNorm : blk.postNorm
  }

  /** Where each linear layer's frozen weight lives ('tfjs', or the addon's 'f32' / 'bf16' / 'f16') and the addon's bytes. */
  frozenWeightStorage(): { modules: Record<string, 'tfjs' | FrozenDtype>; nativeBytes: number } {
    const modules: Record<string, 'tfjs' | FrozenDtype> = {}
    let nativeBytes = 0
    for (const [name, l] of this.linears) {
      modules[name] = l.weightStorage
      nativeBytes += l.nativeBytes
    }
    modules['lm_head'] = this.nativeHead?.dtype ?? 'tfjs'
    modules['embed_tokens'] = this.embed.storage
    nativeBytes += this.nativeHead?.bytes ?? 0
    return { modules, nativeBytes }
  }

  /** Number of base parameters (embedding once when tied). */
  baseParameterCount(): number {
    let n = 0
    for (const [, shape] of expectedWeightShapes(this.config)) n += shape.reduce((a, b) => a * b, 1)
    return n
  }

  /** Free every tensor and variable of the model. */
  dispose(): void {
    if (this.disposed) return
    this.clearAdapter()
    this.nativeHead?.dispose()
    this.embed.dispose()
    const ts: tf.Tensor[] = [this.finalNorm]
    if (this.lmHeadT !== undefined) ts.push(this.lmHeadT)
    if (this.lmHeadW !== undefined) ts.push(this.lmHeadW)
    for (const blk of this.blocks) ts.push(blk.inputNorm, blk.postNorm)
    for (const l of this.linears.values()) l.dispose()
    if (this.rope !== undefined) ts.push(this.rope.cos, this.rope.sin)
    tf.dispose(ts)
    this.rope = undefined
    this.disposed = true
  }

  private assertLive(): void {
    if (this.disposed) throw new Error('LlamaModel has been disposed')
  }
}

function checkSize(name: string, data: Float32Array, shape: readonly number[]): void {
  if (!(data instanceof Float32Array)) throw new ModelWeightError('must be a Float32Array', name)
  const n = shape.reduce((a, b) => a * b, 1)
  if (data.length !== n) {
    throw new ModelWeightError(`has ${data.length} values, expected shape [${shape.join(', ')}] (${n} values)`, name)
  }
}

// ---------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------

/**
 * The element-wise parts in two implementations: tf ops (the reference, used on the
 * native backends) and fused JS kernels (kernels.ts) where those are registered.
 */
interface ElementwiseOps {
  rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D
  rope(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D
  swiglu(g: tf.Tensor2D, u: tf.Tensor2D): tf.Tensor2D
  /** Masked, scaled softmax of raw scores [B, KV, rep*T, T] in one pass (fused only). */
  causalSoftmax?: (scores: tf.Tensor4D, scale: number) => tf.Tensor4D
}
const TF_OPS: ElementwiseOps = { rmsNorm, rope: applyRope, swiglu: (g, u) => g.mul(tf.sigmoid(g)).mul(u) }
const FUSED_OPS: ElementwiseOps = { rmsNorm: fusedRmsNorm, rope: fusedRope, swiglu: fusedSwiglu, causalSoftmax: fusedCausalSoftmax }

/** RMSNorm: x / sqrt(mean(x^2) + eps) * w, over the last axis. */
function rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  const ms = tf.mean(tf.square(x), -1, true)
  return x.mul(tf.rsqrt(ms.add(eps))).mul(w)
}

/**
 * Rotary embedding, HF convention: x * cos + rotate_half(x) * sin with
 * rotate_half([x1, x2]) = [-x2, x1] over the two halves of the head dimension.
 * x is [B, T, heads, hd]; cos/sin are [T, hd].
 */
function applyRope(x: tf.Tensor4D, cos2d: tf.Tensor2D, sin2d: tf.Tensor2D): tf.Tensor4D {
  const [t, hd] = cos2d.shape
  const cos = cos2d.reshape([t, 1, hd])
  const sin = sin2d.reshape([t, 1, hd])
  // The gradient is dy * cos + rotate_half^T(dy * sin), rotate_half^T([a, b]) = [b, -a];
  // written out because autodiff of concat goes through the wasm split kernel, which
  // copies its whole input once per piece.
  const f = tf.customGrad((...args) => {
    const xIn = args[0] as tf.Tensor4D
    const save = args[1] as tf.GradSaveFunc
    save([cos, sin])
    return {
      value: xIn.mul(cos).add(rotateHalf(xIn, false).mul(sin)),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [c, s] = saved
        return dy.mul(c).add(rotateHalf(dy.mul(s) as tf.Tensor4D, true))
      },
    }
  })
  return f(x) as tf.Tensor4D
}

/** [x1, x2] -> [-x2, x1] over the last axis, or its transpose [x2, -x1]. */
function rotateHalf(x: tf.Tensor4D, transposed: boolean): tf.Tensor4D {
  const [b, t, h, hd] = x.shape
  const half = hd / 2
  const x1 = tf.slice(x, [0, 0, 0, 0], [b, t, h, half])
  const x2 = tf.slice(x, [0, 0, 0, half], [b, t, h, half])
  return tf.concat(transposed ? [x2, tf.neg(x1)] : [tf.neg(x2), x1], -1)
}

/**
 * cos/sin of the rotary angles, row-major [length, hd]:
 *   inv_freq_i = 1 / theta^(2i / hd),  angle(p, i) = p * inv_freq_i,  emb = [angles, angles]
 * computed in float32 steps like HF's LlamaRotaryEmbedding, so real checkpoints match;
 * `scaling` rescales inv_freq as HF's rope initialisation functions do (ropeInvFreq).
 */
export function ropeTableValues(length: number, hd: number, theta: number, scaling?: RopeScaling): { cos: Float32Array; sin: Float32Array } {
  const half = hd / 2
  const invFreq = ropeInvFreq(hd, theta, scaling)
  const cos = new Float32Array(length * hd)
  const sin = new Float32Array(length * hd)
  for (let p = 0; p < length; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * invFreq[i])
      const c = Math.cos(angle)
      const s = Math.sin(angle)
      cos[p * hd + i] = c
      cos[p * hd + half + i] = c
      sin[p * hd + i] = s
      sin[p * hd + half + i] = s
    }
  }
  return { cos, sin }
}

/**
 * The rotary inverse frequencies [hd / 2] (float32), after HF's
 * _compute_default_rope_parameters, and with scaling:
 * - linear (_compute_linear_scaling_rope_parameters): inv_freq / factor;
 * - llama3 (_compute_llama3_parameters): wavelengths 2 pi / inv_freq above
 *   original_max / low_freq_factor are divided by factor, those below
 *   original_max / high_freq_factor are kept, and those between interpolate:
 *   (1 - s) inv_freq / factor + s inv_freq, s = (original_max / wavelen - low) / (high - low).
 */
export function ropeInvFreq(hd: number, theta: number, scaling?: RopeScaling): Float32Array {
  const half = hd / 2
  const f = new Float32Array(half)
  for (let i = 0; i < half; i++) f[i] = 1 / Math.fround(theta ** Math.fround((2 * i) / hd))
  if (scaling === undefined) return f
  if (scaling.type === 'linear') return f.map((x) => x / scaling.factor)
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: old } = scaling
  const lowWavelen = old / low
  const highWavelen = old / high
  return f.map((x) => {
    const wavelen = Math.fround((2 * Math.PI) / x)
    if (wavelen > lowWavelen) return x / factor
    if (wavelen < highWavelen) return x
    const smooth = Math.fround((old / wavelen - low) / (high - low))
    return Math.fround((1 - smooth) * Math.fround(x / factor) + smooth * x)
  })
}

/**
 * Additive attention mask [T, T]: 0 where the query sees the key (key <= query, and with
 * a sliding window W also query - key < W, as in HF Mistral), a large negative value elsewhere.
 */
function causalMask(t: number, window?: number): tf.Tensor2D {
  const m = new Float32Array(t * t)
  for (let i = 0; i < t; i++) {
    for (let j = 0; j < t; j++) if (j > i || (window !== undefined && i - j >= window)) m[i * t + j] = MASK_VALUE
  }
  return tf.tensor2d(m, [t, t])
}

/** LoRA dropout for one forward call: a fresh mask seed for every application. */
function loraDropout(options: ForwardOptions): LoraDropout | undefined {
  const rate = options.loraDropout ?? 0
  if (!(rate >= 0 && rate < 1)) throw new RangeError(`loraDropout must be in [0, 1), got ${rate}`)
  return rate === 0 ? undefined : new LoraDropout(rate, options.dropoutSeed ?? 0)
}
