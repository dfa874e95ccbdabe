/**
 * `flora train` and `flora generate` as library functions: one peer, no network.
 *
 * runTrain: select a backend (and say why better ones were skipped), load a model directory
 * and its tokenizer, load instruction data (the bundled WordNet definition task, or an
 * Alpaca/Dolly JSONL file with a seeded 5% holdout unless --eval-data), evaluate the
 * held-out loss, train a fresh LoRA with a progress bar (JSON lines when not on a TTY),
 * evaluate again, show a few greedy generations for held-out prompts, and save the adapter
 * in PEFT format (optionally the merged model too).
 *
 * Saving is all or nothing: everything is written to a sibling temporary directory that is
 * renamed into place at the end, so an interrupted run (AbortSignal, Ctrl-C) or a failed
 * write never leaves a partial adapter behind. An abort at any point before the save
 * rejects with TrainingAbortedError and saves nothing.
 */
import { existsSync } from 'node:fs'
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { z } from 'zod'
import { mergeIntoWeightsSync } from '../aggregation/merge.js'
import { adapterParamCount, initAdapter } from '../lora/init.js'
import { createPrng } from '../lora/prng.js'
import type { AdapterSet } from '../lora/types.js'
import { type BackendPreference, type BackendSelection, describeBackend, selectBackend } from './backend.js'
import { BACKEND_CHOICES } from './backend-names.js'
import { loadModel, loadPeftAdapter, saveCheckpoint, savePeftAdapter } from './checkpoint.js'
import { parameterCount } from './config.js'
import { readInstructionJsonl } from './data/jsonl.js'
import { formatPrompt } from './data/template.js'
import type { InstructionExample } from './data/types.js'
import { wordnetTask } from './data/wordnet.js'
import { skillsSuite } from './data/skills.js'
import { exactMatchAccuracy, isSkillQuestions } from './exact-match.js'
import { generate } from './generate.js'
import { LINEAR_MODULES, type LinearModuleKind, type LlamaModel } from './llama.js'
import { createProgressReporter } from './progress.js'
import { LlamaTokenizer } from './tokenizer.js'
import {
  type EvalResult,
  evaluate,
  type StepInfo,
  trainLora,
  TrainingAbortedError,
  type TrainingExample,
  type TrainResult,
} from './trainer.js'
import { defaultModelDir } from './bundled.js'
import { checkModelDir, ModelOpenError, openModelForTraining } from './open-model.js'
import { SKILLS_RECIPE, TRAINING_RECIPE } from './recipe.js'

export { defaultModelDir }

/** A bad option or path, phrased for the command line (flag names). */
export class TrainCommandError extends Error {
  override readonly name = 'TrainCommandError'
}

/** Where output goes: anything with write(); `isTTY` decides bar vs JSON lines. */
export interface OutputStream {
  write(chunk: string): unknown
  readonly isTTY?: boolean
}

export { BACKEND_CHOICES }


/** Defaults of `flora train` (the CLI shows them in --help): the shared training recipe (recipe.ts) plus the command's own. */
export const TRAIN_DEFAULTS = {
  ...TRAINING_RECIPE,
  data: 'wordnet',
  steps: 200,
  seed: 0,
  /** WordNet: examples tokenized for training when --max-train is not given: one pass, at least this many. */
  wordnetMinTrain: 4000,
  wordnetMaxEval: 200,
  holdoutFraction: 0.05,
  samples: 2,
  sampleTokens: 48,
} as const

