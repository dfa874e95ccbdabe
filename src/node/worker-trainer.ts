/**
 * Training off the main thread (property P8, responsiveness): `setupPeerInWorker` runs a
 * training backend (setup.ts: `synthetic`, `model`, or any a module registers) in a
 * `node:worker_threads` Worker, so that local training and evaluation, which compute
 * synchronously for seconds at a time (tfjs wasm, the native kernels), never block the
 * peer's event loop: libp2p pings, gossip, payload serving and votes go on while it
 * trains, and a slow peer is late rather than expelled.
 *
 * The PeerSetup it returns behaves like `setupPeer`'s, with these differences:
 * - `config`, `weights`, `samples` and `description` are copies made by the worker.
 * - `trainer(ctx)` and `evaluate(weights, signal)` post the call to the worker. The weights
 *   (read only for the trainer) are copied, never transferred. The AbortSignal stays here:
 *   when it aborts, the call rejects at once with `signal.reason` and the worker is told to
 *   abort its own controller (a trainer that computes synchronously notices when its current
 *   step ends).
 * - Calls run one at a time, in call order (a queue); a call aborted while queued is never
 *   sent. The next call is sent when the worker has finished the previous one.
 * - An error thrown in the worker rejects the call with the same message (and name, code
 *   and worker stack; a SwarmConfigError stays one). A worker that crashes or exits rejects
 *   every pending and later call with a `training worker ...` error.
 * - `onTrainStep` progress comes back as messages and is called on this thread.
 * - `close()` terminates the worker. An idle worker does not keep the process alive.
 * - A call that fails because the worker's training backend died (error code BACKEND_DEAD:
 *   the tfjs wasm module aborted when its heap ran out) rejects as usual, and the worker is
 *   replaced by a fresh one, set up the same way, for the calls after it.
 *
 * Backends registered with `registerTrainerBackend` on the main thread do not exist in the
 * worker: name the modules that register them in `InWorkerOptions.imports`.
 *
 * The worker entry is trainer-worker.ts. Run from the TypeScript sources (vitest, tsx, the
 * bins without a dist/ build), this module is a .ts file and the worker first imports tsx's
 * loader (the same as `node --import tsx`); from the compiled build it runs trainer-worker.js.
 */
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { BACKEND_DEAD } from '../model/backend-dead.js'
import { SwarmConfigError } from './config.js'
import type { EvalScore, PeerSetup, SetupOptions, TrainProgress } from './setup-types.js'
import type { TrainContext, TrainResult } from './trainer.js'
import { compactCopies, compactCopy, type FromWorker, type SerializedError, type SetupReply, type ToWorker } from './worker-protocol.js'

export interface InWorkerOptions {
  /**
   * Modules (specifiers or URLs) the worker imports before it sets up, e.g. one that
   * registers a custom training backend. Relative specifiers are not supported: pass
   * absolute file URLs or package names.
   */
  readonly imports?: readonly (string | URL)[]
  /** Name of the worker thread (default 'flora-trainer'). */
  readonly name?: string
}

/** `setupPeer(options)` in a worker thread: see the module comment. */
export async function setupPeerInWorker(options: SetupOptions, workerOptions: InWorkerOptions = {}): Promise<PeerSetup> {
  const name = workerOptions.name ?? 'flora-trainer'
  const imports = (workerOptions.imports ?? []).map((s) => (s instanceof URL ? s.href : s))
  let worker = new TrainerWorker(name)
  let reply: SetupReply
  try {
    reply = await worker.setup(options, imports)
  } catch (err) {
    await worker.close()
    throw err
  }
  let closed = false
  // A training backend that died (BACKEND_DEAD: the wasm module aborted) is replaced by a
  // fresh worker, set up the same way, so that the peer trains again from the next round.
  const replaceDeadWorker = async (): Promise<void> => {
    const fresh = new TrainerWorker(name)
    try {
      await fresh.setup(options, imports)
    } catch {
      await fresh.close()
      return
    }
    const dead = worker
    worker = fresh
    await dead.close()
    if (closed) await fresh.close()
  }
  const call = async <T>(fn: (w: TrainerWorker) => Promise<T>): Promise<T> => {
    try {
      return await fn(worker)
    } catch (err) {
      if ((err as { code?: unknown }).code === BACKEND_DEAD && !closed) await replaceDeadWorker()
      throw err
    }
  }
  return {
    config: reply.config,
    weights: reply.weights,
    samples: reply.samples,
    description: reply.description,
    baseModelDir: reply.baseModelDir,
    trainer: (ctx) => call((w) => w.train(ctx)),
    evaluate: (weights, signal) => call((w) => w.evaluate(weights, signal)),
    close: async () => {
      closed = true
      await worker.close()
    },
  }
}

