/**
 * The `model` training backend of flora-peer: real LoRA fine-tuning of a Llama-family
 * checkpoint (tfjs, src/model) on instruction data, behind the Trainer seam of trainer.ts.
 *
 * - Base model: a model directory (default: the bundled models/flora-tiny), loaded once
 *   per process and shared by every peer of the process (a lock serialises training and
 *   evaluation on it). Its identity, the swarm's `baseModelHash`, is
 *   sha256(canonicalJson({ format, config, weights: stateHash(every tensor), tokenizer }))
 *   so peers on another checkpoint (or tokenizer) are in another swarm and are refused at
 *   the handshake. The genesis state is the target modules' weights (q_proj, v_proj).
 * - Data (`--data`): `wordnet` (the bundled WordNet definition task, train split) or a
 *   JSONL file of Alpaca/Dolly records; `<source>:i/n` (or just `i/n` for WordNet) keeps
 *   shard i of n of a non-IID split by category (WordNet: lexicographer file), seeded with
 *   the swarm seed so the peers of a swarm get disjoint, skewed shards.
 * - A round: write the agreed target weights into the model (only those that changed),
 *   set a fresh LoRA of the peer's rank (seeded by the round's training seed; the
 *   strategy's warm start when it keeps a global adapter), train `localSteps` AdamW steps
 *   (trainLora), return the adapter, the shard size as sample count and the train loss.
 * - Evaluation: mean response-token loss of the agreed weights (no adapter) on a fixed
 *   held-out set, the same on every peer (default: the first 64 of WordNet's held-out
 *   synsets, which neither pretraining nor any peer trains on).
 */
import path from 'node:path'
import { canonicalJson, sha256Hex, type CanonicalValue } from '../gossip/canonical.js'
import { stateHashStreamed } from '../aggregation/state-hash.js'
import { initAdapter } from '../lora/init.js'
import type { ModuleShape } from '../lora/types.js'
import { type BackendPreference, describeBackend } from '../model/backend.js'
import { loadPeftAdapter, openCheckpoint } from '../model/checkpoint.js'
import { mergeIntoWeightsSync } from '../aggregation/merge.js'
import { type LlamaConfig, parameterCount, toHfConfig } from '../model/config.js'
import { readInstructionJsonl } from '../model/data/jsonl.js'
import { partitionExamples } from '../model/data/partition.js'
import type { InstructionExample } from '../model/data/types.js'
import { type WordNetTask, wordnetTask } from '../model/data/wordnet.js'
import { type SkillsSuite, skillsSuite } from '../model/data/skills.js'
import { exactMatchAccuracy, isSkillQuestions } from '../model/exact-match.js'
import { expectedWeightShapes, LINEAR_MODULES, type LinearModuleKind, LlamaModel } from '../model/llama.js'
import { type OpenedModel, openModelForTraining } from '../model/open-model.js'
import { evaluate, type StepInfo, trainLora } from '../model/trainer.js'
import { makeSwarmConfig, readSwarmConfig, SwarmConfigError, type SwarmConfig } from './config.js'
import type { EvalScore, PeerSetup, SetupOptions } from './setup-types.js'
import { genesisState } from './state.js'
import type { Trainer } from './trainer.js'
import { MODEL_TRAINER_DEFAULTS } from './model-defaults.js'
import { SKILLS_RECIPE } from '../model/recipe.js'
export { defaultModelDir } from '../model/bundled.js'
import { defaultModelDir } from '../model/bundled.js'

export { MODEL_TRAINER_DEFAULTS }

/** Progress of local training, for the CLI and the swarm script. */
export interface TrainStepProgress {
  readonly round: number
  readonly step: number
  readonly steps: number
  readonly loss: number
  readonly elapsedMs: number
}


// ---------------------------------------------------------------------------------
// --data
// ---------------------------------------------------------------------------------