export interface TrainCommandOptions {
  /** Model directory (config.json, model.safetensors, tokenizer.json). Default: the bundled model. */
  readonly model?: string
  /** 'wordnet' (default) or the path of a JSONL file (Alpaca or Dolly records). */
  readonly data?: string
  /** JSONL file of held-out examples (default: WordNet's eval split, or 5% of --data). */
  readonly evalData?: string
  readonly rank?: number
  /** Default 2 x rank (the FLoRA paper's choice). */
  readonly alpha?: number
  /** Linear layers to adapt (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj). */
  readonly targets?: readonly string[]
  readonly steps?: number
  readonly batchSize?: number
  readonly seqLen?: number
  readonly lr?: number
  /** LoRA dropout on the adapter's input while training (default: the recipe's 0.05, the FLoRA paper's). */
  readonly loraDropout?: number
  readonly seed?: number
  readonly backend?: BackendPreference
  /** Cap on training examples (WordNet default: max(4000, steps x batch size)). */
  readonly maxTrain?: number
  /** Cap on held-out examples (WordNet default 200). */
  readonly maxEval?: number
  /** Save the PEFT adapter here (default: not saved). */
  readonly out?: string
  /** Start from this PEFT adapter (its rank, alpha and targets) instead of a fresh one. */
  readonly initAdapter?: string
  /** Also save the merged model (W + s B A) into <out>/merged. */
  readonly merge?: boolean
  /** Greedy generations to show for held-out prompts (default 2). */
  readonly samples?: number
  /** JSON lines on stdout (events and steps) instead of human text and a bar. */
  readonly json?: boolean
  readonly signal?: AbortSignal
  /** Called after every training step (after the progress output). */
  readonly onStep?: (info: StepInfo) => void
  /** Human text or JSON events (default process.stdout). */
  readonly stdout?: OutputStream
  /** Progress bar or progress JSON lines in human mode (default process.stderr). */
  readonly stderr?: OutputStream
}

export interface GenerationSample {
  readonly instruction: string
  readonly input: string
  readonly reference: string
  readonly before: string
  readonly after: string
}

export interface TrainCommandResult {
  readonly backend: BackendSelection
  readonly model: { readonly dir: string; readonly parameters: number; readonly layers: number; readonly hidden: number; readonly vocab: number }
  readonly adapter: { readonly rank: number; readonly alpha: number; readonly scaling: number; readonly targets: readonly string[]; readonly modules: number; readonly parameters: number }
  readonly data: { readonly source: string; readonly evalSource: string; readonly train: number; readonly eval: number; readonly truncated: number }
  readonly before: EvalResult
  readonly after: EvalResult
  readonly train: TrainResult
  readonly samples: readonly GenerationSample[]
  /** Where the adapter (and merged model) went; absent without `out`. */
  readonly saved?: { readonly adapterDir: string; readonly mergedDir?: string }
  readonly elapsedMs: number
}

// ---------------------------------------------------------------------------------
// Option validation
// ---------------------------------------------------------------------------------

const FLAG: Record<string, string> = {
  model: '--model',
  data: '--data',
  evalData: '--eval-data',
  rank: '--rank',
  alpha: '--alpha',
  targets: '--targets',
  steps: '--steps',
  batchSize: '--batch-size',
  seqLen: '--seq-len',
  lr: '--lr',
  loraDropout: '--lora-dropout',
  seed: '--seed',
  backend: '--backend',
  maxTrain: '--max-train',
  maxEval: '--max-eval',
  out: '--out',
  initAdapter: '--init-adapter',
  merge: '--merge',
  samples: '--samples',
}

const posInt = z.number().int('must be an integer').min(1, 'must be >= 1')
const nonEmpty = z.string().trim().min(1, 'must not be empty')

const TrainSchema = z.object({
  model: nonEmpty.optional(),
  data: nonEmpty.optional(),
  evalData: nonEmpty.optional(),
  rank: posInt.max(4096, 'must be <= 4096').optional(),
  alpha: z.number().finite().positive('must be > 0').optional(),
  targets: z
    .array(z.enum(LINEAR_MODULES, { error: (i) => `unknown module ${JSON.stringify(i.input)} (choose from ${LINEAR_MODULES.join(', ')})` }))
    .min(1, 'must name at least one module')
    .optional(),
  steps: posInt.optional(),
  batchSize: posInt.optional(),
  seqLen: z.number().int('must be an integer').min(4, 'must be >= 4').optional(),
  lr: z.number().finite().positive('must be > 0').max(1, 'must be <= 1').optional(),
  loraDropout: z.number().min(0, 'must be >= 0').lt(1, 'must be < 1').optional(),
  seed: z.number().int('must be an integer').min(0, 'must be >= 0').max(Number.MAX_SAFE_INTEGER).optional(),
  backend: z.enum(BACKEND_CHOICES, { error: (i) => `unknown backend ${JSON.stringify(i.input)} (choose from ${BACKEND_CHOICES.join(', ')})` }).optional(),
  maxTrain: posInt.optional(),
  maxEval: posInt.optional(),
  out: nonEmpty.optional(),
  initAdapter: nonEmpty.optional(),
  merge: z.boolean().optional(),
  samples: z.number().int('must be an integer').min(0, 'must be >= 0').optional(),
})

