/**
 * Local LoRA training: next-token cross-entropy on response tokens only, AdamW, global
 * gradient-norm clipping, seeded batching, held-out evaluation.
 *
 * Targets: position i of an example predicts token i + 1. With `labels` (HF style, aligned
 * with inputIds, -100 = ignored) the target of position i is labels[i + 1]; otherwise it
 * is inputIds[i + 1] when i + 1 >= promptLength (the prompt is context, not target).
 *
 * AdamW (decoupled weight decay, as torch.optim.AdamW), for each trainable p with grad g:
 *   p <- p - lr * wd * p
 *   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
 *   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * after clipping: g <- g * min(1, maxGradNorm / (||g||_2 + 1e-6)) over all grads together.
 *
 * Every call starts a fresh optimizer (FLoRA starts each round with fresh state).
 */
import * as tf from '@tensorflow/tfjs'
import { BACKEND_DEAD } from './backend-dead.js'
import { createPrng, type SeedLike } from '../lora/prng.js'
import { AdamW } from './adamw.js'
import { type ComputePath, crossEntropyLoop, fusedCrossEntropy } from './kernels.js'
import type { LlamaModel } from './llama.js'

export const IGNORE_INDEX = -100

export interface TrainingExample {
  readonly inputIds: readonly number[]
  /** Tokens before this index are prompt (no loss on predicting them). Default 0. */
  readonly promptLength?: number
  /** HF-style labels aligned with inputIds (-100 = no loss); overrides promptLength. */
  readonly labels?: readonly number[]
}

export type LrSchedule = 'constant' | 'linear' | 'cosine'

export interface TrainOptions {
  readonly steps: number
  readonly batchSize: number
  /** Examples are cut to this many tokens. */
  readonly seqLen: number
  readonly lr: number
  readonly seed: SeedLike
  /** Decoupled weight decay (default 0, the HF Trainer default). */
  readonly weightDecay?: number
  readonly beta1?: number
  readonly beta2?: number
  readonly eps?: number
  /** Clip the global gradient norm to this (default 1.0; 0 or Infinity disables). */
  readonly maxGradNorm?: number
  /** Linear warmup steps (default 0), then the schedule (default constant). */
  readonly warmupSteps?: number
  readonly schedule?: LrSchedule
  /** Id used for padding (never a target). Default 0. */
  readonly padId?: number
  /** LoRA dropout (default 0). */
  readonly loraDropout?: number
  /** Held-out examples; evaluated every `evalEvery` steps (default: at the end only). */
  readonly evalExamples?: readonly TrainingExample[]
  readonly evalEvery?: number
  readonly evalBatchSize?: number
  readonly onStep?: (info: StepInfo) => void
  readonly signal?: AbortSignal
}

export interface EvalResult {
  /** Mean cross-entropy per target token (nats). */
  readonly loss: number
  readonly perplexity: number
  /** Target tokens evaluated. */
  readonly tokens: number
  /** Share of target tokens the model's greedy (argmax) prediction gets right. */
  readonly accuracy?: number
}

export interface StepInfo {
  /** 1-based. */
  readonly step: number
  readonly steps: number
  readonly loss: number
  /** Global gradient norm before clipping. */
  readonly gradNorm: number
  readonly lr: number
  /** Tokens processed in this step (including padding) and target tokens. */
  readonly tokens: number
  readonly targetTokens: number
  readonly elapsedMs: number
  /** Input tokens per second over the run so far. */
  readonly tokensPerSecond: number
  readonly eval?: EvalResult
}

export interface TrainResult {
  readonly steps: number
  readonly losses: readonly number[]
  readonly finalLoss: number
  readonly tokens: number
  readonly elapsedMs: number
  readonly eval?: EvalResult
}

export class TrainingError extends Error {
  override readonly name = 'TrainingError'
}

/** Thrown when the signal aborts training; the model keeps the adapter trained so far. */
export class TrainingAbortedError extends Error {
  override readonly name = 'AbortError'
  constructor(readonly stepsCompleted: number) {
    super(`training aborted after ${stepsCompleted} steps`)
  }
}

// ---------------------------------------------------------------------------------
// Batching
// ---------------------------------------------------------------------------------