export interface DataSpec {
  /** 'wordnet', 'skills' (the skills suite, src/model/data/skills.ts) or a JSONL path. */
  readonly source: string
  /** Keep shard `index` of `count` (0-based); absent: every example. */
  readonly part?: { readonly index: number; readonly count: number }
}

/**
 * `wordnet` | `skills` | `FILE.jsonl` | `i/n` (WordNet shard i of n) | `wordnet:i/n` | `skills:i/n` | `FILE.jsonl:i/n`.
 */
export function parseDataSpec(spec: string | undefined): DataSpec {
  const s = spec?.trim() ?? ''
  if (s === '') return { source: MODEL_TRAINER_DEFAULTS.data }
  const m = /^(?:(.*):)?(\d{1,6})\/(\d{1,6})$/.exec(s)
  if (m == null) return { source: s }
  const index = Number(m[2])
  const count = Number(m[3])
  if (count < 1 || index >= count) throw new SwarmConfigError(`--data ${s}: shard i/n needs 0 <= i < n`)
  const source = m[1] === undefined || m[1] === '' ? MODEL_TRAINER_DEFAULTS.data : m[1]
  return { source, part: { index, count } }
}

// ---------------------------------------------------------------------------------
// Base model identity
// ---------------------------------------------------------------------------------

/** Domain tag of the base model hash (bump if its definition changes). */
export const BASE_MODEL_HASH_FORMAT = 'flora-base-model/1'

/**
 * Identity of a base model: its architecture (the HF config.json fields we read), every
 * weight tensor (src/aggregation's canonical stateHash, names and shapes included) and the
 * tokenizer file's sha256 (null when the directory has none).
 */
export function baseModelHash(config: LlamaConfig, weights: ReadonlyMap<string, Float32Array>, tokenizerSha256: string | null): string {
  return baseModelHashOf(config, (name) => weights.get(name), tokenizerSha256)
}

/** baseModelHash of a checkpoint directory, reading its tensors one at a time (never the whole model in float32). */
export async function checkpointBaseModelHash(dir: string, tokenizerSha256: string | null): Promise<string> {
  const { config, weights } = await openCheckpoint(dir)
  try {
    return baseModelHashOf(config, (name) => weights.get(name), tokenizerSha256)
  } finally {
    weights.close()
  }
}

function baseModelHashOf(config: LlamaConfig, read: (name: string) => Float32Array | undefined, tokenizerSha256: string | null): string {
  const tensors = [...expectedWeightShapes(config)].map(([name, shape]) => ({
    name,
    shape,
    data: (): Float32Array => {
      const data = read(name)
      if (data === undefined) throw new SwarmConfigError(`base model hash: tensor ${name} is missing`)
      return data
    },
  }))
  return sha256Hex(
    canonicalJson({
      format: BASE_MODEL_HASH_FORMAT,
      config: toHfConfig(config) as unknown as CanonicalValue,
      weights: stateHashStreamed(tensors),
      tokenizer: tokenizerSha256,
    }),
  )
}

// ---------------------------------------------------------------------------------
// The per-process model runtime
// ---------------------------------------------------------------------------------

/** Serialises async sections (training and evaluation share one model). */
class Lock {
  #tail: Promise<void> = Promise.resolve()
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#tail
    let release!: () => void
    this.#tail = new Promise<void>((resolve) => {
      release = resolve
    })
    try {
      await prev
      return await fn()
    } finally {
      release()
    }
  }
}

interface Runtime {
  /** The model, its tokenizer and backend, as opened for training (src/model/open-model.ts). */
  readonly opened: OpenedModel
  readonly model: LlamaModel
  readonly baseModelHash: string
  /** Target modules, canonical order. */
  readonly shapes: ModuleShape[]
  /** Module name -> the checkpoint's weights of that module (the genesis weights). */
  readonly genesis: Map<string, Float32Array>
  /** Module name -> the array whose values the model holds now. */
  readonly loaded: Map<string, Float32Array>
  readonly lock: Lock
}

const runtimes = new Map<string, Promise<Runtime>>()