function validate(options: TrainCommandOptions): void {
  const picked: Record<string, unknown> = {}
  for (const k of Object.keys(TrainSchema.shape)) {
    const v = (options as Record<string, unknown>)[k]
    if (v !== undefined) picked[k] = v
  }
  const r = TrainSchema.safeParse(picked)
  if (!r.success) {
    const issue = r.error.issues[0]
    const key = String(issue.path[0])
    const shown = picked[key]
    const value = Array.isArray(shown) ? shown.join(',') : String(shown)
    throw new TrainCommandError(`${FLAG[key] ?? key} ${issue.message}${issue.message.includes(value) ? '' : ` (got ${value})`}`)
  }
  if (options.merge === true && options.out === undefined) throw new TrainCommandError('--merge needs --out (the merged model goes to <out>/merged)')
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory()
  } catch {
    return false
  }
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile()
  } catch {
    return false
  }
}

/** A model directory must hold config.json and tokenizer.json; the checkpoint reader checks the rest. */
/** A model directory that cannot be opened is a usage error of the command (exit 2). */
async function usage<T>(work: () => T | Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (err instanceof ModelOpenError) throw new TrainCommandError(err.message)
    throw err
  }
}

async function checkJsonlFile(flag: string, file: string): Promise<void> {
  if (await isFile(file)) return
  const what = flag === '--data' ? " (expected 'wordnet' or a JSONL file of Alpaca {instruction, input, output} or Dolly {instruction, context, response} records)" : ''
  throw new TrainCommandError(`${flag} ${file}: ${(await isDir(file)) ? 'is a directory' : 'no such file'}${what}`)
}

/** Refuse to replace a directory that does not look like one of our outputs. */
async function checkOut(out: string): Promise<void> {
  if (!existsSync(out)) return
  if (!(await isDir(out))) throw new TrainCommandError(`--out ${out}: exists and is not a directory`)
  const entries = await readdir(out)
  if (entries.length === 0 || entries.includes('adapter_config.json') || entries.includes(SUMMARY_FILE)) return
  throw new TrainCommandError(`--out ${out}: exists and is not an adapter directory (it would be replaced); choose another --out`)
}

const SUMMARY_FILE = 'flora_train.json'

// ---------------------------------------------------------------------------------
// runTrain
// ---------------------------------------------------------------------------------

interface LoadedData {
  readonly source: string
  readonly evalSource: string
  readonly train: readonly InstructionExample[]
  readonly eval: readonly InstructionExample[]
}