export interface Batch {
  readonly batchSize: number
  readonly seqLen: number
  /** [batchSize * seqLen] token ids, right-padded. */
  readonly ids: Int32Array
  /** Flat positions (b * seqLen + t) that have a target. */
  readonly rows: Int32Array
  /** Target id of each row. */
  readonly targets: Int32Array
}

/** Targets of one example cut to `len` tokens: targets[i] for position i, or IGNORE_INDEX. */
export function exampleTargets(ex: TrainingExample, len: number): Int32Array {
  const out = new Int32Array(len).fill(IGNORE_INDEX)
  const ids = ex.inputIds
  if (ex.labels !== undefined && ex.labels.length !== ids.length) {
    throw new TrainingError(`labels has ${ex.labels.length} entries, inputIds ${ids.length}`)
  }
  const prompt = ex.promptLength ?? 0
  for (let i = 0; i + 1 < len; i++) {
    if (ex.labels !== undefined) out[i] = ex.labels[i + 1]
    else if (i + 1 >= prompt) out[i] = ids[i + 1]
  }
  return out
}

/** Pad/cut a group of examples into one batch (length = min(seqLen, longest)). */
export function makeBatch(examples: readonly TrainingExample[], seqLen: number, padId: number, vocabSize?: number): Batch {
  if (examples.length === 0) throw new TrainingError('empty batch')
  const t = Math.min(seqLen, Math.max(...examples.map((e) => e.inputIds.length)))
  if (t < 1) throw new TrainingError('examples are empty')
  const ids = new Int32Array(examples.length * t).fill(padId)
  const rows: number[] = []
  const targets: number[] = []
  examples.forEach((ex, b) => {
    const len = Math.min(t, ex.inputIds.length)
    for (let i = 0; i < len; i++) {
      const id = ex.inputIds[i]
      if (!Number.isInteger(id) || id < 0 || (vocabSize !== undefined && id >= vocabSize)) {
        throw new TrainingError(`token id ${id} at position ${i} is outside the vocabulary`)
      }
      ids[b * t + i] = id
    }
    const tg = exampleTargets(ex, len)
    for (let i = 0; i < len; i++) {
      if (tg[i] === IGNORE_INDEX) continue
      if (!Number.isInteger(tg[i]) || tg[i] < 0 || (vocabSize !== undefined && tg[i] >= vocabSize)) {
        throw new TrainingError(`label ${tg[i]} at position ${i + 1} is outside the vocabulary`)
      }
      rows.push(b * t + i)
      targets.push(tg[i])
    }
  })
  return { batchSize: examples.length, seqLen: t, ids, rows: Int32Array.from(rows), targets: Int32Array.from(targets) }
}

// ---------------------------------------------------------------------------------
// Loss
// ---------------------------------------------------------------------------------

/** x[rows] with a scatter gradient (tf.gather's gradient kernel is missing on wasm). */
function gatherRows(x: tf.Tensor2D, rows: tf.Tensor1D): tf.Tensor2D {
  const f = tf.customGrad((...args) => {
    const xIn = args[0] as tf.Tensor
    return {
      value: tf.gather(xIn, rows),
      gradFunc: (dy: tf.Tensor) => tf.scatterND(rows.expandDims(1), dy, xIn.shape),
    }
  })
  return f(x) as tf.Tensor2D
}

/**
 * Mean cross-entropy of logits [M, V] against integer targets [M]:
 *   loss = mean_i (logsumexp(z_i) - z_i[t_i]),   d loss / d z_i = (softmax(z_i) - onehot(t_i)) / M
 * One fused pass over the logits (max, exp-sum, gradient): the fused kernel on wasm/cpu
 * (native when the addon runs), else the same JS loop over downloaded logits.
 */
