/**
 * Exporting the agreed model (src/node/export.ts): the HF model directory holds the state's
 * weights bit for bit, the PEFT adapter (the cumulative update stacked since genesis)
 * applied to the base reproduces them up to float rounding, and the persisted update
 * round-trips exactly and refuses malformed bytes.
 *
 * ERROR BOUND of W0 + adapter against the agreed weights W_R (per module; M = max |W| over
 * the genesis, every round's state and the reconstruction; S = max_ij sum_s |b'_s a_s|, the
 * stacked terms' absolute sum; R_m the module's total rank; ROUNDS rounds):
 *   - each round the peers round W to float32 once:         ROUNDS * ulp32(M) / 2
 *   - the reconstruction is rounded to float32 once:                 ulp32(M) / 2
 *   - the adapter stores B' = fl32(coef * b) (relative 2^-24): 2^-24 * S
 *   - float64 products and sums (kernel and reference):     (2 R_m + 8) * 2^-53 * (M + S)
 * so  bound = (ROUNDS + 1) ulp32(M) / 2 + 2^-24 S + (2 R_m + 8) 2^-53 (M + S).
 * The float64 part is ~1e-15 relative and negligible; the bound is a few float32 ulps of the
 * weights, orders of magnitude below the update itself (checked too, so the test has teeth).
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ClientUpdate, LowRankTerm, ModuleTerms } from '../../src/aggregation/types.js'
import { initAdapter } from '../../src/lora/init.js'
import { createPrng } from '../../src/lora/prng.js'
import type { AdapterSet, ModuleShape } from '../../src/lora/types.js'
import { compareModuleNames } from '../../src/lora/validate.js'
import { type Checkpoint, loadPeftAdapter, readCheckpoint } from '../../src/model/checkpoint.js'
import { DEFAULT_TARGET_MODULES, expectedWeightShapes } from '../../src/model/llama.js'
import { parseSafetensors, readSafetensorsFile, serializeSafetensors, type TensorToWrite } from '../../src/model/safetensors.js'
import { CumulativeUpdate, exportFederatedModel, type ExportManifest } from '../../src/node/export.js'
import { applyRound, genesisState, type SwarmState } from '../../src/node/state.js'
import { syntheticShapes, syntheticWeights } from '../../src/node/synthetic.js'

const MODEL_DIR = fileURLToPath(new URL('../../models/flora-tiny/', import.meta.url))
const ROUNDS = 3

let work: string
beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'flora-export-'))
})
afterAll(async () => {
  await rm(work, { recursive: true, force: true })
})

/** A trained-looking adapter: PEFT init A, B uniform in [-b, b] (seeded). */
function randomAdapter(shapes: readonly ModuleShape[], rank: number, alpha: number, seed: string, b = 0.2, targets?: string[]): AdapterSet {
  const set = initAdapter({ shapes, rank, alpha, seed, targets })
  const prng = createPrng(seed).fork('test.loraB')
  for (const m of set.modules) prng.fork(m.name).fillUniform(m.loraB, -b, b)
  return set
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  return x.every((v, i) => v === y[i])
}

/** Spacing of float32 numbers at |x| (upper side; 2^-149 for subnormals). */
function ulp32(x: number): number {
  const bits = new Uint32Array(new Float32Array([Math.abs(x)]).buffer)[0]
  const exp = bits >>> 23
  return exp === 0 ? 2 ** -149 : 2 ** (exp - 127 - 23)
}

const maxAbs = (xs: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]))
  return m
}

/** W0 + scaling * B @ A in float64, and S[i, j] = sum_t |scaling B[i, t] A[t, j]|. */
function applyAdapter(w0: Float32Array, m: AdapterSet['modules'][number]): { w: Float64Array; s: Float64Array } {
  const { inFeatures: inF, outFeatures: out, rank: r, loraA, loraB, scaling } = m
  const w = Float64Array.from(w0)
  const s = new Float64Array(out * inF)
  for (let i = 0; i < out; i++) {
    for (let t = 0; t < r; t++) {
      const b = scaling * loraB[i * r + t]
      for (let j = 0; j < inF; j++) {
        const p = b * loraA[t * inF + j]
        w[i * inF + j] += p
        s[i * inF + j] += Math.abs(p)
      }
    }
  }
  return { w, s }
}