function startWorker(name: string): Worker {
  const here = import.meta.url
  if (!here.endsWith('.ts')) return new Worker(new URL('./trainer-worker.js', here), { name })
  // From source: register tsx's loader in the worker first (what `node --import tsx` does),
  // resolved from here so that it does not depend on the working directory.
  const tsx = pathToFileURL(createRequire(here).resolve('tsx')).href
  const entry = new URL('./trainer-worker.ts', here).href
  return new Worker(`import(${JSON.stringify(tsx)}).then(() => import(${JSON.stringify(entry)}))`, { eval: true, name })
}

interface Pending {
  readonly resolve: (value: unknown) => void
  readonly reject: (err: unknown) => void
  readonly onStep?: (p: TrainProgress) => void
  /** The worker is done with this call (answered it or died). */
  readonly done: () => void
  /** The caller's promise has settled (e.g. aborted early): ignore the answer. */
  settled: boolean
}

class TrainerWorker {
  readonly #worker: Worker
  readonly #pending = new Map<number, Pending>()
  #tail: Promise<void> = Promise.resolve()
  #nextId = 1
  #failed: Error | undefined
  #onTrainStep: ((p: TrainProgress) => void) | undefined
  #closing: Promise<void> | undefined

  constructor(name: string) {
    this.#worker = startWorker(name)
    this.#worker.unref()
    this.#worker.on('message', (msg: FromWorker) => this.#onMessage(msg))
    this.#worker.on('error', (err: Error) => this.#fail(new Error(`training worker crashed: ${err.message}`, { cause: err })))
    this.#worker.on('messageerror', (err: Error) => this.#fail(new Error(`training worker: a message could not be read: ${err.message}`, { cause: err })))
    this.#worker.on('exit', (code: number) => this.#fail(new Error(`training worker exited unexpectedly (exit code ${code})`)))
  }

