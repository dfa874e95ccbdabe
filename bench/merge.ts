/**
 * Merge benchmark: throughput of the deterministic merge kernel, its determinism across
 * worker counts and backends, and the aggregation error of every strategy.
 *
 *   npm run bench:merge              human-readable report
 *   npm run bench:merge -- --json    the same as one JSON object on stdout
 *   npm run bench:merge -- --quick   fewer repetitions, v_proj-only strategy errors
 *
 * Flops are counted as 2 * out * in * R per module (one multiply and one add per term of
 * the stacked product B_stack @ A_stack, R = sum_k r_k); packing, the final add into W
 * and the copies are not counted but are inside the timed region (each timing is the
 * end-to-end mergeIntoWeights call a peer makes).
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { availableParallelism, loadavg } from 'node:os'
import {
  type ClientUpdate,
  type LowRankTerm,
  type RoundAggregate,
  closeDefaultMergePools,
  denseDelta,
  feditStrategy,
  ffaStrategy,
  flexloraStrategy,
  floraStrategy,
  mergeFlops,
  mergeIntoWeights,
  mergeIntoWeightsSync,
  stateHash,
  wasmSimdAvailable,
  zeroPaddingStrategy,
} from '../src/aggregation/index.js'
import type { LoraModule } from '../src/lora/types.js'

const args = new Set(process.argv.slice(2))
const JSON_OUT = args.has('--json')
const QUICK = args.has('--quick')
const log = (...xs: unknown[]): void => {
  if (!JSON_OUT) console.log(...xs)
}

/** xorshift32 uniform in [-1, 1): fast, seeded, good enough for synthetic tensors. */
function filler(seed: number): (a: Float32Array, scale: number) => Float32Array {
  let x = seed >>> 0 || 1
  return (a, scale) => {
    for (let i = 0; i < a.length; i++) {
      x ^= x << 13
      x >>>= 0
      x ^= x >>> 17
      x ^= x << 5
      x >>>= 0
      a[i] = (x / 2147483648 - 1) * scale
    }
    return a
  }
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    return m?.[1]?.trim() ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

const HETERO_RANKS = [64, 32, 16, 16, 8, 8, 4, 4, 4, 4]
const SAMPLES = [1200, 800, 950, 400, 1500, 300, 700, 1000, 650, 500]
const HIDDEN = 2048
const KV = 256
const LAYERS = 22

interface Shape {
  readonly name: string
  readonly outFeatures: number
  readonly inFeatures: number
}

function randomTerms(fill: (a: Float32Array, s: number) => Float32Array, shape: Shape, ranks: readonly number[]): LowRankTerm[] {
  let total = 0
  for (const n of SAMPLES) total += n
  return ranks.map((rank, k) => ({
    coef: (SAMPLES[k] / total) * 2, // p_k * s_k with alpha = 2r (s = 2), as in the paper's code
    rank,
    loraA: fill(new Float32Array(rank * shape.inFeatures), 1 / Math.sqrt(shape.inFeatures)),
    loraB: fill(new Float32Array(shape.outFeatures * rank), 0.01),
  }))
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

interface ThroughputRow {
  case: string
  workers: number | 'calling thread'
  modules: number
  gflop: number
  bestSeconds: number
  medianSeconds: number
  gflops: number
}

async function timeRound(
  label: string,
  modules: { shape: Shape; w: Float32Array; terms: LowRankTerm[] }[],
  workers: number,
  reps: number,
): Promise<ThroughputRow> {
  let flops = 0
  for (const m of modules) flops += mergeFlops(m.shape, m.terms)
  const times: number[] = []
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now()
    for (const m of modules) await mergeIntoWeights(m.w, m.shape, m.terms, { workers })
    times.push((performance.now() - t0) / 1000)
  }
  const best = Math.min(...times)
  return {
    case: label,
    workers: workers === 0 ? 'calling thread' : workers,
    modules: modules.length,
    gflop: flops / 1e9,
    bestSeconds: best,
    medianSeconds: median(times),
    gflops: flops / best / 1e9,
  }
}

// ---------------------------------------------------------------- strategy errors

function frob(x: Float64Array): number {
  let s = 0
  for (const v of x) s += v * v
  return Math.sqrt(s)
}

function relErr(x: Float64Array, ref: Float64Array): number {
  let s = 0
  for (let i = 0; i < x.length; i++) s += (x[i] - ref[i]) ** 2
  return Math.sqrt(s) / frob(ref)
}

function moduleOf(u: ClientUpdate, name: string): LoraModule {
  const m = u.adapter.modules.find((x) => x.name === name)
  if (m === undefined) throw new Error(`missing module ${name}`)
  return m
}

/** Independent float64 reference: sum_k (n_k / N) s_k B_k A_k, one term at a time. */
function exactDelta(updates: readonly ClientUpdate[], shape: Shape): Float64Array {
  let total = 0
  for (const u of updates) total += u.samples
  const out = new Float64Array(shape.outFeatures * shape.inFeatures)
  for (const u of updates) {
    const m = moduleOf(u, shape.name)
    const d = denseDelta(shape, [{ coef: (u.samples / total) * m.scaling, rank: m.rank, loraA: m.loraA, loraB: m.loraB }])
    for (let i = 0; i < d.length; i++) out[i] += d[i]
  }
  return out
}

function aggregateDense(agg: RoundAggregate, shape: Shape): Float64Array {
  const d = denseDelta(shape, agg.merge.get(shape.name) ?? [])
  const g = denseDelta(shape, agg.global.get(shape.name) ?? [])
  for (let i = 0; i < d.length; i++) d[i] += g[i]
  return d
}

type Setting = 'heterogeneous' | 'homogeneous-r16-independent' | 'homogeneous-r16-drift'

function makeUpdates(setting: Setting, shapes: readonly Shape[], seed: number): ClientUpdate[] {
  const fill = filler(seed)
  const ranks = setting === 'heterogeneous' ? HETERO_RANKS : HETERO_RANKS.map(() => 16)
  // drift: every client started from one shared adapter (A0, B0) and moved by 10%
  const shared = shapes.map((s) => ({
    a: fill(new Float32Array(16 * s.inFeatures), 1 / Math.sqrt(s.inFeatures)),
    b: fill(new Float32Array(s.outFeatures * 16), 0.01),
  }))
  return ranks.map((rank, k) => ({
    id: `peer-${String(k).padStart(2, '0')}`,
    samples: SAMPLES[k],
    adapter: {
      modules: shapes.map((s, i): LoraModule => {
        let a = fill(new Float32Array(rank * s.inFeatures), 1 / Math.sqrt(s.inFeatures))
        let b = fill(new Float32Array(s.outFeatures * rank), 0.01)
        if (setting === 'homogeneous-r16-drift') {
          a = a.map((v, x) => shared[i].a[x] + 0.1 * v)
          b = b.map((v, x) => shared[i].b[x] + 0.1 * v)
        }
        return { name: s.name, rank, inFeatures: s.inFeatures, outFeatures: s.outFeatures, alpha: 2 * rank, scaling: 2, loraA: a, loraB: b }
      }),
    },
  }))
}

/** Same updates with every client's A replaced by client 0's (FFA-LoRA's shared frozen A). */
function withSharedA(updates: readonly ClientUpdate[]): ClientUpdate[] {
  const a0 = updates[0].adapter.modules.map((m) => m.loraA)
  return updates.map((u) => ({ ...u, adapter: { modules: u.adapter.modules.map((m, i) => ({ ...m, loraA: a0[i] })) } }))
}

interface ErrorRow {
  setting: Setting
  module: string
  strategy: string
  what: string
  relativeError: number
  seconds: number
}

function strategyErrors(setting: Setting, shapes: readonly Shape[]): ErrorRow[] {
  const rows: ErrorRow[] = []
  const updates = makeUpdates(setting, shapes, 0xf10a + shapes.length)
  const heterogeneous = setting === 'heterogeneous'
  const strategies = heterogeneous ? [floraStrategy, zeroPaddingStrategy, flexloraStrategy] : [floraStrategy, feditStrategy, zeroPaddingStrategy, flexloraStrategy, ffaStrategy]
  for (const shape of shapes) {
    const exact = exactDelta(updates, shape)
    const exactFfa = heterogeneous ? exact : exactDelta(withSharedA(updates), shape)
    for (const s of strategies) {
      const input = s === ffaStrategy ? withSharedA(updates) : updates
      const ref = s === ffaStrategy ? exactFfa : exact
      const t0 = performance.now()
      const agg = s.aggregate(input)
      const seconds = (performance.now() - t0) / 1000
      rows.push({ setting, module: shape.name, strategy: s.name, what: 'aggregate (merge + global) vs exact', relativeError: relErr(aggregateDense(agg, shape), ref), seconds })
      if (s === flexloraStrategy) {
        for (const r of heterogeneous ? [64, 16, 4] : [16]) {
          const t1 = performance.now()
          const next = agg.nextAdapter({ rank: r, alpha: 2 * r, scaling: 2 })
          const svdSeconds = (performance.now() - t1) / 1000
          const m = next?.modules.find((x) => x.name === shape.name)
          if (m === undefined) throw new Error('flexlora returned no adapter')
          const approx = denseDelta(shape, [{ coef: m.scaling, rank: m.rank, loraA: m.loraA, loraB: m.loraB }])
          rows.push({ setting, module: shape.name, strategy: s.name, what: `redistributed to a rank-${r} client (truncated SVD)`, relativeError: relErr(approx, ref), seconds: svdSeconds })
        }
      }
      if (s === floraStrategy) {
        // what a peer stores: fl32(W0 + dW) with base weights of TinyLlama's scale (|W0| ~ 0.05)
        const w0 = filler(7)(new Float32Array(shape.outFeatures * shape.inFeatures), 0.05)
        const w = w0.slice()
        mergeIntoWeightsSync(w, shape, agg.merge.get(shape.name) ?? [])
        const stored = new Float64Array(w.length)
        for (let i = 0; i < w.length; i++) stored[i] = w[i] - w0[i]
        rows.push({ setting, module: shape.name, strategy: s.name, what: 'merged into float32 W (|W0| ~ 0.05), stored delta vs exact', relativeError: relErr(stored, ref), seconds: 0 })
      }
    }
  }
  return rows
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const machine = {
    nproc: availableParallelism(),
    cpu: cpuModel(),
    node: process.version,
    wasmSimd: wasmSimdAvailable(),
    loadavgStart: loadavg().map((x) => Number(x.toFixed(2))),
  }
  log(`machine: ${machine.nproc} cores, ${machine.cpu}, node ${machine.node}, wasm SIMD ${machine.wasmSimd}, load ${machine.loadavgStart.join(' ')}`)
  const reps = QUICK ? 2 : 3
  const workerCounts = [0, 1, 2]

  // (a) small shape: one 256 x 256 module, heterogeneous ranks (R = 160), 40 merges per timing
  const fillA = filler(1)
  const small: Shape = { name: 'small', outFeatures: 256, inFeatures: 256 }
  const smallMods = Array.from({ length: 40 }, () => ({ shape: small, w: fillA(new Float32Array(256 * 256), 0.05), terms: randomTerms(fillA, small, HETERO_RANKS) }))
  // (b) TinyLlama-1.1B: q_proj [2048, 2048] and v_proj [256, 2048] in 22 layers, R = 160
  const fillB = filler(2)
  const tl: { shape: Shape; w: Float32Array; terms: LowRankTerm[] }[] = []
  for (let l = 0; l < LAYERS; l++) {
    for (const [proj, out] of [['q_proj', HIDDEN], ['v_proj', KV]] as const) {
      const shape: Shape = { name: `layers.${l}.self_attn.${proj}`, outFeatures: out, inFeatures: HIDDEN }
      tl.push({ shape, w: fillB(new Float32Array(out * HIDDEN), 0.05), terms: randomTerms(fillB, shape, HETERO_RANKS) })
    }
  }

  // determinism first (from the initial weights): hash of all 44 merged tensors per worker count
  const determinism: { workers: number | 'calling thread'; backend: string; layers: number; stateHash: string }[] = []
  const hashRound = async (workers: number, backend: 'auto' | 'js', layers: number): Promise<string> => {
    const h = createHash('sha256')
    for (const m of tl.slice(0, 2 * layers)) {
      const w = m.w.slice()
      await mergeIntoWeights(w, m.shape, m.terms, { workers, backend })
      h.update(stateHash([{ name: m.shape.name, shape: [m.shape.outFeatures, m.shape.inFeatures], data: w }]))
    }
    return h.digest('hex')
  }
  for (const workers of [0, 1, 2, 4]) {
    determinism.push({ workers: workers === 0 ? 'calling thread' : workers, backend: 'wasm', layers: LAYERS, stateHash: await hashRound(workers, 'auto', LAYERS) })
  }
  const layer0Wasm = await hashRound(2, 'auto', 1)
  const layer0Js = await hashRound(2, 'js', 1)
  const allEqual = new Set(determinism.map((d) => d.stateHash)).size === 1 && layer0Wasm === layer0Js
  log(`determinism: 22-layer state hash ${determinism[0].stateHash.slice(0, 16)}... equal for ${determinism.map((d) => d.workers).join(', ')} workers: ${new Set(determinism.map((d) => d.stateHash)).size === 1}; layer 0 wasm == scalar js: ${layer0Wasm === layer0Js}`)

  const throughput: ThroughputRow[] = []
  for (const workers of workerCounts) {
    await timeRound('warm-up', smallMods.slice(0, 4), workers, 1)
    const a = await timeRound('small 256x256, R=160, 40 merges', smallMods, workers, reps)
    const b = await timeRound('TinyLlama-1.1B q_proj+v_proj x 22 layers, R=160', tl, workers, reps)
    throughput.push(a, b)
    for (const row of [a, b]) {
      log(
        `${row.case.padEnd(50)} workers=${String(row.workers).padEnd(14)} ${row.gflop.toFixed(2)} GFLOP  best ${row.bestSeconds.toFixed(3)} s  median ${row.medianSeconds.toFixed(3)} s  ${row.gflops.toFixed(2)} GFLOP/s`,
      )
    }
  }

  const shapes0: Shape[] = [
    { name: 'layers.0.self_attn.q_proj', outFeatures: HIDDEN, inFeatures: HIDDEN },
    { name: 'layers.0.self_attn.v_proj', outFeatures: KV, inFeatures: HIDDEN },
  ]
  const errShapes = QUICK ? shapes0.slice(1) : shapes0
  const errors: ErrorRow[] = []
  for (const setting of ['heterogeneous', 'homogeneous-r16-independent', 'homogeneous-r16-drift'] as const) {
    errors.push(...strategyErrors(setting, errShapes))
  }
  for (const e of errors) {
    log(`${e.setting.padEnd(28)} ${e.module.padEnd(26)} ${e.strategy.padEnd(12)} ${e.relativeError.toExponential(3).padStart(10)}  ${e.what}${e.seconds > 0.05 ? ` (${e.seconds.toFixed(2)} s)` : ''}`)
  }

  const result = {
    machine: { ...machine, loadavgEnd: loadavg().map((x) => Number(x.toFixed(2))) },
    flopsCounted: '2 * out * in * R per module (stacked product), end-to-end mergeIntoWeights time',
    throughput,
    determinism: { runs: determinism, layer0WasmHash: layer0Wasm, layer0ScalarJsHash: layer0Js, allEqual },
    strategyErrors: errors,
  }
  if (JSON_OUT) console.log(JSON.stringify(result, null, 2))
  await closeDefaultMergePools()
  if (!allEqual) process.exitCode = 1
}

await main()