async function loadData(o: Required<Pick<TrainCommandOptions, 'data' | 'seed' | 'steps' | 'batchSize'>> & TrainCommandOptions): Promise<LoadedData> {
  const evalFile = o.evalData
  const readEval = async (): Promise<InstructionExample[] | undefined> => {
    if (evalFile === undefined) return undefined
    const ex = await readInstructionJsonl(evalFile)
    if (ex.length === 0) throw new TrainCommandError(`--eval-data ${evalFile}: no examples`)
    return ex.slice(0, o.maxEval ?? ex.length)
  }
  if (o.data === 'skills') {
    const suite = skillsSuite()
    const held = await readEval()
    return {
      source: 'the skills suite (questions about the words and sums not held out)',
      evalSource: held === undefined ? 'skills suite: questions about held-out words and sums (scored by exact match)' : (evalFile as string),
      train: suite.train.slice(0, o.maxTrain ?? suite.train.length),
      eval: held ?? suite.eval.slice(0, o.maxEval ?? TRAIN_DEFAULTS.wordnetMaxEval),
    }
  }
  if (o.data === 'wordnet') {
    const maxTrain = o.maxTrain ?? Math.max(TRAIN_DEFAULTS.wordnetMinTrain, o.steps * o.batchSize)
    const held = await readEval()
    const task = wordnetTask({ maxTrain, maxEval: held === undefined ? (o.maxEval ?? TRAIN_DEFAULTS.wordnetMaxEval) : 1 })
    return {
      source: 'WordNet 3.1 definitions (bundled, train split)',
      evalSource: held === undefined ? 'WordNet 3.1 held-out synsets (never in training or pretraining)' : (evalFile as string),
      train: task.train,
      eval: held ?? task.eval,
    }
  }
  const all = await readInstructionJsonl(o.data)
  const held = await readEval()
  if (held !== undefined) {
    if (all.length === 0) throw new TrainCommandError(`--data ${o.data}: no examples`)
    return { source: o.data, evalSource: evalFile as string, train: all.slice(0, o.maxTrain ?? all.length), eval: held }
  }
  if (all.length < 2) throw new TrainCommandError(`--data ${o.data}: ${all.length} example(s); need at least 2 to hold one out (or pass --eval-data)`)
  // Seeded holdout: a shuffle of the indices, the first 5% (at least one) held out, file order kept within each side.
  const order = createPrng(o.seed).fork('flora-train/holdout').shuffle([...all.keys()])
  const nEval = Math.max(1, Math.round(all.length * TRAIN_DEFAULTS.holdoutFraction))
  const heldIdx = new Set(order.slice(0, nEval))
  const train = all.filter((_, i) => !heldIdx.has(i))
  const evalEx = all.filter((_, i) => heldIdx.has(i))
  return {
    source: o.data,
    evalSource: `a seeded 5% of ${o.data} (seed ${o.seed}, not trained on)`,
    train: train.slice(0, o.maxTrain ?? train.length),
    eval: evalEx.slice(0, o.maxEval ?? evalEx.length),
  }
}

function fmtInt(n: number): string {
  return n.toLocaleString('en-US')
}

function fmtParams(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(n)
}

function backendLine(s: BackendSelection): string[] {
  const lines = [`backend   ${describeBackend(s)}`]
  for (const k of s.skipped) lines.push(`          skipped ${k.backend}: ${k.reason}`)
  return lines
}

function oneLine(s: string, max = 160): string {
  const t = s.replace(/\s+/g, ' ').trim()
  return t.length > max ? `${t.slice(0, max - 1)}…` : t
}

