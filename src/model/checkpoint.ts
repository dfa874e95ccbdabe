/**
 * Model directories in the HF layout, and PEFT adapter directories.
 *
 *   model dir:    config.json, model.safetensors | model.safetensors.index.json + shards,
 *                 tokenizer.json (+ tokenizer_config.json), optional
 *   adapter dir:  adapter_config.json, adapter_model.safetensors with keys
 *                 base_model.model.<module>.lora_A.weight [r, in] / .lora_B.weight [out, r]
 *
 * Every problem (missing file, missing or unexpected tensor, wrong shape, unsupported
 * architecture or adapter feature) is an error that names the file and tensor.
 */
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { z } from 'zod'
import { loraScaling, scalingKind } from '../lora/scaling.js'
import type { AdapterSet, LoraModule, ModuleShape } from '../lora/types.js'
import { compareModuleNames, validateAdapter, validateAdapterAgainstShapes } from '../lora/validate.js'
import { fromHfConfig, type LlamaConfig, ModelConfigError, toHfConfig, UnsupportedModelError } from './config.js'
import { expectedWeightShapes, LlamaModel, type LlamaModelOptions } from './llama.js'
import { StreamedWeights } from './streamed-weights.js'
import {
  decodeTensor,
  parseSafetensorsHeader,
  type SafetensorsDType,
  SafetensorsError,
  serializeSafetensors,
  type TensorToWrite,
} from './safetensors.js'

export class CheckpointError extends Error {
  override readonly name = 'CheckpointError'
  constructor(
    message: string,
    /** The file or directory at fault. */
    readonly path?: string,
  ) {
    super(path === undefined ? message : `${path}: ${message}`)
  }
}

export interface Checkpoint {
  readonly dir: string
  readonly config: LlamaConfig
  /** HF name -> values in HF layout, exactly the weights the config needs. */
  readonly weights: Map<string, Float32Array>
  /** tokenizer.json is present. */
  readonly hasTokenizer: boolean
}

/** Tensors some exporters add that carry nothing we need. */
const IGNORED_TENSOR = /\.rotary_emb\.inv_freq$/

/** Read and validate a model directory (config, all weights, decoded to float32). */
export async function readCheckpoint(dir: string): Promise<Checkpoint> {
  const { config, weights: streamed } = await openCheckpoint(dir)
  try {
    const weights = new Map<string, Float32Array>()
    for (const name of expectedWeightShapes(config).keys()) weights.set(name, streamed.get(name) as Float32Array)
    return { dir, config, weights, hasTokenizer: await exists(path.join(dir, 'tokenizer.json')) }
  } finally {
    streamed.close()
  }
}

/**
 * Load a model directory into a LlamaModel, tensor by tensor: each is read, copied where
 * the model keeps it (tfjs tensors, or the native addon for frozen layers) and dropped, so
 * the file and its tensors are never held twice.
 */
export async function loadModel(dir: string, options: LlamaModelOptions = {}): Promise<LlamaModel> {
  const { config, weights } = await openCheckpoint(dir)
  try {
    return new LlamaModel(config, weights, options)
  } finally {
    weights.close()
  }
}

/**
 * A model directory's config and its weights opened for streaming (headers read, names and
 * shapes checked against the config; no tensor data read yet). The caller closes the weights.
 */
export async function openCheckpoint(dir: string): Promise<{ config: LlamaConfig; weights: StreamedWeights }> {
  await requireDir(dir)
  const configPath = path.join(dir, 'config.json')
  const config = parseConfig(configPath, await readJson(configPath))
  const weights = await openWeightFiles(dir)
  try {
    const expected = expectedWeightShapes(config)
    for (const [name, shape] of expected) {
      const found = weights.shapeOf(name)
      if (found === undefined) throw new CheckpointError(`tensor '${name}' is missing`, dir)
      if (found.length !== shape.length || found.some((d, i) => d !== shape[i])) {
        throw new CheckpointError(`tensor '${name}' has shape [${found.join(', ')}], config.json implies [${shape.join(', ')}]`, weights.fileOf(name))
      }
    }
    for (const name of weights.keys()) {
      if (expected.has(name) || IGNORED_TENSOR.test(name)) continue
      if (name === 'lm_head.weight' && config.tieWordEmbeddings) continue // tied: the embedding is used
      throw new CheckpointError(`unexpected tensor '${name}' (not part of a ${config.numLayers}-layer ${config.modelType ?? 'llama'})`, weights.fileOf(name))
    }
    return { config, weights }
  } catch (err) {
    weights.close()
    throw err
  }
}