function crossEntropy(logits: tf.Tensor2D, targets: BatchTensors['targets'], withGrad: boolean, compute: ComputePath): tf.Scalar {
  if (compute !== 'stock') return fusedCrossEntropy(logits, targets.tensor, withGrad)
  if (onGpu()) {
    // The logits stay on the GPU: the same formula in tf ops (reading them back synchronously
    // is slow on WebGPU, and in a headless tab without a canvas it reads zeros).
    return tf.tidy(() => tf.mean(tf.logSumExp(logits, 1).sub(tf.sum(logits.mul(tf.oneHot(targets.tensor, logits.shape[1])), 1))) as tf.Scalar)
  }
  const f = tf.customGrad((...args) => {
    const z = args[0] as tf.Tensor2D
    const save = args[1] as tf.GradSaveFunc
    const [m, v] = z.shape
    const grad = withGrad ? new Float32Array(m * v) : null
    const loss = crossEntropyLoop(z.dataSync() as Float32Array, targets.values, grad, m, v)
    if (grad !== null) save([tf.tensor2d(grad, [m, v])])
    return {
      value: tf.scalar(loss),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => saved[0].mul(dy),
    }
  })
  return f(logits) as tf.Scalar
}

/** Whether the active backend computes on a GPU, where values are read back asynchronously (WebGPU, WebGL). */
function onGpu(): boolean {
  const b = tf.getBackend()
  return b === 'webgpu' || b === 'webgl'
}

/** Mean loss of a batch; the caller disposes the result (or runs it under a tape). */
function batchLoss(
  model: LlamaModel,
  batch: Batch,
  t: BatchTensors,
  withGrad: boolean,
  dropout?: { rate: number; seed: number },
): tf.Scalar {
  return tf.tidy(() => {
    const hidden = model.hiddenStates(t.ids, dropout === undefined ? {} : { loraDropout: dropout.rate, dropoutSeed: dropout.seed })
    const logits = model.lmHead(gatherRows(hidden, t.rows))
    return crossEntropy(logits, t.targets, withGrad, model.compute)
  })
}

interface BatchTensors {
  readonly ids: tf.Tensor2D
  readonly rows: tf.Tensor1D
  /** The targets of the rows, on the backend and in JS. */
  readonly targets: { readonly tensor: tf.Tensor1D; readonly values: Int32Array }
}

function batchTensors(b: Batch): BatchTensors {
  return {
    ids: tf.tensor2d(b.ids, [b.batchSize, b.seqLen], 'int32'),
    rows: tf.tensor1d(b.rows, 'int32'),
    targets: { tensor: tf.tensor1d(b.targets, 'int32'), values: b.targets },
  }
}

function disposeBatch(t: BatchTensors): void {
  tf.dispose([t.ids, t.rows, t.targets.tensor])
}

// ---------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------

export interface EvalOptions {
  readonly batchSize?: number
  readonly seqLen: number
  readonly padId?: number
}

/**
 * Mean target-token loss, perplexity and greedy token accuracy over `examples` (no gradients,
 * no dropout). Values are read back asynchronously, which every backend serves (WebGPU only so).
 */
export async function evaluate(model: LlamaModel, examples: readonly TrainingExample[], options: EvalOptions): Promise<EvalResult> {
  const bs = options.batchSize ?? 8
  let sum = 0
  let count = 0
  let correct = 0
  for (let i = 0; i < examples.length; i += bs) {
    const batch = makeBatch(examples.slice(i, i + bs), options.seqLen, options.padId ?? 0, model.config.vocabSize)
    if (batch.rows.length === 0) continue
    const t = batchTensors(batch)
    const [loss, predicted] = tf.tidy(() => {
      const logits = model.lmHead(gatherRows(model.hiddenStates(t.ids, {}), t.rows))
      return [crossEntropy(logits, t.targets, false, model.compute), tf.argMax(logits, -1)] as const
    })
    const [lossValue, guesses] = await Promise.all([loss.data(), predicted.data()])
    sum += (lossValue[0] as number) * batch.rows.length
    for (let k = 0; k < guesses.length; k++) if (guesses[k] === t.targets.values[k]) correct++
    count += batch.rows.length
    loss.dispose()
    predicted.dispose()
    disposeBatch(t)
  }
  if (count === 0) throw new TrainingError('evaluation examples have no target tokens')
  const loss = sum / count
  return { loss, perplexity: Math.exp(loss), tokens: count, accuracy: correct / count }
}

