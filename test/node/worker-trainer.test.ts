/**
 * setupPeerInWorker (P8, responsiveness): the training backend runs in a worker thread and
 * gives the same results as in-thread; aborts, errors and crashes come back as rejections;
 * and, the point of it all, a trainer that blocks its thread for 1.5 s leaves the main
 * thread's event loop free, where the same trainer in-thread freezes it.
 */
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { AdapterSet } from '../../src/lora/types.js'
import { saveCheckpoint } from '../../src/model/checkpoint.js'
import { llamaConfig } from '../../src/model/config.js'
import { randomLlamaWeights } from '../../src/model/llama.js'
import { SwarmConfigError } from '../../src/node/config.js'
import { setupPeer, type PeerSetup, type SetupOptions, type TrainProgress } from '../../src/node/setup.js'
import type { TrainContext } from '../../src/node/trainer.js'
import { setupPeerInWorker } from '../../src/node/worker-trainer.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const TEST_BACKEND = new URL('../fixtures/worker-test-backend.ts', import.meta.url)

const open: PeerSetup[] = []
async function inWorker(options: SetupOptions, imports: URL[] = []): Promise<PeerSetup> {
  const s = await setupPeerInWorker(options, { imports })
  open.push(s)
  return s
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close?.()))
})

function ctxFor(setup: PeerSetup, round: number, o: { rank: number; alpha: number; signal?: AbortSignal; init?: AdapterSet; weights?: ReadonlyMap<string, Float32Array> }): TrainContext {
  return {
    round,
    rank: o.rank,
    alpha: o.alpha,
    rslora: setup.config.rslora,
    seed: 1000 + round,
    swarmSeed: setup.config.seed,
    signal: o.signal ?? new AbortController().signal,
    weights: o.weights ?? setup.weights,
    shapes: setup.config.targets,
    init: o.init,
  }
}

function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length))
}

function expectSameAdapter(a: AdapterSet, b: AdapterSet): void {
  expect(a.modules.map((m) => m.name)).toEqual(b.modules.map((m) => m.name))
  a.modules.forEach((m, i) => {
    const n = b.modules[i]
    expect(m.loraA).toBeInstanceOf(Float32Array)
    expect(m.loraB).toBeInstanceOf(Float32Array)
    expect({ ...m, loraA: bits(m.loraA), loraB: bits(m.loraB) }).toEqual({ ...n, loraA: bits(n.loraA), loraB: bits(n.loraB) })
  })
}

function expectSameWeights(a: ReadonlyMap<string, Float32Array>, b: ReadonlyMap<string, Float32Array>): void {
  expect([...a.keys()]).toEqual([...b.keys()])
  for (const [k, v] of a) {
    expect(v).toBeInstanceOf(Float32Array)
    expect(bits(v)).toEqual(bits(b.get(k) as Float32Array))
  }
}

/** Records the largest gap between the ticks of a 50 ms interval on this thread. */
function loopMonitor(): { stop(): Promise<{ maxGapMs: number; ticks: number }> } {
  let last = performance.now()
  let maxGapMs = 0
  let ticks = 0
  let onTick: (() => void) | undefined
  const timer = setInterval(() => {
    const now = performance.now()
    maxGapMs = Math.max(maxGapMs, now - last)
    last = now
    ticks++
    onTick?.()
  }, 50)
  return {
    // Resolves on the next tick, so that a gap still open when the work ends is counted.
    stop: () =>
      new Promise((resolve) => {
        onTick = () => {
          clearInterval(timer)
          resolve({ maxGapMs, ticks })
        }
      }),
  }
}

const SYNTH: SetupOptions = { trainer: 'synthetic', rank: 4, alpha: 8, data: 'synthetic:3', localSteps: 4, layers: 2, hidden: 16, seed: 11 }