async function loadRuntime(dir: string, targets: readonly LinearModuleKind[], backend: BackendPreference): Promise<Runtime> {
  const key = `${path.resolve(dir)}\0${[...targets].sort().join(',')}`
  let hit = runtimes.get(key)
  if (hit === undefined) {
    hit = createRuntime(dir, targets, backend)
    runtimes.set(key, hit)
    hit.catch(() => runtimes.delete(key))
  }
  return hit
}

async function createRuntime(dir: string, targets: readonly LinearModuleKind[], backend: BackendPreference): Promise<Runtime> {
  let opened: OpenedModel
  try {
    opened = await openModelForTraining(dir, { backend, targets })
  } catch (err) {
    throw new SwarmConfigError(`cannot load the base model: ${(err as Error).message}`)
  }
  const { model } = opened
  try {
    const hash = await checkpointBaseModelHash(dir, opened.tokenizerSha256)
    const shapes = model.targetModuleShapes()
    const genesis = new Map<string, Float32Array>()
    for (const s of shapes) genesis.set(s.name, await model.readBaseWeight(s.name))
    return { opened, model, baseModelHash: hash, shapes, genesis, loaded: new Map(genesis), lock: new Lock() }
  } catch (err) {
    model.dispose()
    throw err
  }
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
  return true
}

/** Makes the model hold `weights` for the target modules, writing only what differs. */
function syncWeights(rt: Runtime, weights: ReadonlyMap<string, Float32Array>): number {
  let written = 0
  for (const s of rt.shapes) {
    const w = weights.get(s.name)
    if (w === undefined) throw new Error(`model trainer: the agreed state has no weights for ${s.name}`)
    const cur = rt.loaded.get(s.name)
    if (cur === w) continue
    if (cur === undefined || !sameBits(cur, w)) {
      rt.model.setBaseWeight(s.name, w)
      written++
    }
    rt.loaded.set(s.name, w)
  }
  return written
}

const yieldNow = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve))

// ---------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------

const wordnetCache = new Map<string, WordNetTask>()

function wordnet(maxTrain: number, maxEval: number): WordNetTask {
  const key = `${maxTrain}/${maxEval}`
  let t = wordnetCache.get(key)
  if (t === undefined) {
    t = wordnetTask({ maxTrain, maxEval })
    wordnetCache.set(key, t)
  }
  return t
}

let skillsCache: SkillsSuite | undefined
const skills = (): SkillsSuite => (skillsCache ??= skillsSuite())

async function readJsonl(flag: string, file: string): Promise<InstructionExample[]> {
  try {
    return await readInstructionJsonl(file)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ENOENT' || e.code === 'EISDIR') {
      throw new SwarmConfigError(`${flag} ${file}: no such file (expected 'wordnet', 'i/n', or a JSONL file of Alpaca/Dolly records, optionally with ':i/n')`)
    }
    throw new SwarmConfigError(`${flag} ${file}: ${e.message}`)
  }
}

interface PeerData {
  readonly train: InstructionExample[]
  readonly eval: InstructionExample[]
  readonly trainSource: string
  readonly evalSource: string
}