describe('export of a flora swarm on the bundled model', () => {
  let base: Checkpoint
  let shapes: ModuleShape[]
  const states: SwarmState[] = []
  let update: CumulativeUpdate
  let out: string
  let manifest: ExportManifest

  beforeAll(async () => {
    base = await readCheckpoint(MODEL_DIR)
    // The model trainer's targets (q_proj, v_proj), as LlamaModel.targetModuleShapes() lists them.
    shapes = [...expectedWeightShapes(base.config)]
      .filter(([name]) => DEFAULT_TARGET_MODULES.some((k) => name.endsWith(`.${k}.weight`)))
      .map(([name, [o, i]]) => ({ name: name.slice(0, -'.weight'.length), inFeatures: i, outFeatures: o }))
      .sort((a, b) => compareModuleNames(a.name, b.name))
    const genesisWeights = new Map(shapes.map((s) => [s.name, base.weights.get(`${s.name}.weight`) as Float32Array]))
    states.push(genesisState(genesisWeights, shapes))
    update = new CumulativeUpdate()
    // Ranks and alphas differ per client and per round; round 3 adapts q_proj only, so
    // q_proj and v_proj end with different total ranks (rank_pattern in the PEFT config).
    const plan: { rank: number; alpha: number; samples: number; targets?: string[] }[][] = [
      [{ rank: 2, alpha: 4, samples: 30 }, { rank: 4, alpha: 8, samples: 50 }, { rank: 8, alpha: 16, samples: 20 }],
      [{ rank: 1, alpha: 2, samples: 10 }, { rank: 3, alpha: 3, samples: 70 }],
      [{ rank: 2, alpha: 8, samples: 40, targets: ['q_proj'] }, { rank: 6, alpha: 12, samples: 40, targets: ['q_proj'] }, { rank: 4, alpha: 4, samples: 5, targets: ['q_proj'] }],
    ]
    for (let r = 1; r <= ROUNDS; r++) {
      const updates: ClientUpdate[] = plan[r - 1].map((c, k) => ({
        id: `peer-${k}`,
        samples: c.samples,
        adapter: randomAdapter(shapes, c.rank, c.alpha, `export-test/${r}/${k}`, 0.2, c.targets),
      }))
      const next = await applyRound(states[r - 1], 'flora', shapes, updates, { workers: 0 })
      update.add(next.round, next.aggregate?.merge ?? new Map())
      states.push(next)
    }
    out = path.join(work, 'flora-export')
    const head = states[ROUNDS]
    manifest = await exportFederatedModel(out, {
      round: head.round,
      stateHash: head.hash,
      swarmId: 'test-swarm',
      strategy: 'flora',
      weights: head.weights,
      shapes,
      update,
      global: head.global,
      baseModelDir: MODEL_DIR,
      baseModelName: 'flora-tiny',
    })
  })

  it('writes flora.json last, describing every file, and leaves no temp dir', async () => {
    const onDisk = JSON.parse(await readFile(path.join(out, 'flora.json'), 'utf8')) as ExportManifest
    expect(onDisk).toEqual(manifest)
    expect(manifest).toMatchObject({ swarmId: 'test-swarm', round: ROUNDS, stateHash: states[ROUNDS].hash, strategy: 'flora', baseModel: 'flora-tiny' })
    expect(manifest.model.kind).toBe('hf-checkpoint')
    expect(manifest.files.map((f) => f.path)).toEqual(
      expect.arrayContaining(['model/config.json', 'model/model.safetensors', 'model/tokenizer.json', 'adapter/adapter_config.json', 'adapter/adapter_model.safetensors']),
    )
    expect((await readdir(out)).sort()).toEqual(['adapter', 'flora.json', 'model'])
  })

  it('(a) the model dir loads, target tensors are the agreed weights bit for bit, the rest is the base', async () => {
    const ck = await readCheckpoint(path.join(out, 'model'))
    expect(ck.config).toEqual(base.config)
    expect(ck.hasTokenizer).toBe(true)
    const targets = new Set(shapes.map((s) => `${s.name}.weight`))
    expect([...ck.weights.keys()].sort()).toEqual([...base.weights.keys()].sort())
    for (const [name, w] of ck.weights) {
      const want = targets.has(name) ? (states[ROUNDS].weights.get(name.slice(0, -'.weight'.length)) as Float32Array) : (base.weights.get(name) as Float32Array)
      expect(sameBits(w, want), name).toBe(true)
    }
    // ... and the rounds did change every target.
    for (const s of shapes) expect(sameBits(states[ROUNDS].weights.get(s.name) as Float32Array, states[0].weights.get(s.name) as Float32Array)).toBe(false)
  })

  it('(b) base + PEFT adapter reproduces the agreed weights within the derived bound', async () => {
    const cfg = JSON.parse(await readFile(path.join(out, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>
    expect(cfg.base_model_name_or_path).toBe('flora-tiny')
    expect(Object.keys(cfg.rank_pattern as object).length).toBeGreaterThan(0)
    const adapter = await loadPeftAdapter(path.join(out, 'adapter'), shapes)
    expect(adapter.modules.map((m) => m.name)).toEqual(shapes.map((s) => s.name))
    const ranks = update.ranks()
    let worst = { ratio: 0, err: 0, bound: 0 }
    for (const m of adapter.modules) {
      expect(m.scaling).toBe(1)
      expect(m.rank).toBe(ranks.get(m.name))
      expect(m.rank).toBe(m.name.endsWith('q_proj') ? 4 + 14 + 12 : 4 + 14)
      const w0 = states[0].weights.get(m.name) as Float32Array
      const wR = states[ROUNDS].weights.get(m.name) as Float32Array
      const { w, s } = applyAdapter(w0, m)
      const rec = Float32Array.from(w) // one float32 rounding
      let M = 0
      for (const st of states) M = Math.max(M, maxAbs(st.weights.get(m.name) as Float32Array))
      M = Math.max(M, maxAbs(rec))
      const S = maxAbs(s)
      const bound = ((ROUNDS + 1) * ulp32(M)) / 2 + 2 ** -24 * S + (2 * m.rank + 8) * 2 ** -53 * (M + S)
      let err = 0
      let update = 0
      for (let x = 0; x < wR.length; x++) {
        err = Math.max(err, Math.abs(rec[x] - wR[x]))
        update = Math.max(update, Math.abs(wR[x] - w0[x]))
      }
      expect(err, m.name).toBeLessThanOrEqual(bound)
      expect(update, m.name).toBeGreaterThan(1e4 * bound) // the check has teeth
      if (err / bound > worst.ratio) worst = { ratio: err / bound, err, bound }
    }
    // Measured: 0.44 of the bound at worst (printed for the record).
    console.log(`export: max |W0 + adapter - W_R| = ${worst.err.toExponential(3)}, bound ${worst.bound.toExponential(3)} (ratio ${worst.ratio.toFixed(3)})`)
  })

  it('(c) serialize / deserialize round-trips exactly', () => {
    const bytes = update.serialize()
    const back = CumulativeUpdate.deserialize(bytes, shapes)
    expect(back.round).toBe(ROUNDS)
    expect(back.ranks()).toEqual(update.ranks())
    expect(Buffer.from(back.serialize()).equals(Buffer.from(bytes))).toBe(true)
    const a = update.toAdapter(shapes)
    const b = back.toAdapter(shapes)
    expect(b.modules.length).toBe(a.modules.length)
    a.modules.forEach((m, i) => {
      expect(sameBits(b.modules[i].loraA, m.loraA)).toBe(true)
      expect(sameBits(b.modules[i].loraB, m.loraB)).toBe(true)
    })
    // The exact float64 coefs survive (they are not float32 values).
    const terms = JSON.parse(parseSafetensors(bytes).metadata.terms) as { coef: number }[]
    expect(terms.some((t) => t.coef !== Math.fround(t.coef))).toBe(true)
  })

  it('(d) malformed serialized bytes throw a clear error', () => {
    const good = update.serialize()
    const parsed = parseSafetensors(good)
    const rebuild = (edit: (meta: Record<string, string>, tensors: Map<string, TensorToWrite>) => void): Uint8Array => {
      const meta = { ...parsed.metadata }
      const tensors = new Map<string, TensorToWrite>([...parsed.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]))
      edit(meta, tensors)
      return serializeSafetensors(tensors, { metadata: meta })
    }
    const editTerm = (i: number, patch: Record<string, unknown>) =>
      rebuild((meta) => {
        const terms = JSON.parse(meta.terms) as Record<string, unknown>[]
        terms[i] = { ...terms[i], ...patch }
        meta.terms = JSON.stringify(terms)
      })
    const cases: [string, Uint8Array, RegExp][] = [
      ['truncated', good.subarray(0, good.length - 4), /not a valid safetensors/],
      ['garbage', new Uint8Array(64).fill(7), /not a valid safetensors/],
      ['other format', rebuild((m) => void (m.format = 'something-else')), /format/],
      ['bad round', rebuild((m) => void (m.round = '-1')), /bad round/],
      ['terms not JSON', rebuild((m) => void (m.terms = '[{')), /not JSON/],
      ['terms not an array', rebuild((m) => void (m.terms = '{}')), /not an array/],
      ['rank 0', editTerm(0, { rank: 0 }), /rank must be a positive integer/],
      ['wrong rank', editTerm(0, { rank: 3 }), /has shape/],
      ['coef not a number', editTerm(1, { coef: 'NaN' }), /coef must be a finite number/],
      ['coef null', editTerm(1, { coef: null }), /coef must be a finite number/],
      ['unknown module', editTerm(2, { module: 'model.layers.9.self_attn.q_proj' }), /not a target module/],
      ['round beyond the last', editTerm(0, { round: ROUNDS + 1 }), /outside/],
      ['rounds out of order', editTerm(0, { round: 2 }), /out of order/],
      ['missing tensor', rebuild((_m, t) => void t.delete('0.lora_B')), /tensors for/],
      ['renamed tensor', rebuild((_m, t) => {
        t.set('x.lora_B', t.get('0.lora_B') as TensorToWrite)
        t.delete('0.lora_B')
      }), /tensor 0.lora_B is missing/],
      ['non-finite value', rebuild((_m, t) => {
        const a = t.get('0.lora_A') as TensorToWrite
        const data = a.data.slice()
        data[5] = Number.POSITIVE_INFINITY
        t.set('0.lora_A', { shape: a.shape, data })
      }), /is Infinity/],
      ['F16 tensors', serializeSafetensors(new Map([...parsed.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }])), { dtype: 'F16', metadata: parsed.metadata }), /expected F32/],
    ]
    for (const [what, bytes, re] of cases) {
      expect(() => CumulativeUpdate.deserialize(bytes, shapes), what).toThrow(re)
      expect(() => CumulativeUpdate.deserialize(bytes, shapes), what).toThrow(/^cumulative update: /)
    }
    // Shapes that differ from the swarm's.
    const other = shapes.map((s) => ({ ...s, inFeatures: s.inFeatures + 1 }))
    expect(() => CumulativeUpdate.deserialize(good, other)).toThrow(/has shape/)
  })

  it('add() takes consecutive rounds from 1 only', () => {
    const u = new CumulativeUpdate()
    expect(() => u.add(2, new Map())).toThrow(/consecutive/)
    u.add(1, new Map())
    expect(() => u.add(1, new Map())).toThrow(/consecutive/)
    expect(u.round).toBe(1)
    const bad: ModuleTerms = new Map([['m', [{ coef: Number.NaN, rank: 1, loraA: new Float32Array(2), loraB: new Float32Array(2) }]]])
    expect(() => u.add(2, bad)).toThrow(/coef must be finite/)
    expect(u.round).toBe(1) // a refused round changes nothing
  })

  it('a re-export replaces the old one; a failed export leaves it intact; no adapter without an update', async () => {
    const head = states[ROUNDS]
    const common = { round: head.round, stateHash: head.hash, swarmId: 'test-swarm', strategy: 'flora', weights: head.weights, shapes }
    const before = await readFile(path.join(out, 'flora.json'), 'utf8')
    await expect(exportFederatedModel(out, { ...common, update, baseModelDir: path.join(work, 'no-such-model') })).rejects.toThrow(/does not exist/)
    await expect(exportFederatedModel(out, { ...common, update, baseModelDir: MODEL_DIR, baseModelName: '/home/me/models/flora-tiny' })).rejects.toThrow(/portable name/)
    await expect(exportFederatedModel(out, { ...common, round: ROUNDS + 1, update, baseModelDir: MODEL_DIR })).rejects.toThrow(/ends at round/)
    expect(await readFile(path.join(out, 'flora.json'), 'utf8')).toBe(before)
    expect((await readdir(out)).sort()).toEqual(['adapter', 'flora.json', 'model'])

    const again = await exportFederatedModel(out, { ...common, baseModelDir: MODEL_DIR })
    expect(again.adapter).toHaveProperty('omitted')
    expect(again.baseModel).toBe('flora-tiny') // the directory's basename by default
    expect((await readdir(out)).sort()).toEqual(['flora.json', 'model'])
    const ck = await readCheckpoint(path.join(out, 'model'))
    for (const s of shapes) expect(sameBits(ck.weights.get(`${s.name}.weight`) as Float32Array, head.weights.get(s.name) as Float32Array)).toBe(true)
  })
})

