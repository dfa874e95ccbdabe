/**
 * The local training step is pluggable: the round engine only needs "given the agreed
 * weights, produce my adapter for this round". The real tfjs trainer (src/model) and the
 * synthetic one below both fit this seam.
 */
import { createPrng } from '../lora/prng.js'
import { initAdapter } from '../lora/init.js'
import type { AdapterSet, LoraModule, ModuleShape } from '../lora/types.js'

export interface TrainContext {
  readonly round: number
  readonly rank: number
  readonly alpha: number
  readonly rslora: boolean
  /** Per peer and round (derived from the swarm seed and the peer id), for reproducible runs. */
  readonly seed: number
  /** The swarm config's seed (shared by all peers). */
  readonly swarmSeed: number
  /** Aborted when the round closes without us or the peer stops: stop training and reject. */
  readonly signal: AbortSignal
  /** The agreed weights of the target modules for this round (read only: never mutate). */
  readonly weights: ReadonlyMap<string, Float32Array>
  readonly shapes: readonly ModuleShape[]
  /** Adapter to start from (strategies that keep a global adapter); undefined: fresh LoRA. */
  readonly init?: AdapterSet
}

export interface TrainResult {
  readonly adapter: AdapterSet
  /** Number of local training examples n_k (> 0): the peer's weight p_k = n_k / sum n. */
  readonly samples: number
  readonly metrics?: Readonly<Record<string, number>>
}

export type Trainer = (ctx: TrainContext) => Promise<TrainResult>

export interface SyntheticTrainerOptions {
  /** Reported sample count n_k (default 100). */
  samples?: number
  /** Seed of this peer's private "data": its own noisy view of the swarm target (default 0). */
  dataSeed?: number
  /** Scale of the peer's deviation from the swarm target (non-IID-ness, default 0.5). */
  noise?: number
  /** Local gradient steps on (A, B) per round (default 5). */
  steps?: number
  /** Learning rate (default 0.5). */
  lr?: number
  /** Simulated extra training time; resolves early if the signal aborts. */
  delayMs?: number
  /**
   * Simulated slow *synchronous* training step: every call busy-blocks its thread (a spin
   * loop, not a timer) for this many milliseconds, as a real trainer's compute does. The
   * abort signal is checked before and after the spin, not during it.
   */
  busyMs?: number
}

/**
 * The synthetic task: a least-squares problem on the target weights themselves. The swarm
 * shares a target T (drawn from the swarm seed); peer k holds its own noisy target
 * T_k = T + noise * N_k (its private, non-IID "data"). Local training runs plain LoRA
 * gradient descent on
 *   f_k(A, B) = 1/2 * sum_modules || W + s B A - T_k ||^2
 *   grad_B = s R A^T,  grad_A = s B^T R,  R = W + s B A - T_k
 * from a fresh PEFT init (A random, B zero) or the strategy's warm start. Merging the
 * peers' adapters moves W towards the mean of the T_k, so the held-out loss
 * mean((W - T)^2) (syntheticEvalLoss) falls round after round: a real, if tiny, federated
 * fine-tuning problem that needs no tfjs.
 */