  setup(options: SetupOptions, imports: readonly string[]): Promise<SetupReply> {
    const { onTrainStep, ...rest } = options
    this.#onTrainStep = onTrainStep
    return this.#call(
      (id) => ({ msg: { type: 'setup', id, options: rest, wantSteps: onTrainStep !== undefined, imports }, transfer: [] }),
      undefined,
    )
  }

  train(ctx: TrainContext): Promise<TrainResult> {
    return this.#call((id) => {
      const transfer: ArrayBuffer[] = []
      const weights = compactCopies(ctx.weights, transfer)
      const init =
        ctx.init === undefined ? undefined : { modules: ctx.init.modules.map((m) => ({ ...m, loraA: compactCopy(m.loraA, transfer), loraB: compactCopy(m.loraB, transfer) })) }
      const msg: ToWorker = {
        type: 'train',
        id,
        ctx: {
          round: ctx.round,
          rank: ctx.rank,
          alpha: ctx.alpha,
          rslora: ctx.rslora,
          seed: ctx.seed,
          swarmSeed: ctx.swarmSeed,
          weights,
          shapes: ctx.shapes.map((s) => ({ name: s.name, inFeatures: s.inFeatures, outFeatures: s.outFeatures })),
          ...(init !== undefined ? { init } : {}),
        },
      }
      return { msg, transfer }
    }, ctx.signal, this.#onTrainStep)
  }

  evaluate(weights: ReadonlyMap<string, Float32Array>, signal?: AbortSignal): Promise<EvalScore> {
    return this.#call((id) => {
      const transfer: ArrayBuffer[] = []
      return { msg: { type: 'evaluate', id, weights: compactCopies(weights, transfer) }, transfer }
    }, signal)
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#fail(new Error('training worker closed'))
      await this.#worker.terminate()
    })()
    return this.#closing
  }

  /** Queues a call; `build` makes its message when it is its turn (so queued calls hold no copies). */
  #call<T>(build: (id: number) => { msg: ToWorker; transfer: ArrayBuffer[] }, signal: AbortSignal | undefined, onStep?: (p: TrainProgress) => void): Promise<T> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed)
    if (signal?.aborted === true) return Promise.reject(signal.reason)
    const id = this.#nextId++
    const result = deferred<T>()
    const finished = deferred<void>()
    const prev = this.#tail
    this.#tail = finished.promise
    let sent = false
    const entry: Pending = {
      resolve: (v) => settle(() => result.resolve(v as T)),
      reject: (err) => settle(() => result.reject(err)),
      onStep,
      done: () => {
        signal?.removeEventListener('abort', onAbort)
        finished.resolve()
      },
      settled: false,
    }
    const settle = (fn: () => void): void => {
      if (entry.settled) return
      entry.settled = true
      signal?.removeEventListener('abort', onAbort)
      fn()
    }
    const onAbort = (): void => {
      const reason: unknown = signal?.reason
      entry.reject(reason)
      if (sent && this.#failed === undefined) {
        const e = reason instanceof Error ? reason : new Error(String(reason))
        this.#worker.postMessage({ type: 'abort', id, name: e.name, message: e.message } satisfies ToWorker)
      }
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    void prev.then(() => {
      if (entry.settled || this.#failed !== undefined) {
        if (this.#failed !== undefined) entry.reject(this.#failed)
        entry.done()
        return
      }
      let built: { msg: ToWorker; transfer: ArrayBuffer[] }
      try {
        built = build(id)
      } catch (err) {
        entry.reject(err)
        entry.done()
        return
      }
      sent = true
      this.#pending.set(id, entry)
      this.#worker.ref()
      try {
        this.#worker.postMessage(built.msg, built.transfer)
      } catch (err) {
        this.#pending.delete(id)
        if (this.#pending.size === 0) this.#worker.unref()
        entry.reject(err)
        entry.done()
      }
    })
    return result.promise
  }

  #onMessage(msg: FromWorker): void {
    const entry = this.#pending.get(msg.id)
    if (entry === undefined) return
    if (msg.type === 'step') {
      if (entry.settled || entry.onStep === undefined) return
      try {
        entry.onStep(msg.progress)
      } catch (err) {
        // As in-thread, where a throwing callback fails the training call.
        entry.reject(err)
        this.#worker.postMessage({ type: 'abort', id: msg.id, name: 'Error', message: 'onTrainStep threw' } satisfies ToWorker)
      }
      return
    }
    this.#pending.delete(msg.id)
    if (this.#pending.size === 0) this.#worker.unref()
    if (msg.type === 'result') entry.resolve(msg.value)
    else entry.reject(toError(msg.error))
    entry.done()
  }

  #fail(err: Error): void {
    if (this.#failed !== undefined) return
    this.#failed = err
    for (const entry of this.#pending.values()) {
      entry.reject(err)
      entry.done()
    }
    this.#pending.clear()
  }
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (err: unknown) => void } {
  let resolve!: (v: T) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

function toError(e: SerializedError): Error {
  const err = e.name === 'SwarmConfigError' ? new SwarmConfigError(e.message) : new Error(e.message)
  if (err.name !== e.name) (err as { name: string }).name = e.name
  if (e.code !== undefined) (err as NodeJS.ErrnoException).code = e.code
  if (e.stack !== undefined) err.stack = e.stack
  return err
}
