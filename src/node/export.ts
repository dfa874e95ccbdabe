/**
 * Exporting the model a swarm agreed on, as files a user takes home.
 *
 * WHY THE STACKED ADAPTER IS EXACT. Every committed round r merges its aggregate's terms
 * into the target weights (state.ts, merge.ts):  W_r = fl32(W_{r-1} + sum_k c_rk B_rk A_rk).
 * Unrolled, in real arithmetic
 *   W_R = W_0 + sum_r sum_k c_rk B_rk A_rk = W_0 + B* A*,
 *   A* = [A_11; A_12; ...; A_R1; ...]            (every term's A rows, stacked, [R_m, in])
 *   B* = [c_11 B_11 | c_12 B_12 | ... ]          (every term's B columns times its coef, [out, R_m])
 * since a sum of products B_k A_k is the product of the column-stacked B's and the row-
 * stacked A's (no cross terms). So the cumulative update since genesis is itself a LoRA
 * of rank R_m = sum of the module's term ranks, and with alpha = r (scaling 1) it is a
 * plain PEFT adapter on the *base* checkpoint. The global adapter kept on top of the
 * weights (FedIT, FFA, zero-padding, FlexLoRA: they merge nothing and keep the round's
 * aggregate as `global`) is stacked after the merged terms the same way. The only
 * differences from the agreed model are float rounding: the peers round W to float32 once
 * per round (<= ulp32(W)/2 each), and B* is stored as float32 (fl32(c * b), computed in
 * float64 and rounded once: relative 2^-24 per entry); the test derives the bound. The rank grows linearly with the rounds, which is the price
 * of exactness; `model/` holds the merged weights as an alternative.
 *
 * LAYOUT written by exportFederatedModel(outDir):
 *   outDir/model/      HF model dir (config.json, model.safetensors, tokenizer files) of the
 *                      base checkpoint with the target tensors replaced by the agreed
 *                      weights, bit for bit; without a base checkpoint (synthetic trainer):
 *                      weights.safetensors (the target weights, F32) + flora.json
 *   outDir/adapter/    PEFT LoRA (adapter_config.json, adapter_model.safetensors): the
 *                      cumulative update (+ global terms) to apply to the base model
 *   outDir/flora.json  provenance, written last: its presence means the export is complete
 * Everything is first written to outDir/.tmp-XXXXXX, then each subdirectory is renamed
 * into place (the old one moved aside and deleted), so a crash never leaves a directory
 * whose flora.json describes files that are not all there.
 *
 * The model layer (checkpoint.ts pulls in tfjs) is imported lazily, so importing the node
 * layer stays tfjs-free for synthetic peers.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { LowRankTerm, ModuleTerms } from '../aggregation/types.js'
import type { AdapterSet, LoraModule, ModuleShape } from '../lora/types.js'
import { compareModuleNames } from '../lora/validate.js'
import { decodeTensor, parseSafetensorsHeader, serializeSafetensors, type TensorToWrite } from '../model/safetensors.js'

// ---------------------------------------------------------------------------------
// CumulativeUpdate
// ---------------------------------------------------------------------------------

/** Format tag of CumulativeUpdate.serialize() (safetensors `__metadata__.format`). */
export const CUMULATIVE_UPDATE_FORMAT = 'flora-cumulative-update/1'

interface StoredTerm {
  readonly round: number
  readonly module: string
  readonly term: LowRankTerm
}

/**
 * The merge terms of every committed round since genesis, in order. With the genesis
 * weights W_0 it reproduces the agreed weights W_R = W_0 + toAdapter() (see the header).
 */
export class CumulativeUpdate {
  #round = 0
  /** Terms in commit order (round ascending, then the aggregate's module and term order). */
  readonly #terms: StoredTerm[] = []
  /** Module -> [in, out] as seen in its first term (later terms must agree). */
  readonly #dims = new Map<string, readonly [number, number]>()

  /** Last round added (0: nothing yet). */
  get round(): number {
    return this.#round
  }