export function syntheticTrainer(options: SyntheticTrainerOptions = {}): Trainer {
  const steps = options.steps ?? 5
  const lr = options.lr ?? 0.5
  return async (ctx) => {
    if (options.delayMs !== undefined && options.delayMs > 0) await abortableDelay(options.delayMs, ctx.signal)
    ctx.signal.throwIfAborted()
    if (options.busyMs !== undefined && options.busyMs > 0) {
      busyWait(options.busyMs)
      ctx.signal.throwIfAborted()
    }
    const base = ctx.init ?? initAdapter({ shapes: ctx.shapes, rank: ctx.rank, alpha: ctx.alpha, seed: ctx.seed, rslora: ctx.rslora })
    const targets = peerTargets(ctx.shapes, ctx.swarmSeed, options.dataSeed ?? 0, options.noise ?? 0.5)
    let loss = 0
    let count = 0
    const modules: LoraModule[] = []
    for (const m of base.modules) {
      const w = ctx.weights.get(m.name)
      const t = targets.get(m.name)
      if (w == null || t == null) throw new Error(`synthetic trainer: no weight for ${m.name}`)
      const loraA = Float64Array.from(m.loraA)
      const loraB = Float64Array.from(m.loraB)
      const { rank: r, inFeatures: nIn, outFeatures: nOut, scaling: s } = m
      const res = new Float64Array(nOut * nIn)
      const gA = new Float64Array(r * nIn)
      const gB = new Float64Array(nOut * r)
      for (let step = 0; step <= steps; step++) {
        // R = W + s B A - T_k
        let sq = 0
        for (let i = 0; i < nOut; i++) {
          for (let j = 0; j < nIn; j++) {
            let ba = 0
            for (let q = 0; q < r; q++) ba += loraB[i * r + q] * loraA[q * nIn + j]
            const v = w[i * nIn + j] + s * ba - t[i * nIn + j]
            res[i * nIn + j] = v
            sq += v * v
          }
        }
        if (step === steps) {
          loss += sq
          count += res.length
          break
        }
        ctx.signal.throwIfAborted()
        gA.fill(0)
        gB.fill(0)
        for (let i = 0; i < nOut; i++) {
          for (let j = 0; j < nIn; j++) {
            const v = s * res[i * nIn + j]
            if (v === 0) continue
            for (let q = 0; q < r; q++) {
              gB[i * r + q] += v * loraA[q * nIn + j]
              gA[q * nIn + j] += loraB[i * r + q] * v
            }
          }
        }
        for (let x = 0; x < gA.length; x++) loraA[x] -= lr * gA[x]
        for (let x = 0; x < gB.length; x++) loraB[x] -= lr * gB[x]
      }
      modules.push({ ...m, loraA: Float32Array.from(loraA), loraB: Float32Array.from(loraB) })
      await Promise.resolve()
    }
    return {
      adapter: { modules },
      samples: options.samples ?? 100,
      metrics: { loss: count > 0 ? loss / count : 0 },
    }
  }
}

const targetCache = new Map<string, Map<string, Float32Array>>()

/** The swarm target T, or a peer's noisy view T_k = T + noise * N_k (cached). */
function peerTargets(shapes: readonly ModuleShape[], swarmSeed: number, dataSeed: number | null, noise: number): Map<string, Float32Array> {
  const key = `${swarmSeed}:${dataSeed}:${noise}:${shapes.map((s) => `${s.name}/${s.outFeatures}x${s.inFeatures}`).join(',')}`
  const hit = targetCache.get(key)
  if (hit != null) return hit
  const root = createPrng(swarmSeed).fork('synthetic.target')
  const peer = dataSeed == null ? undefined : createPrng(dataSeed).fork('synthetic.data')
  const out = new Map<string, Float32Array>()
  for (const sh of shapes) {
    const t = new Float32Array(sh.inFeatures * sh.outFeatures)
    root.fork(sh.name).fillUniform(t, -0.1, 0.1)
    if (peer != null && noise > 0) {
      const n = new Float32Array(t.length)
      peer.fork(sh.name).fillUniform(n, -0.1, 0.1)
      for (let i = 0; i < t.length; i++) t[i] += noise * n[i]
    }
    out.set(sh.name, t)
  }
  if (targetCache.size > 64) targetCache.clear()
  targetCache.set(key, out)
  return out
}

/** Held-out loss of the synthetic task: mean squared distance of the weights to the swarm target T. */
export function syntheticEvalLoss(weights: ReadonlyMap<string, Float32Array>, shapes: readonly ModuleShape[], swarmSeed: number): number {
  const targets = peerTargets(shapes, swarmSeed, null, 0)
  let sq = 0
  let n = 0
  for (const sh of shapes) {
    const w = weights.get(sh.name)
    const t = targets.get(sh.name)
    if (w == null || t == null) continue
    for (let i = 0; i < w.length; i++) {
      const d = w[i] - t[i]
      sq += d * d
    }
    n += w.length
  }
  return n > 0 ? sq / n : 0
}

/** Blocks the calling thread for `ms` milliseconds (on purpose: simulates synchronous compute). */
function busyWait(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end) {
    // spin
  }
}

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason)
      return
    }
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = (): void => {
      clearTimeout(t)
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