async function loadPeerData(spec: DataSpec, o: { evalData: string; evalExamples: number; trainExamples?: number; swarmSeed: number }): Promise<PeerData> {
  let pool: InstructionExample[]
  let trainSource: string
  const wnTrain = o.trainExamples ?? MODEL_TRAINER_DEFAULTS.wordnetTrainExamples
  if (spec.source === 'wordnet') {
    pool = wordnet(wnTrain, o.evalData === 'wordnet' ? o.evalExamples : 1).train
    trainSource = `WordNet definitions (train split, first ${pool.length} examples)`
  } else if (spec.source === 'skills') {
    const all = skills().train
    pool = o.trainExamples !== undefined ? all.slice(0, o.trainExamples) : all
    trainSource = `the skills suite (${pool.length} questions about the words and sums not held out)`
  } else {
    const all = await readJsonl('--data', spec.source)
    pool = o.trainExamples !== undefined ? all.slice(0, o.trainExamples) : all
    trainSource = spec.source
  }
  let train = pool
  if (spec.part !== undefined) {
    const { index, count } = spec.part
    const parts = partitionExamples(pool, count, { kind: 'category', seed: `flora-peer/data/${o.swarmSeed}`, shardsPerClient: MODEL_TRAINER_DEFAULTS.shardsPerPeer })
    train = parts[index].map((i) => pool[i])
    trainSource = `shard ${index}/${count} (by category, swarm seed ${o.swarmSeed}) of ${trainSource}`
  }
  if (train.length === 0) throw new SwarmConfigError(`--data: no training examples in ${trainSource}`)
  let evalSet: InstructionExample[]
  let evalSource: string
  if (o.evalData === 'wordnet') {
    evalSet = wordnet(spec.source === 'wordnet' ? wnTrain : 1, o.evalExamples).eval
    evalSource = `WordNet held-out synsets (first ${evalSet.length})`
  } else if (o.evalData === 'skills') {
    evalSet = skills().eval.slice(0, o.evalExamples)
    evalSource = `skills suite, questions about held-out words and sums (first ${evalSet.length}; exact match of greedy answers)`
  } else {
    evalSet = (await readJsonl('--eval-data', o.evalData)).slice(0, o.evalExamples)
    evalSource = `${o.evalData} (first ${evalSet.length})`
  }
  if (evalSet.length === 0) throw new SwarmConfigError(`--eval-data ${o.evalData}: no examples`)
  return { train, eval: evalSet, trainSource, evalSource }
}

function topCategories(examples: readonly InstructionExample[], k = 3): string {
  const counts = new Map<string, number>()
  for (const e of examples) if (e.category !== undefined) counts.set(e.category, (counts.get(e.category) ?? 0) + 1)
  if (counts.size === 0) return ''
  const top = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, k)
  return `; top categories ${top.map(([c, n]) => `${c} ${Math.round((100 * n) / examples.length)}%`).join(', ')}`
}

// ---------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------

function parseTargets(targets: readonly string[]): LinearModuleKind[] {
  const out: LinearModuleKind[] = []
  for (const t of targets) {
    if (!(LINEAR_MODULES as readonly string[]).includes(t)) throw new SwarmConfigError(`--targets: unknown module '${t}' (choose from ${LINEAR_MODULES.join(', ')})`)
    if (!out.includes(t as LinearModuleKind)) out.push(t as LinearModuleKind)
  }
  if (out.length === 0) throw new SwarmConfigError('--targets: name at least one module')
  return out
}

function positive(flag: string, v: number, integer = true): number {
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) throw new SwarmConfigError(`${flag} must be a positive ${integer ? 'integer' : 'number'}, got ${v}`)
  return v
}

/** The swarm config a model defines, checked against --config when one is given. */
/**
 * The base's target weights with a PEFT adapter merged in (W + s B A, the federation's own
 * deterministic merge kernel), as new arrays: the runtime's genesis is shared and kept.
 */
async function withInitAdapter(rt: Runtime, dir: string): Promise<Map<string, Float32Array>> {
  let adapter
  try {
    adapter = await loadPeftAdapter(dir, rt.model.moduleShapes())
  } catch (err) {
    throw new SwarmConfigError(`--init-adapter ${dir}: ${(err as Error).message}`)
  }
  const targets = new Set(rt.shapes.map((s) => s.name))
  const outside = adapter.modules.filter((m) => !targets.has(m.name)).map((m) => m.name)
  if (outside.length > 0) {
    throw new SwarmConfigError(`--init-adapter ${dir}: adapts ${outside.slice(0, 3).join(', ')}${outside.length > 3 ? ', ...' : ''}, which are not among the swarm's --targets; add their kinds to --targets`)
  }
  const out = new Map(rt.genesis)
  for (const m of adapter.modules) {
    const w = Float32Array.from(rt.genesis.get(m.name) as Float32Array)
    mergeIntoWeightsSync(w, { outFeatures: m.outFeatures, inFeatures: m.inFeatures }, [{ coef: m.scaling, rank: m.rank, loraA: m.loraA, loraB: m.loraB }])
    out.set(m.name, w)
  }
  return out
}