export interface ModuleGradient {
  readonly name: string
  /** d loss / d loraA, [rank, in]. */
  readonly dA: Float32Array
  /** d loss / d loraB, [out, rank]. */
  readonly dB: Float32Array
}

/**
 * Mean target-token loss of one batch of `examples` and its gradient with respect to
 * every adapter matrix (no dropout, no update). For diagnostics and gradient checks.
 */
export async function adapterGradients(
  model: LlamaModel,
  examples: readonly TrainingExample[],
  options: { readonly seqLen: number; readonly padId?: number },
): Promise<{ loss: number; modules: ModuleGradient[] }> {
  const vars = model.trainableVariables()
  if (vars.length === 0) throw new TrainingError('the model has no adapter: call setAdapter first')
  const batch = makeBatch(examples, options.seqLen, options.padId ?? 0, model.config.vocabSize)
  if (batch.rows.length === 0) throw new TrainingError('the examples have no target tokens')
  const bt = batchTensors(batch)
  const { value, grads } = tf.variableGrads(() => batchLoss(model, batch, bt, true), vars)
  const names = model.adapterModuleNames()
  const read = async (t: tf.Tensor): Promise<Float32Array> => ((await t.data()) as Float32Array).slice()
  const modules = await Promise.all(
    names.map(async (name, i) => ({ name, dA: await read(grads[vars[2 * i].name]), dB: await read(grads[vars[2 * i + 1].name]) })),
  )
  const loss = (await value.data())[0] as number
  tf.dispose([value, ...Object.values(grads)])
  disposeBatch(bt)
  return { loss, modules }
}

// ---------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------

/** Lets pending I/O and timers run between steps (setImmediate in Node; a zero timeout in a browser tab). */
function yieldToEventLoop(): Promise<void> {
  return new Promise<void>((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)))
}

/** Learning rate at 1-based step `step`. */
export function learningRate(o: Pick<TrainOptions, 'lr' | 'steps' | 'warmupSteps' | 'schedule'>, step: number): number {
  const warm = o.warmupSteps ?? 0
  if (step <= warm) return (o.lr * step) / warm
  const span = Math.max(1, o.steps - warm)
  const progress = Math.min(1, (step - warm) / span)
  switch (o.schedule ?? 'constant') {
    case 'constant':
      return o.lr
    case 'linear':
      return o.lr * (1 - progress)
    case 'cosine':
      return o.lr * 0.5 * (1 + Math.cos(Math.PI * progress))
  }
}

function checkOptions(o: TrainOptions): void {
  const posInt = (k: keyof TrainOptions) => {
    const v = o[k]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new TrainingError(`${String(k)} must be a positive integer, got ${String(v)}`)
  }
  posInt('steps')
  posInt('batchSize')
  posInt('seqLen')
  if (!(o.lr > 0) || !Number.isFinite(o.lr)) throw new TrainingError(`lr must be > 0, got ${o.lr}`)
  if ((o.weightDecay ?? 0) < 0) throw new TrainingError('weightDecay must be >= 0')
  if ((o.maxGradNorm ?? 1) < 0) throw new TrainingError('maxGradNorm must be >= 0')
}

/**
 * Train the model's current adapter (setAdapter first) for `options.steps` steps.
 * Yields to the event loop between steps so networking keeps running.
 */
export async function trainLora(model: LlamaModel, examples: readonly TrainingExample[], options: TrainOptions): Promise<TrainResult> {
  try {
    return await trainLoraSteps(model, examples, options)
  } catch (err) {
    throw explainWasmAbort(err, options)
  }
}

/**
 * The wasm backend aborts (emscripten's bare `Aborted()`) when its heap, 4 GiB at most, runs
 * out: say so, and what to lower. After an abort the wasm module is dead; the process (or
 * the trainer's worker) must start again.
 */