describe('setupPeerInWorker: the synthetic backend', () => {
  it('returns the same config, weights, adapters (bit for bit) and eval losses as setupPeer', async () => {
    const here = await setupPeer(SYNTH)
    const there = await inWorker(SYNTH)
    expect(there.config).toEqual(here.config)
    expect(there.samples).toBe(here.samples)
    expect(there.description).toBe(here.description)
    expectSameWeights(there.weights, here.weights)

    // Round 1 from a fresh LoRA, round 2 warm-started from round 1's adapter.
    const r1Here = await here.trainer(ctxFor(here, 1, { rank: 4, alpha: 8 }))
    const r1There = await there.trainer(ctxFor(there, 1, { rank: 4, alpha: 8 }))
    expectSameAdapter(r1There.adapter, r1Here.adapter)
    expect(r1There.samples).toBe(r1Here.samples)
    expect(r1There.metrics).toEqual(r1Here.metrics)
    const r2Here = await here.trainer(ctxFor(here, 2, { rank: 4, alpha: 8, init: r1Here.adapter }))
    const r2There = await there.trainer(ctxFor(there, 2, { rank: 4, alpha: 8, init: r1Here.adapter }))
    expectSameAdapter(r2There.adapter, r2Here.adapter)
    expect(r2There.metrics).toEqual(r2Here.metrics)

    // Other weights than genesis: the trainer and evaluate see what the caller passes.
    const moved = new Map([...here.weights].map(([k, v]) => [k, v.map((x) => x * 0.5)]))
    const r3Here = await here.trainer(ctxFor(here, 3, { rank: 4, alpha: 8, weights: moved }))
    const r3There = await there.trainer(ctxFor(there, 3, { rank: 4, alpha: 8, weights: moved }))
    expectSameAdapter(r3There.adapter, r3Here.adapter)
    expect(await there.evaluate(there.weights)).toEqual(await here.evaluate(here.weights))
    expect(await there.evaluate(moved)).toEqual(await here.evaluate(moved))
    expect(await there.evaluate(moved)).not.toEqual(await there.evaluate(there.weights))

    // The caller's arrays are copied, not transferred (still usable, unchanged).
    expect(moved.get(here.config.targets[0].name)?.length).toBeGreaterThan(0)
    expect(r1Here.adapter.modules[0].loraA.length).toBeGreaterThan(0)
  })

  it('runs concurrent calls one at a time in call order, each with its own result', async () => {
    const here = await setupPeer(SYNTH)
    const there = await inWorker(SYNTH)
    const rounds = [1, 2, 3, 4]
    const [results, losses] = await Promise.all([
      Promise.all(rounds.map((r) => there.trainer(ctxFor(there, r, { rank: 4, alpha: 8 })))),
      Promise.all([there.evaluate(there.weights), there.evaluate(there.weights)]),
    ])
    for (const [i, r] of rounds.entries()) expectSameAdapter(results[i].adapter, (await here.trainer(ctxFor(here, r, { rank: 4, alpha: 8 }))).adapter)
    expect(losses[0]).toEqual(await here.evaluate(here.weights))
    expect(losses[1]).toEqual(losses[0])
  })

  it('P8: a trainer that blocks its thread for 1.5 s leaves the main event loop free in the worker, and freezes it in-thread', async () => {
    const busy = { ...SYNTH, trainBusyMs: 1500 }
    const there = await inWorker(busy)
    const mon = loopMonitor()
    const t0 = performance.now()
    const result = await there.trainer(ctxFor(there, 1, { rank: 4, alpha: 8 }))
    const workerMs = performance.now() - t0
    const worker = await mon.stop()
    expect(result.adapter.modules.length).toBeGreaterThan(0)
    expect(workerMs).toBeGreaterThanOrEqual(1500) // it did block (its own thread) that long
    expect(worker.maxGapMs).toBeLessThan(500)
    expect(worker.ticks).toBeGreaterThanOrEqual(15)

    const here = await setupPeer(busy)
    const mon2 = loopMonitor()
    await here.trainer(ctxFor(here, 1, { rank: 4, alpha: 8 }))
    const inThread = await mon2.stop()
    expect(inThread.maxGapMs).toBeGreaterThan(1000)
    console.log(
      `P8: 1.5 s busy training step: max event-loop gap ${worker.maxGapMs.toFixed(0)} ms in a worker (${worker.ticks} ticks of 50 ms), ` +
        `${inThread.maxGapMs.toFixed(0)} ms in-thread`,
    )
  })

  it('an abort rejects at once with the signal reason; the worker finishes its step and serves the next call', async () => {
    const there = await inWorker({ ...SYNTH, trainBusyMs: 1000 })
    const ac = new AbortController()
    const t0 = performance.now()
    const training = there.trainer(ctxFor(there, 1, { rank: 4, alpha: 8, signal: ac.signal }))
    // A call aborted while queued behind it is never sent.
    const ac2 = new AbortController()
    const queued = there.trainer(ctxFor(there, 2, { rank: 4, alpha: 8, signal: ac2.signal }))
    const reason = new Error('round 1 closed')
    setTimeout(() => {
      ac2.abort(new Error('queued call aborted'))
      ac.abort(reason)
    }, 300)
    await expect(training).rejects.toBe(reason)
    const abortedAfter = performance.now() - t0
    await expect(queued).rejects.toThrow('queued call aborted')
    expect(abortedAfter).toBeLessThan(900) // did not wait for the 1 s busy step
    // Already aborted: rejects without a round trip.
    await expect(there.trainer(ctxFor(there, 3, { rank: 4, alpha: 8, signal: ac.signal }))).rejects.toBe(reason)
    // The worker is still fine; the next call runs after the aborted one has finished.
    const next = await there.trainer(ctxFor(there, 4, { rank: 4, alpha: 8 }))
    expect(next.adapter.modules.length).toBeGreaterThan(0)
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2000) // the aborted step, then this one
  })
})