async function resolveConfig(rt: Runtime, o: SetupOptions, genesis: ReadonlyMap<string, Float32Array>): Promise<SwarmConfig> {
  const genesisHash = genesisState(genesis, rt.shapes).hash
  const built = makeSwarmConfig({
    name: o.name ?? 'flora',
    baseModelHash: rt.baseModelHash,
    genesisStateHash: genesisHash,
    targets: rt.shapes,
    strategy: o.strategy,
    seed: o.seed,
    round: o.round,
    contribution: o.contribution,
  })
  if (o.configFile == null) return built
  const config = await readSwarmConfig(o.configFile)
  if (config.baseModelHash !== built.baseModelHash || config.genesisStateHash !== built.genesisStateHash) {
    throw new SwarmConfigError(
      `${o.configFile} is for another base model (base ${config.baseModelHash.slice(0, 12)}, genesis ${config.genesisStateHash.slice(0, 12)}) than --model ${rt.opened.dir} (base ${built.baseModelHash.slice(0, 12)}, genesis ${built.genesisStateHash.slice(0, 12)})`,
    )
  }
  const names = (ts: readonly ModuleShape[]): string => ts.map((t) => `${t.name}:${t.outFeatures}x${t.inFeatures}`).sort().join(',')
  if (names(config.targets) !== names(built.targets)) {
    throw new SwarmConfigError(`${o.configFile}: its LoRA targets differ from --targets ${[...new Set(built.targets.map((t) => t.name.split('.').pop()))].join(',')} on this model`)
  }
  return config
}