/** Mean eval loss over `examples`, in chunks so an abort is seen between them (same result as one evaluate call). */
async function evaluateChunked(
  model: LlamaModel,
  examples: readonly TrainingExample[],
  o: { seqLen: number; padId: number; batchSize: number; signal?: AbortSignal; stepsDone: number },
): Promise<EvalResult> {
  const chunk = o.batchSize * 4
  let sum = 0
  let count = 0
  let correct = 0
  for (let i = 0; i < examples.length; i += chunk) {
    if (o.signal?.aborted === true) throw new TrainingAbortedError(o.stepsDone)
    const r = await evaluate(model, examples.slice(i, i + chunk), { seqLen: o.seqLen, padId: o.padId, batchSize: o.batchSize })
    sum += r.loss * r.tokens
    correct += (r.accuracy ?? 0) * r.tokens
    count += r.tokens
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  const loss = sum / count
  return { loss, perplexity: Math.exp(loss), tokens: count, accuracy: correct / count }
}

const exactMatchText = (x: number | undefined): string => (x !== undefined ? `  exact match ${(100 * x).toFixed(1)}%` : '')

function promptIds(tok: LlamaTokenizer, ex: Pick<InstructionExample, 'instruction' | 'input'>, raw = false): number[] {
  const text = raw ? ex.instruction : formatPrompt(ex)
  return [...(tok.bosId === undefined ? [] : [tok.bosId]), ...tok.encode(text)]
}

async function greedy(model: LlamaModel, tok: LlamaTokenizer, prompt: number[], maxNewTokens: number, signal?: AbortSignal): Promise<string> {
  const out = await generate(model, prompt, { maxNewTokens, stopIds: [tok.eosId], signal })
  const ids = out.filter((id) => id !== tok.eosId)
  return ids.length === 0 ? '' : tok.decode(ids)
}

/** Write a directory via a sibling temporary one renamed into place (replacing `dir`). */
async function writeDirAtomically(dir: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const abs = path.resolve(dir)
  await mkdir(path.dirname(abs), { recursive: true })
  const tag = `${process.pid}-${Date.now()}`
  const tmp = `${abs}.tmp-${tag}`
  try {
    await write(tmp)
  } catch (err) {
    await rm(tmp, { recursive: true, force: true })
    throw err
  }
  if (existsSync(abs)) {
    const old = `${abs}.old-${tag}`
    await rename(abs, old)
    await rename(tmp, abs)
    await rm(old, { recursive: true, force: true })
  } else {
    await rename(tmp, abs)
  }
}

/** A PEFT adapter to start from, with a message that names the flag when it does not load. */
async function loadInitAdapter(dir: string): Promise<AdapterSet> {
  try {
    return await loadPeftAdapter(dir)
  } catch (err) {
    throw new TrainCommandError(`--init-adapter ${dir}: ${(err as Error).message}`)
  }
}

/** Base weights with every adapter module merged in: W <- W + s B A (the federation's deterministic kernel). */
async function mergedWeights(model: LlamaModel, adapter: AdapterSet): Promise<Map<string, Float32Array>> {
  const weights = new Map<string, Float32Array>()
  for (const name of model.baseWeightNames()) weights.set(name, await model.readBaseWeight(name))
  for (const m of adapter.modules) {
    const w = weights.get(`${m.name}.weight`) as Float32Array
    mergeIntoWeightsSync(w, { outFeatures: m.outFeatures, inFeatures: m.inFeatures }, [
      { coef: m.scaling, rank: m.rank, loraA: m.loraA, loraB: m.loraB },
    ])
  }
  return weights
}

/** Fine-tune a LoRA on one machine; see the module comment. */
export async function runTrain(options: TrainCommandOptions = {}): Promise<TrainCommandResult> {
  const t0 = performance.now()
  validate(options)
  const stdout = options.stdout ?? process.stdout
  const stderr = options.stderr ?? process.stderr
  const json = options.json === true
  const signal = options.signal
  const modelDir = options.model ?? defaultModelDir()
  const data = options.data ?? TRAIN_DEFAULTS.data
  // A starting adapter decides rank, alpha and targets (checked against the model below).
  const init = options.initAdapter !== undefined ? await loadInitAdapter(options.initAdapter) : undefined
  const rank = init?.modules[0].rank ?? options.rank ?? TRAIN_DEFAULTS.rank
  const alpha = init?.modules[0].alpha ?? options.alpha ?? 2 * rank
  // The skills suite has its own recipe (recipe.ts SKILLS_RECIPE); flags still win.
  const skills = data === 'skills'
  const targets = (
    init !== undefined
      ? [...new Set(init.modules.map((m) => m.name.split('.').pop() as string))].sort()
      : [...new Set(options.targets ?? (skills ? SKILLS_RECIPE.targets : TRAIN_DEFAULTS.targets))]
  ) as LinearModuleKind[]
  const steps = options.steps ?? TRAIN_DEFAULTS.steps
  const batchSize = options.batchSize ?? TRAIN_DEFAULTS.batchSize
  const lr = options.lr ?? (skills ? SKILLS_RECIPE.lr : TRAIN_DEFAULTS.lr)
  const loraDropout = options.loraDropout ?? TRAIN_DEFAULTS.loraDropout
  const seed = options.seed ?? TRAIN_DEFAULTS.seed
  const nSamples = options.samples ?? TRAIN_DEFAULTS.samples

  const emit = (event: string, payload: Record<string, unknown>, lines: string | string[]): void => {
    if (json) stdout.write(`${JSON.stringify({ event, ...payload })}\n`)
    else for (const l of Array.isArray(lines) ? lines : [lines]) stdout.write(`${l}\n`)
  }
  const checkAbort = (stepsDone: number): void => {
    if (signal?.aborted === true) throw new TrainingAbortedError(stepsDone)
  }

  // Cheap checks first, so a typo fails in milliseconds rather than after loading a model.
  await usage(() => checkModelDir(options.model))
  if (data !== 'wordnet' && data !== 'skills') await checkJsonlFile('--data', data)
  if (options.evalData !== undefined) await checkJsonlFile('--eval-data', options.evalData)
  if (options.out !== undefined) await checkOut(options.out)

  const opened = await usage(() =>
    openModelForTraining(options.model, {
      backend: options.backend ?? TRAIN_DEFAULTS.backend,
      targets,
      onBackend: (backend) => {
        emit('backend', { backend: backend.backend, tfBackend: backend.tfBackend, adapter: backend.adapter, threads: backend.threads, native: backend.native, patchedKernels: backend.patchedKernels, skipped: backend.skipped }, backendLine(backend))
        checkAbort(0)
      },
    }),
  )
  const { model, tokenizer: tok, backend } = opened
  try {
    const seqLen = await usage(() => opened.seqLen(options.seqLen ?? (skills ? SKILLS_RECIPE.seqLen : undefined)))
    const c = model.config
    const modelInfo = { dir: modelDir, parameters: parameterCount(c), layers: c.numLayers, hidden: c.hiddenSize, vocab: c.vocabSize }
    emit('model', modelInfo, `model     ${modelDir}: ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}, ${fmtParams(modelInfo.parameters)} parameters`)

    const adapter0 = init ?? initAdapter({ shapes: model.targetModuleShapes(), rank, alpha, seed: `flora-train/${seed}/adapter` })
    try {
      model.setAdapter(adapter0)
    } catch (err) {
      throw new TrainCommandError(`--init-adapter ${options.initAdapter}: does not fit --model ${modelDir}: ${(err as Error).message}`)
    }
    const scaling = adapter0.modules[0].scaling
    const adapterInfo = { rank, alpha, scaling, targets, modules: adapter0.modules.length, parameters: adapterParamCount(adapter0) }
    emit(
      'adapter',
      adapterInfo,
      `adapter   LoRA r=${rank} alpha=${alpha} (scaling ${+scaling.toPrecision(4)}) on ${targets.join(', ')}: ${adapterInfo.modules} modules, ${fmtInt(adapterInfo.parameters)} trainable parameters`,
    )

    const loaded = await loadData({ ...options, data, seed, steps, batchSize })
    checkAbort(0)
    const { examples: train, truncated: cutTrain } = opened.tokenize(loaded.train, seqLen)
    const { examples: held, truncated: cutHeld } = opened.tokenize(loaded.eval, seqLen)
    const truncated = cutTrain + cutHeld
    if (train.length === 0) throw new TrainCommandError(`--data ${data}: no training examples`)
    if (held.length === 0) throw new TrainCommandError('no held-out examples')
    const dataInfo = { source: loaded.source, evalSource: loaded.evalSource, train: train.length, eval: held.length, truncated }
    emit('data', dataInfo, [
      `data      ${fmtInt(train.length)} training examples: ${loaded.source}`,
      `held out  ${fmtInt(held.length)} example${held.length === 1 ? '' : 's'}: ${loaded.evalSource}`,
      ...(truncated > 0 ? [`          ${fmtInt(truncated)} example(s) cut to --seq-len ${seqLen} tokens`] : []),
    ])

    const evalOpts = { seqLen, padId: tok.padId, batchSize: Math.max(batchSize, TRAINING_RECIPE.evalBatchSize), signal }
    let t = performance.now()
    const before = await evaluateChunked(model, held, { ...evalOpts, stepsDone: 0 })
    // Questions with accepted answers (the skills suite): also the exact match of whole greedy answers.
    const questions = isSkillQuestions(loaded.eval) ? loaded.eval : undefined
    const exactBefore = questions !== undefined ? (await exactMatchAccuracy(model, tok, questions, { signal })).all : undefined
    emit(
      'eval',
      { when: 'before', loss: before.loss, perplexity: before.perplexity, tokens: before.tokens, ...(exactBefore !== undefined ? { exactMatch: exactBefore } : {}), elapsedMs: Math.round(performance.now() - t) },
      `eval before  loss ${before.loss.toFixed(4)}  perplexity ${before.perplexity.toFixed(2)}${exactMatchText(exactBefore)}  (${fmtInt(before.tokens)} held-out target tokens, ${((performance.now() - t) / 1000).toFixed(1)} s)`,
    )

    const sampleSet = loaded.eval.slice(0, nSamples)
    const sampleBefore: string[] = []
    for (const ex of sampleSet) {
      checkAbort(0)
      sampleBefore.push(await greedy(model, tok, promptIds(tok, ex), TRAIN_DEFAULTS.sampleTokens, signal))
    }
    checkAbort(0)

    const progress = createProgressReporter({ stream: (json ? stdout : stderr) as NodeJS.WriteStream, json: json ? true : undefined, label: 'train' })
    let result: TrainResult
    try {
      result = await trainLora(model, train, {
        steps,
        batchSize,
        seqLen,
        lr,
        seed,
        padId: tok.padId,
        loraDropout,
        signal,
        onStep: (info) => {
          progress.onStep(info)
          options.onStep?.(info)
        },
      })
    } finally {
      progress.stop()
    }
    const tps = result.tokens / (result.elapsedMs / 1000)
    emit(
      'train_done',
      { steps: result.steps, finalLoss: result.finalLoss, tokens: result.tokens, tokensPerSecond: tps, elapsedMs: Math.round(result.elapsedMs) },
      `train     ${result.steps} steps in ${(result.elapsedMs / 1000).toFixed(1)} s (${fmtInt(Math.round(tps))} tok/s), last batch loss ${result.finalLoss.toFixed(4)}`,
    )

    t = performance.now()
    const after = await evaluateChunked(model, held, { ...evalOpts, stepsDone: steps })
    const exactAfter = questions !== undefined ? (await exactMatchAccuracy(model, tok, questions, { signal })).all : undefined
    const delta = after.loss - before.loss
    emit(
      'eval',
      { when: 'after', loss: after.loss, perplexity: after.perplexity, tokens: after.tokens, delta, ...(exactAfter !== undefined ? { exactMatch: exactAfter } : {}), elapsedMs: Math.round(performance.now() - t) },
      `eval after   loss ${after.loss.toFixed(4)}  perplexity ${after.perplexity.toFixed(2)}${exactMatchText(exactAfter)}  (${delta <= 0 ? '' : '+'}${delta.toFixed(4)} vs before)`,
    )

    const samples: GenerationSample[] = []
    for (let i = 0; i < sampleSet.length; i++) {
      checkAbort(steps)
      const ex = sampleSet[i]
      const afterText = await greedy(model, tok, promptIds(tok, ex), TRAIN_DEFAULTS.sampleTokens, signal)
      samples.push({ instruction: ex.instruction, input: ex.input, reference: ex.output, before: sampleBefore[i], after: afterText })
    }
    checkAbort(steps)
    if (samples.length > 0) {
      if (!json) stdout.write(`samples   greedy, held-out prompts:\n`)
      for (const s of samples) {
        emit('sample', { ...s }, [
          `  > ${oneLine(s.instruction)}${s.input.trim() !== '' ? ` [${oneLine(s.input, 80)}]` : ''}`,
          `    reference: ${oneLine(s.reference)}`,
          `    before:    ${oneLine(s.before) || '(nothing: eos first)'}`,
          `    after:     ${oneLine(s.after) || '(nothing: eos first)'}`,
        ])
      }
    }

    const adapter = await model.readAdapter()
    let saved: TrainCommandResult['saved']
    if (options.out !== undefined) {
      const out = options.out
      const merge = options.merge === true
      const summary = {
        model: modelDir,
        data: loaded.source,
        evalData: loaded.evalSource,
        options: { rank, alpha, targets, steps, batchSize, seqLen, lr, loraDropout, seed, backend: backend.backend },
        examples: { train: train.length, eval: held.length },
        before,
        after,
        train: { steps: result.steps, finalLoss: result.finalLoss, tokens: result.tokens, elapsedMs: Math.round(result.elapsedMs), losses: result.losses },
      }
      await writeDirAtomically(out, async (tmp) => {
        await savePeftAdapter(tmp, adapter, { baseModelNameOrPath: modelDir })
        if (merge) await saveCheckpoint(path.join(tmp, 'merged'), model.config, await mergedWeights(model, adapter), { tokenizerDir: modelDir })
        await writeFile(path.join(tmp, SUMMARY_FILE), `${JSON.stringify(summary, null, 2)}\n`)
      })
      saved = { adapterDir: out, ...(merge ? { mergedDir: path.join(out, 'merged') } : {}) }
      emit('saved', { ...saved }, [
        `saved     PEFT adapter -> ${out} (adapter_config.json, adapter_model.safetensors, ${SUMMARY_FILE})`,
        ...(merge ? [`          merged model -> ${saved.mergedDir}`] : []),
      ])
    }
    const elapsedMs = performance.now() - t0
    emit('done', { before: before.loss, after: after.loss, elapsedMs: Math.round(elapsedMs) }, `done in ${(elapsedMs / 1000).toFixed(1)} s`)
    return {
      backend,
      model: modelInfo,
      adapter: adapterInfo,
      data: dataInfo,
      before,
      after,
      train: result,
      samples,
      ...(saved !== undefined ? { saved } : {}),
      elapsedMs,
    }
  } finally {
    model.dispose()
  }
}

// ---------------------------------------------------------------------------------
// runGenerate
// ---------------------------------------------------------------------------------

export interface GenerateCommandOptions {
  /** Model directory (default: the bundled model). */
  readonly model?: string
  /** PEFT adapter directory to apply (e.g. the --out of flora train). */
  readonly adapter?: string
  readonly prompt: string
  /** Context for the instruction (the template's Input section). */
  readonly input?: string
  /** Feed the prompt as is instead of wrapping it in the instruction template. */
  readonly raw?: boolean
  readonly maxNewTokens?: number
  /** Nucleus sampling with this top-p instead of greedy decoding. */
  readonly topP?: number
  readonly temperature?: number
  readonly seed?: number
  readonly backend?: BackendPreference
  readonly signal?: AbortSignal
}

export interface GenerateCommandResult {
  readonly text: string
  readonly tokens: number
  readonly backend: BackendSelection
}

/** Generate a reply from a model (and optional adapter) for one prompt. */
export async function runGenerate(options: GenerateCommandOptions): Promise<GenerateCommandResult> {
  if (typeof options.prompt !== 'string' || options.prompt.trim() === '') throw new TrainCommandError('--prompt must not be empty')
  const maxNew = options.maxNewTokens ?? 64
  if (!Number.isInteger(maxNew) || maxNew < 1) throw new TrainCommandError(`--max-new-tokens must be an integer >= 1 (got ${maxNew})`)
  if (options.topP !== undefined && !(options.topP > 0 && options.topP <= 1)) throw new TrainCommandError(`--top-p must be in (0, 1] (got ${options.topP})`)
  if (options.temperature !== undefined && !(options.temperature > 0)) throw new TrainCommandError(`--temperature must be > 0 (got ${options.temperature})`)
  const modelDir = options.model ?? defaultModelDir()
  await usage(() => checkModelDir(options.model))
  if (options.adapter !== undefined && !(await isDir(options.adapter))) throw new TrainCommandError(`--adapter ${options.adapter}: no such directory`)
  const preference = options.backend ?? 'auto'
  const backend = await selectBackend(preference, { fallback: preference === 'auto' })
  const tok = await LlamaTokenizer.fromDir(modelDir)
  const model = await loadModel(modelDir)
  try {
    if (options.adapter !== undefined) model.setAdapter(await loadPeftAdapter(options.adapter, model.moduleShapes()))
    const prompt = promptIds(tok, { instruction: options.prompt, input: options.input ?? '' }, options.raw === true)
    const ids = await generate(model, prompt, {
      maxNewTokens: maxNew,
      stopIds: [tok.eosId],
      signal: options.signal,
      ...(options.topP !== undefined ? { strategy: 'top-p' as const, topP: options.topP, temperature: options.temperature ?? 1, seed: options.seed ?? 0 } : {}),
    })
    const kept = ids.filter((id) => id !== tok.eosId)
    return { text: kept.length === 0 ? '' : tok.decode(kept), tokens: ids.length, backend }
  } finally {
    model.dispose()
  }
}