  /** Total rank R_m per module (modules with terms only), in canonical order. */
  ranks(): Map<string, number> {
    const out = new Map<string, number>()
    for (const s of this.#terms) out.set(s.module, (out.get(s.module) ?? 0) + s.term.rank)
    return new Map([...out].sort((a, b) => compareModuleNames(a[0], b[0])))
  }

  /**
   * Appends round `round`'s merge terms (`aggregate.merge`; an empty map for rounds that
   * merged nothing). Rounds must come consecutively from 1. Tensors are copied.
   */
  add(round: number, merge: ModuleTerms): void {
    if (!Number.isSafeInteger(round) || round !== this.#round + 1) {
      throw new Error(`cumulative update: round ${round} added after round ${this.#round} (rounds must be consecutive from 1)`)
    }
    const staged: StoredTerm[] = []
    const dims = new Map(this.#dims)
    for (const [module, terms] of merge) {
      terms.forEach((t, k) => {
        const where = `cumulative update: round ${round}, module ${module}, term ${k}`
        if (!Number.isSafeInteger(t.rank) || t.rank < 1) throw new Error(`${where}: rank must be an integer >= 1, got ${t.rank}`)
        if (!Number.isFinite(t.coef)) throw new Error(`${where}: coef must be finite, got ${t.coef}`)
        const inF = t.loraA.length / t.rank
        const out = t.loraB.length / t.rank
        if (!Number.isInteger(inF) || !Number.isInteger(out) || inF < 1 || out < 1) {
          throw new Error(`${where}: loraA (${t.loraA.length}) and loraB (${t.loraB.length}) are not multiples of rank ${t.rank}`)
        }
        const seen = dims.get(module)
        if (seen !== undefined && (seen[0] !== inF || seen[1] !== out)) {
          throw new Error(`${where}: shape [${out}, ${inF}] differs from the module's earlier terms [${seen[1]}, ${seen[0]}]`)
        }
        dims.set(module, [inF, out])
        // -0 and +0 merge identically (the kernel's accumulator starts at +0); store +0 so
        // the JSON of serialize() is exact.
        const coef = t.coef === 0 ? 0 : t.coef
        staged.push({ round, module, term: { coef, rank: t.rank, loraA: t.loraA.slice(), loraB: t.loraB.slice() } })
      })
    }
    this.#terms.push(...staged)
    for (const [m, d] of dims) this.#dims.set(m, d)
    this.#round = round
  }

  /**
   * The update as one LoRA per module: rank R_m, alpha R_m (scaling 1), A the stacked A
   * rows, B the stacked B columns times their coef (fl32(coef * b), one rounding). The
   * `global` terms (the state's global adapter) are stacked after the merged ones. Modules
   * without any term are left out; canonical module order.
   */
  toAdapter(shapes: readonly ModuleShape[], global?: ModuleTerms): AdapterSet {
    const byName = new Map(shapes.map((s) => [s.name, s]))
    const perModule = new Map<string, LowRankTerm[]>()
    const push = (module: string, t: LowRankTerm): void => {
      if (!perModule.has(module)) perModule.set(module, [])
      ;(perModule.get(module) as LowRankTerm[]).push(t)
    }
    for (const s of this.#terms) push(s.module, s.term)
    for (const [module, terms] of global ?? new Map<string, readonly LowRankTerm[]>()) for (const t of terms) push(module, t)
    const modules: LoraModule[] = []
    for (const name of [...perModule.keys()].sort(compareModuleNames)) {
      const shape = byName.get(name)
      if (shape === undefined) throw new Error(`cumulative update: module ${name} is not among the target modules`)
      const { inFeatures: inF, outFeatures: out } = shape
      const terms = perModule.get(name) as LowRankTerm[]
      let R = 0
      for (const t of terms) {
        if (!Number.isSafeInteger(t.rank) || t.rank < 1 || t.loraA.length !== t.rank * inF || t.loraB.length !== out * t.rank) {
          throw new Error(`cumulative update: module ${name}: a rank-${t.rank} term does not fit the module's shape [${out}, ${inF}]`)
        }
        if (!Number.isFinite(t.coef)) throw new Error(`cumulative update: module ${name}: coef ${t.coef} is not finite`)
        R += t.rank
      }
      const loraA = new Float32Array(R * inF)
      const loraB = new Float32Array(out * R)
      let o = 0
      for (const { coef, rank, loraA: a, loraB: b } of terms) {
        loraA.set(a, o * inF)
        for (let i = 0; i < out; i++) {
          for (let t = 0; t < rank; t++) loraB[i * R + o + t] = coef * b[i * rank + t] // float64 product, one fl32 rounding
        }
        o += rank
      }
      modules.push({ name, rank: R, inFeatures: inF, outFeatures: out, alpha: R, scaling: 1, loraA, loraB })
    }
    return { modules }
  }

  /**
   * Safetensors bytes: tensors `<i>.lora_A` [rank, in] / `<i>.lora_B` [out, rank] (F32, the
   * raw factors), and `__metadata__.terms`: JSON [{round, module, rank, coef}] indexed by i
   * (JSON round-trips float64 exactly), `__metadata__.round`: the last round.
   */
  serialize(): Uint8Array {
    const tensors = new Map<string, TensorToWrite>()
    const terms = this.#terms.map((s, i) => {
      const [inF, out] = this.#dims.get(s.module) as readonly [number, number]
      tensors.set(`${i}.lora_A`, { shape: [s.term.rank, inF], data: s.term.loraA })
      tensors.set(`${i}.lora_B`, { shape: [out, s.term.rank], data: s.term.loraB })
      return { round: s.round, module: s.module, rank: s.term.rank, coef: s.term.coef }
    })
    return serializeSafetensors(tensors, {
      dtype: 'F32',
      metadata: { format: CUMULATIVE_UPDATE_FORMAT, round: String(this.#round), terms: JSON.stringify(terms) },
    })
  }

  /** Inverse of serialize(), checked against the swarm's target shapes; throws on anything malformed. */
  static deserialize(bytes: Uint8Array, shapes: readonly ModuleShape[]): CumulativeUpdate {
    const fail = (msg: string): never => {
      throw new Error(`cumulative update: ${msg}`)
    }
    let header
    try {
      header = parseSafetensorsHeader(bytes)
    } catch (err) {
      return fail(`not a valid safetensors file: ${(err as Error).message}`)
    }
    const meta = header.metadata
    if (meta.format !== CUMULATIVE_UPDATE_FORMAT) fail(`format is ${JSON.stringify(meta.format)}, expected ${CUMULATIVE_UPDATE_FORMAT}`)
    const round = Number(meta.round)
    if (typeof meta.round !== 'string' || !/^\d{1,15}$/.test(meta.round) || !Number.isSafeInteger(round)) fail(`bad round ${JSON.stringify(meta.round)}`)
    let list: unknown
    try {
      list = JSON.parse(meta.terms ?? '')
    } catch {
      fail('metadata "terms" is not JSON')
    }
    if (!Array.isArray(list)) return fail('metadata "terms" is not an array')
    if (header.tensors.size !== 2 * list.length) fail(`${header.tensors.size} tensors for ${list.length} terms (expected 2 per term)`)
    const byName = new Map(shapes.map((s) => [s.name, s]))
    const rounds: Map<string, LowRankTerm[]>[] = Array.from({ length: round }, () => new Map())
    let prevRound = 1
    list.forEach((entry: unknown, i) => {
      const e = entry as Record<string, unknown>
      if (typeof e !== 'object' || e === null) fail(`term ${i} is not an object`)
      const r = e.round
      if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < prevRound || r > round) fail(`term ${i}: round ${String(r)} out of order or outside 1..${round}`)
      prevRound = r as number
      const module = e.module
      const shape = typeof module === 'string' ? byName.get(module) : undefined
      if (shape === undefined) return fail(`term ${i}: module ${JSON.stringify(module)} is not a target module`)
      const rank = e.rank
      if (typeof rank !== 'number' || !Number.isSafeInteger(rank) || rank < 1) return fail(`term ${i}: rank must be a positive integer, got ${JSON.stringify(rank)}`)
      const coef = e.coef
      if (typeof coef !== 'number' || !Number.isFinite(coef)) return fail(`term ${i}: coef must be a finite number, got ${JSON.stringify(coef)}`)
      const factor = (suffix: string, shape2: readonly number[]): Float32Array => {
        const name = `${i}.${suffix}`
        const t = header.tensors.get(name)
        if (t === undefined) return fail(`tensor ${name} is missing`)
        if (t.dtype !== 'F32') fail(`tensor ${name} is ${t.dtype}, expected F32`)
        if (t.shape.length !== 2 || t.shape[0] !== shape2[0] || t.shape[1] !== shape2[1]) {
          fail(`tensor ${name} has shape [${t.shape.join(', ')}], expected [${shape2.join(', ')}]`)
        }
        const data = decodeTensor(bytes, header, name).data
        for (let x = 0; x < data.length; x++) if (!Number.isFinite(data[x])) fail(`tensor ${name}[${x}] is ${data[x]}`)
        return data
      }
      const loraA = factor('lora_A', [rank, shape.inFeatures])
      const loraB = factor('lora_B', [shape.outFeatures, rank])
      const m = rounds[(r as number) - 1]
      if (!m.has(module as string)) m.set(module as string, [])
      ;(m.get(module as string) as LowRankTerm[]).push({ coef, rank, loraA, loraB })
    })
    const update = new CumulativeUpdate()
    rounds.forEach((merge, k) => update.add(k + 1, merge))
    return update
  }
}

// ---------------------------------------------------------------------------------
// exportFederatedModel
// ---------------------------------------------------------------------------------

export interface ExportOptions {
  /** The agreed state's round, hash and swarm. */
  readonly round: number
  readonly stateHash: string
  readonly swarmId: string
  readonly strategy: string
  /** The state's target weights (module name -> [out, in] float32). */
  readonly weights: ReadonlyMap<string, Float32Array>
  readonly shapes: readonly ModuleShape[]
  /** Every round's merge since genesis (its round must equal `round`); omitted: no adapter/. */
  readonly update?: CumulativeUpdate
  /** The state's global adapter, stacked into adapter/ after the merged terms. */
  readonly global?: ModuleTerms
  /** The base checkpoint (model trainer); undefined: synthetic base, target weights only. */
  readonly baseModelDir?: string
  /** Portable name for adapter_config.json (HF repo id or a directory name, never an absolute path). */
  readonly baseModelName?: string
}

export interface ExportedFile {
  /** Relative to outDir, '/'-separated. */
  readonly path: string
  readonly bytes: number
  readonly sha256: string
}

/** outDir/flora.json. */
export interface ExportManifest {
  readonly format: 'flora-export/1'
  readonly swarmId: string
  readonly round: number
  readonly stateHash: string
  readonly strategy: string
  readonly exportedAt: string
  readonly baseModel: string | null
  /** What model/ holds; the global adapter (if any) is not merged into it. */
  readonly model: { readonly kind: 'hf-checkpoint' | 'target-weights'; readonly includesGlobalAdapter: false }
  /** adapter/: a PEFT LoRA on the base model, or null with the reason. */
  readonly adapter: { readonly ranks: Record<string, number>; readonly includesGlobalAdapter: boolean } | { readonly omitted: string }
  readonly files: readonly ExportedFile[]
}

/** Writes outDir/{model,adapter,flora.json} (see the header); returns the manifest. */
export async function exportFederatedModel(outDir: string, options: ExportOptions): Promise<ExportManifest> {
  const { round, weights, shapes, update } = options
  if (!Number.isSafeInteger(round) || round < 0) throw new Error(`export: round must be an integer >= 0, got ${round}`)
  for (const s of shapes) {
    const w = weights.get(s.name)
    if (w === undefined) throw new Error(`export: the weights have no module ${s.name}`)
    if (w.length !== s.outFeatures * s.inFeatures) throw new Error(`export: module ${s.name} has ${w.length} weights, [${s.outFeatures}, ${s.inFeatures}] needs ${s.outFeatures * s.inFeatures}`)
  }
  if (weights.size !== shapes.length) throw new Error(`export: ${weights.size} weight tensors for ${shapes.length} target modules`)
  if (update !== undefined && update.round !== round) throw new Error(`export: the cumulative update ends at round ${update.round}, the state is at round ${round}`)
  const baseModel = options.baseModelName ?? (options.baseModelDir !== undefined ? path.basename(path.resolve(options.baseModelDir)) : null)
  if (baseModel !== null && (baseModel === '' || path.isAbsolute(baseModel) || path.win32.isAbsolute(baseModel) || baseModel.startsWith('~'))) {
    throw new Error(`export: baseModelName ${JSON.stringify(baseModel)} must be a portable name (an HF repo id or a directory name), not a local path`)
  }

  await mkdir(outDir, { recursive: true })
  const tmp = path.join(outDir, `.tmp-${randomBytes(6).toString('hex')}`)
  await mkdir(tmp)
  try {
    // 1. model/
    const modelTmp = path.join(tmp, 'model')
    let modelKind: 'hf-checkpoint' | 'target-weights'
    if (options.baseModelDir !== undefined) {
      modelKind = 'hf-checkpoint'
      const { readCheckpoint, saveCheckpoint } = await import('../model/checkpoint.js')
      const base = await readCheckpoint(options.baseModelDir)
      const merged = new Map(base.weights)
      for (const s of shapes) {
        const key = `${s.name}.weight`
        const old = base.weights.get(key)
        if (old === undefined) throw new Error(`export: the base checkpoint ${options.baseModelDir} has no tensor ${key}`)
        if (old.length !== (weights.get(s.name) as Float32Array).length) throw new Error(`export: tensor ${key} of the base checkpoint has another size than the agreed weights`)
        merged.set(key, weights.get(s.name) as Float32Array)
      }
      await saveCheckpoint(modelTmp, base.config, merged, { tokenizerDir: options.baseModelDir })
      const gen = path.join(options.baseModelDir, 'generation_config.json')
      if (existsSync(gen)) await copyFile(gen, path.join(modelTmp, 'generation_config.json'))
    } else {
      modelKind = 'target-weights'
      await mkdir(modelTmp)
      const tensors = new Map<string, TensorToWrite>()
      for (const s of shapes) tensors.set(`${s.name}.weight`, { shape: [s.outFeatures, s.inFeatures], data: weights.get(s.name) as Float32Array })
      await writeFile(path.join(modelTmp, 'weights.safetensors'), serializeSafetensors(tensors, { dtype: 'F32', metadata: { format: 'pt' } }))
      const info = {
        format: 'flora-target-weights/1',
        description: 'The target modules\' agreed weights (no base checkpoint: synthetic base). Tensor <module>.weight is [out, in], F32.',
        swarmId: options.swarmId,
        round,
        stateHash: options.stateHash,
        modules: shapes.map((s) => ({ name: s.name, tensor: `${s.name}.weight`, shape: [s.outFeatures, s.inFeatures] })),
      }
      await writeFile(path.join(modelTmp, 'flora.json'), JSON.stringify(info, null, 2) + '\n')
    }

    // 2. adapter/
    let adapterInfo: ExportManifest['adapter']
    if (update === undefined) {
      adapterInfo = { omitted: 'no cumulative update was given (the peer did not record every round since genesis)' }
    } else {
      const adapter = update.toAdapter(shapes, options.global)
      if (adapter.modules.length === 0) {
        adapterInfo = { omitted: 'nothing was merged since genesis and there is no global adapter' }
      } else {
        const { savePeftAdapter } = await import('../model/checkpoint.js')
        await savePeftAdapter(path.join(tmp, 'adapter'), adapter, { baseModelNameOrPath: baseModel ?? undefined })
        const hasGlobal = [...(options.global ?? new Map<string, readonly LowRankTerm[]>()).values()].some((ts) => ts.length > 0)
        adapterInfo = { ranks: Object.fromEntries(adapter.modules.map((m) => [m.name, m.rank])), includesGlobalAdapter: hasGlobal }
      }
    }

    // 3. Into place: first drop the old flora.json (the directory stops looking complete),
    // then swap each subdirectory, then write the new flora.json.
    await rm(path.join(outDir, 'flora.json'), { force: true })
    const files: ExportedFile[] = []
    for (const sub of ['model', 'adapter']) {
      const dest = path.join(outDir, sub)
      if (existsSync(dest)) await rename(dest, path.join(tmp, `old-${sub}`))
      const src = path.join(tmp, sub)
      if (!existsSync(src)) continue
      await rename(src, dest)
      for (const f of (await readdir(dest)).sort()) {
        const data = await readFile(path.join(dest, f))
        files.push({ path: `${sub}/${f}`, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') })
      }
    }
    const manifest: ExportManifest = {
      format: 'flora-export/1',
      swarmId: options.swarmId,
      round,
      stateHash: options.stateHash,
      strategy: options.strategy,
      exportedAt: new Date().toISOString(),
      baseModel,
      model: { kind: modelKind, includesGlobalAdapter: false },
      adapter: adapterInfo,
      files,
    }
    const manifestTmp = path.join(tmp, 'flora.json')
    await writeFile(manifestTmp, JSON.stringify(manifest, null, 2) + '\n')
    await rename(manifestTmp, path.join(outDir, 'flora.json'))
    return manifest
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