function parseConfig(file: string, json: unknown): LlamaConfig {
  try {
    return fromHfConfig(json)
  } catch (err) {
    if (err instanceof UnsupportedModelError) throw new UnsupportedModelError(`${file}: ${err.message}`)
    if (err instanceof ModelConfigError) throw new ModelConfigError(`${file}: ${err.message}`)
    throw err
  }
}

/** The weight files of a model directory (model.safetensors, or the shards its index names), opened. */
async function openWeightFiles(dir: string): Promise<StreamedWeights> {
  const single = path.join(dir, 'model.safetensors')
  const index = path.join(dir, 'model.safetensors.index.json')
  if (await exists(single)) return new StreamedWeights(new Map([[single, undefined]]))
  if (!(await exists(index))) {
    const hint = (await exists(path.join(dir, 'pytorch_model.bin'))) ? ' (pytorch_model.bin is not supported: convert to safetensors)' : ''
    throw new CheckpointError(`no model.safetensors or model.safetensors.index.json${hint}`, dir)
  }
  const parsed = z.object({ weight_map: z.record(z.string(), z.string()) }).passthrough().safeParse(await readJson(index))
  if (!parsed.success) throw new CheckpointError('weight_map missing or not a name -> file map', index)
  const byFile = new Map<string, Set<string>>()
  for (const [name, file] of Object.entries(parsed.data.weight_map)) {
    if (file.includes('/') || file.includes('\\') || file === '..' || file === '.') {
      throw new CheckpointError(`shard file name '${file}' of tensor '${name}' must be a plain file name`, index)
    }
    const key = path.join(dir, file)
    if (!byFile.has(key)) byFile.set(key, new Set())
    ;(byFile.get(key) as Set<string>).add(name)
  }
  for (const file of byFile.keys()) if (!(await exists(file))) throw new CheckpointError('cannot read the file (a shard the index names)', file)
  return new StreamedWeights(byFile)
}

export interface SaveCheckpointOptions {
  /** Storage dtype (default F32, which round-trips exactly). */
  readonly dtype?: SafetensorsDType
  /** Split into shards + model.safetensors.index.json above this many bytes (default 4 GiB). */
  readonly maxShardBytes?: number
  /** Copy tokenizer.json / tokenizer_config.json / special_tokens_map.json from this dir. */
  readonly tokenizerDir?: string
}