describe('export of a FedIT swarm on a synthetic base', () => {
  it('model/ holds the target weights; the adapter stacks the global terms', async () => {
    const shapes = syntheticShapes({ layers: 2, hidden: 16 })
    let state = genesisState(syntheticWeights(shapes, 7), shapes)
    const w0 = state.weights
    const update = new CumulativeUpdate()
    for (let r = 1; r <= 2; r++) {
      const updates: ClientUpdate[] = [0, 1, 2].map((k) => ({ id: `p${k}`, samples: 10 + 7 * k, adapter: randomAdapter(shapes, 4, 8, `fedit/${r}/${k}`) }))
      state = await applyRound(state, 'fedit', shapes, updates, { workers: 0 })
      update.add(state.round, state.aggregate?.merge ?? new Map())
    }
    expect(state.global.size).toBe(shapes.length)
    const dir = path.join(work, 'fedit-export')
    const manifest = await exportFederatedModel(dir, {
      round: state.round,
      stateHash: state.hash,
      swarmId: 'fedit-swarm',
      strategy: 'fedit',
      weights: state.weights,
      shapes,
      update,
      global: state.global,
    })
    expect(manifest.model.kind).toBe('target-weights')
    expect(manifest.adapter).toMatchObject({ includesGlobalAdapter: true })
    expect(manifest.baseModel).toBeNull()
    const file = await readSafetensorsFile(path.join(dir, 'model', 'weights.safetensors'))
    for (const s of shapes) expect(sameBits(file.tensors.get(`${s.name}.weight`)?.data as Float32Array, state.weights.get(s.name) as Float32Array)).toBe(true)
    expect(JSON.parse(await readFile(path.join(dir, 'model', 'flora.json'), 'utf8'))).toMatchObject({ round: 2, stateHash: state.hash })

    // FedIT merges nothing: the adapter is exactly the global term s * B A (B' = fl32(s b)),
    // so W0 + adapter = W_R + global within the fold's 2^-24 S plus float64 rounding.
    const adapter = await loadPeftAdapter(path.join(dir, 'adapter'), shapes)
    for (const m of adapter.modules) {
      const [g] = state.global.get(m.name) as readonly LowRankTerm[]
      expect(m.rank).toBe(g.rank)
      const { w, s } = applyAdapter(w0.get(m.name) as Float32Array, m)
      const ref = applyAdapter(state.weights.get(m.name) as Float32Array, { ...m, scaling: g.coef, loraA: g.loraA, loraB: g.loraB }).w
      const bound = 2 ** -24 * maxAbs(s) + 16 * 2 ** -53 * (maxAbs(w) + maxAbs(s))
      let err = 0
      for (let x = 0; x < w.length; x++) err = Math.max(err, Math.abs(w[x] - ref[x]))
      expect(err, m.name).toBeLessThanOrEqual(bound)
    }
    await rm(dir, { recursive: true, force: true })
  })
})