describe('setupPeerInWorker: errors, aborts and crashes', () => {
  const TEST: SetupOptions = { trainer: 'worker-test', rank: 2, alpha: 4, localSteps: 3 }

  it('rejects setup with the worker-side error (an unknown backend stays a SwarmConfigError)', async () => {
    const err = await setupPeerInWorker({ trainer: 'no-such-backend', rank: 2, alpha: 4 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SwarmConfigError)
    expect((err as Error).message).toMatch(/unknown trainer backend 'no-such-backend'; available: .*synthetic/)
    await expect(setupPeerInWorker({ ...TEST, data: 'fail-setup' }, { imports: [TEST_BACKEND] })).rejects.toThrow('setup failed on purpose')
  })

  it('rejects a call with the error the trainer threw; the worker serves the next call', async () => {
    const there = await inWorker(TEST, [TEST_BACKEND])
    expect(there.description).toMatch(/^worker-test backend/)
    const err = (await there.trainer(ctxFor(there, 1, { rank: 2, alpha: 4 })).catch((e: unknown) => e)) as Error
    expect(err).toBeInstanceOf(Error)
    expect(err.message).toBe('trainer failed on purpose (round 1)')
    expect(err.stack).toMatch(/worker-test-backend\.ts/) // the worker's stack
    const ok = await there.trainer(ctxFor(there, 5, { rank: 2, alpha: 4 }))
    expect(ok.samples).toBe(10)
  })

  it('forwards onTrainStep progress to the main thread, for the call in progress only', async () => {
    const steps: TrainProgress[] = []
    const there = await inWorker({ ...TEST, onTrainStep: (p) => steps.push(p) }, [TEST_BACKEND])
    await there.trainer(ctxFor(there, 7, { rank: 2, alpha: 4 }))
    expect(steps).toEqual([1, 2, 3].map((step) => ({ round: 7, step, steps: 3, loss: 1 / step, elapsedMs: step })))
  })

  it("aborts the worker's own AbortSignal when the caller's aborts", async () => {
    const steps: TrainProgress[] = []
    const ac = new AbortController()
    const there = await inWorker({ ...TEST, onTrainStep: (p) => {
      steps.push(p)
      ac.abort(new Error('stop now')) // after the trainer's first step
    } }, [TEST_BACKEND])
    expect((await there.evaluate(there.weights)).loss).toBe(0) // no aborts seen yet
    await expect(there.trainer(ctxFor(there, 2, { rank: 2, alpha: 4, signal: ac.signal }))).rejects.toThrow('stop now')
    expect(steps).toHaveLength(1)
    // Queued behind the aborted call: runs once the worker's trainer has seen the abort.
    expect((await there.evaluate(there.weights)).loss).toBe(1)
  })

  it('a training backend that died (a wasm abort) rejects its call, and a fresh worker serves the next rounds', async () => {
    const there = await inWorker(TEST, [TEST_BACKEND])
    await there.trainer(ctxFor(there, 5, { rank: 2, alpha: 4 }))
    expect((await there.evaluate(there.weights)).accuracy).toBe(1)
    await expect(there.trainer(ctxFor(there, 6, { rank: 2, alpha: 4 }))).rejects.toThrow('backend died on purpose (round 6)')
    const ok = await there.trainer(ctxFor(there, 7, { rank: 2, alpha: 4 }))
    expect(ok.samples).toBe(10)
    // A new worker: its trainer has completed round 7 only (the old one would count 2).
    expect((await there.evaluate(there.weights)).accuracy).toBe(1)
  })

  it('a crashing worker rejects the pending call, and every later one, with a clear error', async () => {
    const there = await inWorker(TEST, [TEST_BACKEND])
    const crashing = there.trainer(ctxFor(there, 3, { rank: 2, alpha: 4 }))
    const queued = there.evaluate(there.weights)
    await expect(crashing).rejects.toThrow('training worker crashed: the worker blew up')
    await expect(queued).rejects.toThrow('training worker crashed: the worker blew up')
    await expect(there.trainer(ctxFor(there, 5, { rank: 2, alpha: 4 }))).rejects.toThrow(/training worker crashed/)
  })

  it('a worker that exits rejects the pending call', async () => {
    const there = await inWorker(TEST, [TEST_BACKEND])
    await expect(there.trainer(ctxFor(there, 4, { rank: 2, alpha: 4 }))).rejects.toThrow('training worker exited unexpectedly (exit code 3)')
    await expect(there.evaluate(there.weights)).rejects.toThrow(/exited unexpectedly/)
  })

  it('close() rejects the pending call and later ones', async () => {
    const there = await setupPeerInWorker({ ...SYNTH, trainBusyMs: 500 })
    const pending = there.trainer(ctxFor(there, 1, { rank: 4, alpha: 8 })).catch((e: unknown) => e)
    await there.close?.()
    expect(await pending).toMatchObject({ message: 'training worker closed' })
    await expect(there.evaluate(there.weights)).rejects.toThrow('training worker closed')
    await there.close?.() // idempotent
  })
})

describe('setupPeerInWorker: the model backend', () => {
  let dir: string
  let model: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flora-worker-trainer-'))
    model = join(dir, 'model')
    const config = llamaConfig({ vocabSize: 4096, hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositionEmbeddings: 64, tieWordEmbeddings: true })
    await mkdir(model, { recursive: true })
    await saveCheckpoint(model, config, randomLlamaWeights(config, 'worker-trainer-test', 0.05))
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(ROOT, 'models', 'flora-tiny', f), join(model, f))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('trains and evaluates a tiny checkpoint in the worker exactly as in-thread, with step progress', async () => {
    const steps: TrainProgress[] = []
    const opts: SetupOptions = { trainer: 'model', model, rank: 2, alpha: 4, data: '0/2', localSteps: 2, batchSize: 2, seqLen: 32, evalExamples: 4, trainExamples: 40, lr: 1e-2, backend: 'wasm' }
    const there = await inWorker({ ...opts, onTrainStep: (p) => steps.push(p) })
    const here = await setupPeer(opts)
    expect(there.config).toEqual(here.config)
    expect(there.samples).toBe(here.samples)
    expect(there.description).toBe(here.description)
    expectSameWeights(there.weights, here.weights)

    const a = await there.trainer(ctxFor(there, 1, { rank: 2, alpha: 4 }))
    const b = await here.trainer(ctxFor(here, 1, { rank: 2, alpha: 4 }))
    expect(steps.map((p) => [p.round, p.step, p.steps])).toEqual([[1, 1, 2], [1, 2, 2]])
    expectSameAdapter(a.adapter, b.adapter)
    expect(a.metrics?.loss).toBe(b.metrics?.loss)
    const l0 = await there.evaluate(there.weights)
    expect(Number.isFinite(l0.loss)).toBe(true)
    expect(l0.accuracy).toBeGreaterThanOrEqual(0)
    expect(l0).toEqual(await here.evaluate(here.weights))
  }, 60_000)
})