/** Write config.json and the weights (single file or shards) into `dir`. */
export async function saveCheckpoint(
  dir: string,
  config: LlamaConfig,
  weights: ReadonlyMap<string, Float32Array>,
  options: SaveCheckpointOptions = {},
): Promise<void> {
  const expected = expectedWeightShapes(config)
  for (const [name, shape] of expected) {
    const w = weights.get(name)
    if (w === undefined) throw new CheckpointError(`tensor '${name}' is missing from the weights to save`)
    if (w.length !== shape.reduce((a, b) => a * b, 1)) throw new CheckpointError(`tensor '${name}' does not fit shape [${shape.join(', ')}]`)
  }
  await mkdir(dir, { recursive: true })
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(toHfConfig(config), null, 2) + '\n')
  const dtype = options.dtype ?? 'F32'
  const width = dtype === 'F32' ? 4 : 2
  const maxShard = options.maxShardBytes ?? 4 * 1024 ** 3
  const shards: Map<string, TensorToWrite>[] = [new Map()]
  let current = 0
  for (const [name, shape] of [...expected].sort((a, b) => compareModuleNames(a[0], b[0]))) {
    const bytes = (weights.get(name) as Float32Array).length * width
    if (current > 0 && current + bytes > maxShard) {
      shards.push(new Map())
      current = 0
    }
    shards[shards.length - 1].set(name, { shape, data: weights.get(name) as Float32Array })
    current += bytes
  }
  const metadata = { format: 'pt' }
  if (shards.length === 1) {
    await writeFile(path.join(dir, 'model.safetensors'), serializeSafetensors(shards[0], { dtype, metadata }))
  } else {
    const weightMap: Record<string, string> = {}
    let total = 0
    for (let i = 0; i < shards.length; i++) {
      const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`
      for (const [name, t] of shards[i]) {
        weightMap[name] = file
        total += t.data.length * width
      }
      await writeFile(path.join(dir, file), serializeSafetensors(shards[i], { dtype, metadata }))
    }
    await writeFile(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n',
    )
  }
  if (options.tokenizerDir !== undefined) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
      const src = path.join(options.tokenizerDir, f)
      if (await exists(src)) await copyFile(src, path.join(dir, f))
    }
  }
}

/** Save a model's current base weights (LoRA not merged) as a model directory. */
export async function saveModel(model: LlamaModel, dir: string, options: SaveCheckpointOptions = {}): Promise<void> {
  const weights = new Map<string, Float32Array>()
  for (const name of model.baseWeightNames()) weights.set(name, await model.readBaseWeight(name))
  await saveCheckpoint(dir, model.config, weights, options)
}

// ---------------------------------------------------------------------------------
// PEFT adapters
// ---------------------------------------------------------------------------------

const PEFT_PREFIX = 'base_model.model.'
const PEFT_KEY = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/

const AdapterConfigSchema = z
  .object({
    peft_type: z.literal('LORA'),
    r: z.number().int().positive(),
    lora_alpha: z.number().positive(),
    target_modules: z.union([z.string(), z.array(z.string())]).nullish(),
    use_rslora: z.boolean().optional(),
    rank_pattern: z.record(z.string(), z.number().int().positive()).nullish(),
    alpha_pattern: z.record(z.string(), z.number().positive()).nullish(),
    bias: z.string().optional(),
    use_dora: z.boolean().optional(),
    fan_in_fan_out: z.boolean().optional(),
    modules_to_save: z.array(z.string()).nullish(),
  })
  .passthrough()

export interface SavePeftOptions {
  readonly baseModelNameOrPath?: string
  /** Storage dtype of the tensors (default F32). */
  readonly dtype?: SafetensorsDType
  readonly loraDropout?: number
}

/** Export an adapter as a PEFT directory (adapter_config.json + adapter_model.safetensors). */
export async function savePeftAdapter(dir: string, adapter: AdapterSet, options: SavePeftOptions = {}): Promise<void> {
  validateAdapter(adapter)
  const mods = adapter.modules
  const kinds = mods.map((m) => scalingKind(m.alpha, m.rank, m.scaling))
  if (kinds.some((k) => k === undefined)) {
    const bad = mods[kinds.indexOf(undefined)]
    throw new CheckpointError(`module ${bad.name}: scaling ${bad.scaling} is neither alpha/r nor alpha/sqrt(r); PEFT cannot express it`)
  }
  // rank 1 is both conventions; otherwise all modules must agree.
  const rslora = mods.some((m, i) => kinds[i] === 'rslora' && m.rank !== 1)
  if (rslora && mods.some((m, i) => kinds[i] === 'standard' && m.rank !== 1)) {
    throw new CheckpointError('adapter mixes alpha/r and alpha/sqrt(r) scalings; PEFT has one use_rslora flag')
  }
  const r = mostCommon(mods.map((m) => m.rank))
  const alpha = mostCommon(mods.map((m) => m.alpha))
  const rankPattern: Record<string, number> = {}
  const alphaPattern: Record<string, number> = {}
  for (const m of mods) {
    if (m.rank !== r) rankPattern[escapeRegex(m.name)] = m.rank
    if (m.alpha !== alpha) alphaPattern[escapeRegex(m.name)] = m.alpha
  }
  const kindsUsed = [...new Set(mods.map((m) => m.name.split('.').pop() as string))].sort()
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r,
    lora_alpha: alpha,
    target_modules: kindsUsed,
    // A target kind on a subset of layers is spelled out with layers_to_transform.
    layers_to_transform: layersToTransform(mods, kindsUsed),
    lora_dropout: options.loraDropout ?? 0,
    bias: 'none',
    use_rslora: rslora,
    rank_pattern: rankPattern,
    alpha_pattern: alphaPattern,
    fan_in_fan_out: false,
    inference_mode: true,
    base_model_name_or_path: options.baseModelNameOrPath ?? null,
  }
  const tensors = new Map<string, TensorToWrite>()
  for (const m of mods) {
    tensors.set(`${PEFT_PREFIX}${m.name}.lora_A.weight`, { shape: [m.rank, m.inFeatures], data: m.loraA })
    tensors.set(`${PEFT_PREFIX}${m.name}.lora_B.weight`, { shape: [m.outFeatures, m.rank], data: m.loraB })
  }
  await mkdir(dir, { recursive: true })
  await writeFile(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n')
  await writeFile(path.join(dir, 'adapter_model.safetensors'), serializeSafetensors(tensors, { dtype: options.dtype ?? 'F32', metadata: { format: 'pt' } }))
}

function layersToTransform(mods: readonly LoraModule[], kinds: readonly string[]): number[] | null {
  const layersOf = (k: string) =>
    mods
      .filter((m) => m.name.endsWith(`.${k}`))
      .map((m) => /\.layers\.(\d+)\./.exec(m.name))
      .map((x) => (x === null ? -1 : Number(x[1])))
  const first = layersOf(kinds[0]).sort((a, b) => a - b)
  if (first.includes(-1)) return null
  const same = kinds.every((k) => JSON.stringify(layersOf(k).sort((a, b) => a - b)) === JSON.stringify(first))
  const contiguousFromZero = first.every((l, i) => l === i)
  // null = every layer (PEFT default); only list layers when the adapter covers a subset.
  return same && !contiguousFromZero ? first : null
}

/**
 * Import a PEFT LoRA directory. `shapes`, when given (e.g. model.moduleShapes()), checks
 * every module against the base model.
 */
export async function loadPeftAdapter(dir: string, shapes?: readonly ModuleShape[]): Promise<AdapterSet> {
  await requireDir(dir)
  const cfgPath = path.join(dir, 'adapter_config.json')
  const parsed = AdapterConfigSchema.safeParse(await readJson(cfgPath))
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new CheckpointError(`field '${issue.path.join('.')}': ${issue.message}`, cfgPath)
  }
  const cfg = parsed.data
  if (cfg.use_dora === true) throw new CheckpointError('DoRA adapters (use_dora) are not supported', cfgPath)
  if (cfg.bias !== undefined && cfg.bias !== 'none') throw new CheckpointError(`bias '${cfg.bias}' is not supported (only 'none')`, cfgPath)
  if (cfg.fan_in_fan_out === true) throw new CheckpointError('fan_in_fan_out adapters are not supported', cfgPath)
  if (cfg.modules_to_save != null && cfg.modules_to_save.length > 0) {
    throw new CheckpointError('modules_to_save is not supported (only LoRA weights)', cfgPath)
  }
  const weightsPath = path.join(dir, 'adapter_model.safetensors')
  if (!(await exists(weightsPath))) {
    const hint = (await exists(path.join(dir, 'adapter_model.bin'))) ? ' (adapter_model.bin is not supported: save with safe_serialization)' : ''
    throw new CheckpointError(`adapter_model.safetensors is missing${hint}`, dir)
  }
  const buf = await readFile(weightsPath)
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
  let header
  try {
    header = parseSafetensorsHeader(bytes)
  } catch (err) {
    if (err instanceof SafetensorsError) throw new SafetensorsError(err.detail, err.tensor, weightsPath)
    throw err
  }
  const pairs = new Map<string, { a?: string; b?: string }>()
  for (const key of header.tensors.keys()) {
    const m = PEFT_KEY.exec(key)
    if (m === null) throw new CheckpointError(`unexpected tensor '${key}' (only base_model.model.<module>.lora_A/B.weight)`, weightsPath)
    const p = pairs.get(m[1]) ?? {}
    if (m[2] === 'A') p.a = key
    else p.b = key
    pairs.set(m[1], p)
  }
  const patternKeys = [...Object.keys(cfg.rank_pattern ?? {}), ...Object.keys(cfg.alpha_pattern ?? {})]
  const modules: LoraModule[] = []
  for (const [name, p] of pairs) {
    if (p.a === undefined || p.b === undefined) throw new CheckpointError(`module ${name} has lora_${p.a === undefined ? 'A' : 'B'} missing`, weightsPath)
    const a = decodeTensor(bytes, header, p.a)
    const b = decodeTensor(bytes, header, p.b)
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== b.shape[1]) {
      throw new CheckpointError(`module ${name}: lora_A [${a.shape.join(', ')}] and lora_B [${b.shape.join(', ')}] are not [r, in] and [out, r]`, weightsPath)
    }
    const rank = a.shape[0]
    const key = patternKey(name, patternKeys, cfgPath) ?? name
    const expectedRank = cfg.rank_pattern?.[key] ?? cfg.r
    if (rank !== expectedRank) throw new CheckpointError(`module ${name}: lora_A has rank ${rank}, adapter_config.json says ${expectedRank}`, weightsPath)
    const alpha = cfg.alpha_pattern?.[key] ?? cfg.lora_alpha
    modules.push({
      name,
      rank,
      inFeatures: a.shape[1],
      outFeatures: b.shape[0],
      alpha,
      scaling: loraScaling(alpha, rank, { rslora: cfg.use_rslora === true }),
      loraA: a.data,
      loraB: b.data,
    })
  }
  if (modules.length === 0) throw new CheckpointError('no LoRA tensors', weightsPath)
  modules.sort((x, y) => compareModuleNames(x.name, y.name))
  const adapter: AdapterSet = { modules }
  if (shapes !== undefined) validateAdapterAgainstShapes(adapter, shapes)
  else validateAdapter(adapter)
  return adapter
}

/** PEFT's pattern lookup: the first key k with re.match(rf"(.*\.)?{k}$", module). */
function patternKey(name: string, keys: readonly string[], file: string): string | undefined {
  for (const k of keys) {
    let re: RegExp
    try {
      re = new RegExp(`^(.*\\.)?(?:${k})$`)
    } catch {
      throw new CheckpointError(`invalid rank/alpha pattern '${k}'`, file)
    }
    if (re.test(name)) return k
  }
  return undefined
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

function mostCommon(xs: readonly number[]): number {
  const counts = new Map<number, number>()
  for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1)
  let best = xs[0]
  for (const [x, c] of counts) if (c > (counts.get(best) as number)) best = x
  return best
}

// ---------------------------------------------------------------------------------
// fs helpers
// ---------------------------------------------------------------------------------

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p)
    return true
  } catch {
    return false
  }
}

async function requireDir(dir: string): Promise<void> {
  let s
  try {
    s = await stat(dir)
  } catch {
    throw new CheckpointError('directory does not exist', dir)
  }
  if (!s.isDirectory()) throw new CheckpointError('not a directory', dir)
}

async function readJson(file: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    throw new CheckpointError('file is missing or unreadable', file)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new CheckpointError(`invalid JSON: ${(err as Error).message}`, file)
  }
}