/** `flora-peer --trainer model`: see the module comment. */
export async function setupModelPeer(o: SetupOptions): Promise<PeerSetup> {
  const d = MODEL_TRAINER_DEFAULTS
  const spec = parseDataSpec(o.data)
  const steps = positive('--local-steps', o.localSteps ?? d.localSteps)
  const batchSize = positive('--batch-size', o.batchSize ?? d.batchSize)
  if (o.seqLen !== undefined) positive('--seq-len', o.seqLen)
  // The skills suite has its own recipe (SKILLS_RECIPE); flags still win.
  const skills = spec.source === 'skills'
  const lr = positive('--lr', o.lr ?? (skills ? SKILLS_RECIPE.lr : d.lr), false)
  const evalExamples = positive('--eval-examples', o.evalExamples ?? d.evalExamples)
  // The skills suite is scored on its own held-out questions unless told otherwise.
  const evalData = o.evalData ?? (spec.source === 'skills' ? 'skills' : d.evalData)
  const loraDropout = o.loraDropout ?? d.loraDropout
  if (!(loraDropout >= 0 && loraDropout < 1)) throw new SwarmConfigError(`--lora-dropout must be in [0, 1), got ${loraDropout}`)
  if (o.trainExamples !== undefined) positive('--train-examples', o.trainExamples)
  const targets = parseTargets(o.targets ?? (skills ? SKILLS_RECIPE.targets : d.targets))
  const dir = o.model ?? defaultModelDir()

  const rt = await loadRuntime(dir, targets, o.backend ?? d.backend)
  let seqLen: number
  try {
    seqLen = rt.opened.seqLen(o.seqLen ?? (skills ? SKILLS_RECIPE.seqLen : undefined))
  } catch (err) {
    throw new SwarmConfigError((err as Error).message)
  }
  const genesis = o.initAdapter != null ? await withInitAdapter(rt, o.initAdapter) : rt.genesis
  const config = await resolveConfig(rt, o, genesis)
  const c = rt.model.config
  const modelLine = `${path.relative(process.cwd(), path.resolve(dir)) || '.'} (${c.numLayers} layers, hidden ${c.hiddenSize}, ${(parameterCount(c) / 1e6).toFixed(2)}M parameters, tfjs ${describeBackend(rt.opened.backend)}, compute ${rt.model.compute}; base ${rt.baseModelHash.slice(0, 12)})`
  const notLoaded = (): never => {
    throw new Error('model trainer: set up with configOnly (no data loaded)')
  }
  if (o.configOnly === true) {
    return { config, weights: genesis, trainer: notLoaded, evaluate: notLoaded, samples: 0, description: modelLine, baseModelDir: path.resolve(dir) }
  }

  const data = await loadPeerData(spec, { evalData, evalExamples, trainExamples: o.trainExamples, swarmSeed: config.seed })
  const { examples: train, truncated } = rt.opened.tokenize(data.train, seqLen)
  const { examples: held } = rt.opened.tokenize(data.eval, seqLen)
  const padId = rt.opened.tokenizer.padId
  const samples = train.length

  const trainer: Trainer = (ctx) =>
    rt.lock.run(async () => {
      ctx.signal.throwIfAborted()
      syncWeights(rt, ctx.weights)
      const start = ctx.init ?? initAdapter({ shapes: ctx.shapes, rank: ctx.rank, alpha: ctx.alpha, seed: ctx.seed, rslora: ctx.rslora })
      rt.model.setAdapter(start)
      try {
        const res = await trainLora(rt.model, train, {
          steps,
          batchSize,
          seqLen,
          lr,
          seed: ctx.seed,
          padId,
          loraDropout,
          signal: ctx.signal,
          onStep: (info: StepInfo) => o.onTrainStep?.({ round: ctx.round, step: info.step, steps: info.steps, loss: info.loss, elapsedMs: info.elapsedMs }),
        })
        const adapter = await rt.model.readAdapter()
        const mean = res.losses.reduce((a, b) => a + b, 0) / res.losses.length
        return {
          adapter,
          samples,
          metrics: { loss: mean, finalLoss: res.finalLoss, steps: res.steps, tokensPerSecond: res.tokens / (res.elapsedMs / 1000) },
        }
      } finally {
        rt.model.clearAdapter()
      }
    })

  const evalBatch = Math.max(batchSize, d.evalBatchSize)
  const evaluateWeights = (weights: ReadonlyMap<string, Float32Array>, signal?: AbortSignal): Promise<EvalScore> =>
    rt.lock.run(async () => {
      syncWeights(rt, weights)
      rt.model.clearAdapter()
      let sum = 0
      let correct = 0
      let count = 0
      for (let i = 0; i < held.length; i += evalBatch) {
        signal?.throwIfAborted()
        const r = await evaluate(rt.model, held.slice(i, i + evalBatch), { seqLen, padId, batchSize: evalBatch })
        sum += r.loss * r.tokens
        correct += (r.accuracy ?? 0) * r.tokens
        count += r.tokens
        await yieldNow()
      }
      // Questions with accepted answers (the skills suite): also the exact match of greedy answers.
      const exactMatch = isSkillQuestions(data.eval) ? (await exactMatchAccuracy(rt.model, rt.opened.tokenizer, data.eval, signal !== undefined ? { signal } : {})).all : undefined
      return count > 0 ? { loss: sum / count, accuracy: correct / count, ...(exactMatch !== undefined ? { exactMatch } : {}) } : { loss: Number.NaN }
    })


  return {
    config,
    weights: genesis,
    trainer,
    evaluate: evaluateWeights,
    samples,
    baseModelDir: path.resolve(dir),
    description:
      `model ${modelLine}; data: ${samples} examples${truncated > 0 ? ` (${truncated} cut to --seq-len ${seqLen})` : ''}, ${data.trainSource}${topCategories(data.train)}; ` +
      `eval: ${held.length} examples, ${data.evalSource}; ${steps} local steps/round, batch ${batchSize}, seq ${seqLen}, lr ${lr}`,
  }
}