export function explainWasmAbort(err: unknown, options: { readonly batchSize: number; readonly seqLen: number }): unknown {
  const message = err instanceof Error ? err.message : String(err)
  if (!/^Aborted\(/.test(message) || tf.getBackend() !== 'wasm') return err
  return Object.assign(
    new TrainingError(
      `the wasm backend ran out of memory (its heap holds 4 GiB for the weights, and the activations and gradients of a batch of ${options.batchSize} x ${options.seqLen} tokens): lower the batch size or the sequence length; the backend cannot be used again in this process (${message.split('.')[0]})`,
    ),
    { code: BACKEND_DEAD },
  )
}

async function trainLoraSteps(model: LlamaModel, examples: readonly TrainingExample[], options: TrainOptions): Promise<TrainResult> {
  checkOptions(options)
  const vars = model.trainableVariables()
  if (vars.length === 0) throw new TrainingError('the model has no adapter: call setAdapter first')
  const usable = examples.filter((ex) => exampleTargets(ex, Math.min(options.seqLen, ex.inputIds.length)).some((x) => x !== IGNORE_INDEX))
  if (usable.length === 0) throw new TrainingError('no training example has a target token within seqLen')
  const padId = options.padId ?? 0
  const b1 = options.beta1 ?? 0.9
  const b2 = options.beta2 ?? 0.999
  const eps = options.eps ?? 1e-8
  const wd = options.weightDecay ?? 0
  const maxNorm = options.maxGradNorm ?? 1
  const dropoutRate = options.loraDropout ?? 0
  const prng = createPrng(options.seed).fork('trainer')
  const order = prng.fork('batches')
  const dropoutSeeds = prng.fork('dropout')

  const optimizer = new AdamW(vars, { beta1: b1, beta2: b2, eps, weightDecay: wd, maxGradNorm: maxNorm }, await Promise.all(vars.map((v) => v.data() as Promise<Float32Array>)))
  let queue: number[] = []
  const nextBatch = (): TrainingExample[] => {
    const out: TrainingExample[] = []
    while (out.length < options.batchSize) {
      if (queue.length === 0) queue = order.shuffle([...usable.keys()])
      out.push(usable[queue.pop() as number])
    }
    return out
  }

  const losses: number[] = []
  let tokens = 0
  const start = performance.now()
  let lastEval: EvalResult | undefined
  for (let step = 1; step <= options.steps; step++) {
    if (options.signal?.aborted === true) throw new TrainingAbortedError(step - 1)
    const batch = makeBatch(nextBatch(), options.seqLen, padId, model.config.vocabSize)
    const bt = batchTensors(batch)
    const dropout = dropoutRate > 0 ? { rate: dropoutRate, seed: dropoutSeeds.nextUint32() } : undefined
    const { value, grads } = tf.variableGrads(() => batchLoss(model, batch, bt, true, dropout), vars)
    const lr = learningRate(options, step)
    // Read back asynchronously: the same values on wasm and cpu, and the only way that works on a GPU.
    const gradNorm = await optimizer.stepAsync(vars.map((v) => grads[v.name]), lr)
    const loss = (await value.data())[0] as number
    tf.dispose([value, ...Object.values(grads)])
    disposeBatch(bt)
    if (!Number.isFinite(loss)) throw new TrainingError(`loss is ${loss} at step ${step}`)
    losses.push(loss)
    tokens += batch.batchSize * batch.seqLen
    const evalNow =
      options.evalExamples !== undefined &&
      options.evalExamples.length > 0 &&
      (step === options.steps || (options.evalEvery !== undefined && step % options.evalEvery === 0))
    lastEval = evalNow
      ? await evaluate(model, options.evalExamples as TrainingExample[], { batchSize: options.evalBatchSize, seqLen: options.seqLen, padId })
      : undefined
    const elapsedMs = performance.now() - start
    options.onStep?.({
      step,
      steps: options.steps,
      loss,
      gradNorm,
      lr,
      tokens: batch.batchSize * batch.seqLen,
      targetTokens: batch.rows.length,
      elapsedMs,
      tokensPerSecond: tokens / (elapsedMs / 1000),
      ...(lastEval !== undefined ? { eval: lastEval } : {}),
    })
    // Let timers and sockets run between the (synchronous) steps.
    await yieldToEventLoop()
  }
  return {
    steps: options.steps,
    losses,
    finalLoss: losses[losses.length - 1],
    tokens,
    elapsedMs: performance.now() - start,
    ...(lastEval !== undefined ? { eval: lastEval } : {}),
  }
}
