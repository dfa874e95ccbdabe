/**
 * A reusable pool of worker threads for the merge kernel.
 *
 * Work is split by output rows only (row groups claimed from an atomic counter), so every
 * element of W is computed by one thread with the same summation order whatever the
 * number of workers: results are bit-identical for 1, 2, 4, ... workers.
 *
 * The workers run ENGINE_SOURCE through `eval: true` (see engine.ts for why) and share one
 * WebAssembly.Memory holding the packed operands and W. Idle workers are unref()'d so a pool
 * never keeps the process alive; they are ref()'d while a merge is in flight so that an
 * awaited merge cannot be cut short by the event loop running dry.
 */
import { Worker } from 'node:worker_threads'
import {
  ENGINE_SOURCE,
  type MergeBackend,
  createEngineMemory,
  kernelWasmBytes,
  loadJob,
  mergeJob,
  mergeLayout,
  storeResult,
  validateTerms,
} from './engine.js'
import { MergePoolError } from './errors.js'
import type { LowRankTerm, MatrixShape } from './types.js'

const WORKER_SOURCE = `${ENGINE_SOURCE}
const { parentPort, workerData } = require('node:worker_threads');
const engine = createMergeEngine(workerData.wasm, workerData.memory);
const counter = workerData.counter;
parentPort.on('message', function (job) {
  try {
    for (;;) {
      var g0 = Atomics.add(counter, 0, job.groupsPerClaim);
      if (g0 >= job.groups) break;
      engine.run(job, g0, Math.min(job.groups, g0 + job.groupsPerClaim));
    }
    parentPort.postMessage({ id: job.id, ok: true });
  } catch (e) {
    parentPort.postMessage({ id: job.id, ok: false, error: String((e && e.stack) || e) });
  }
});
`

interface WorkerReply {
  readonly id: number
  readonly ok: boolean
  readonly error?: string
}

export interface MergePoolOptions {
  /** Number of worker threads (>= 1). */
  readonly workers: number
}

export class MergePool {
  readonly workers: number
  private readonly threads: Worker[]
  /** Shared by all workers: packed operands and W of the current job. */
  private readonly memory = createEngineMemory()
  /** counter[0] = next row group to claim. */
  private readonly counter = new Int32Array(new SharedArrayBuffer(4))
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false
  private failure: Error | undefined
  private nextId = 1
  private pending: { id: number; left: number; resolve: () => void; reject: (e: Error) => void } | undefined

  constructor(options: MergePoolOptions) {
    const n = options.workers
    if (!Number.isInteger(n) || n < 1) throw new MergePoolError(`workers must be an integer >= 1, got ${n}`)
    this.workers = n
    const workerData = { wasm: kernelWasmBytes(), memory: this.memory, counter: this.counter }
    this.threads = []
    for (let i = 0; i < n; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData })
      w.unref()
      w.on('message', (msg: WorkerReply) => this.onReply(msg))
      w.on('error', (err: Error) => this.fail(new MergePoolError(`merge worker ${i} failed: ${err.message}`)))
      w.on('exit', (code: number) => {
        if (!this.closed) this.fail(new MergePoolError(`merge worker ${i} exited unexpectedly (code ${code})`))
      })
      this.threads.push(w)
    }
  }

  /** Whether close() was called. */
  get isClosed(): boolean {
    return this.closed
  }

  /**
   * W <- W + sum_k coef_k B_k A_k with the deterministic definition of merge.ts, in place.
   * Merges on one pool run one after another (each already uses every worker).
   */
  merge(weight: Float32Array, shape: MatrixShape, terms: readonly LowRankTerm[], backend: MergeBackend = 'auto'): Promise<void> {
    const R = validateTerms(weight, shape, terms)
    const run = this.queue.then(() => this.runJob(weight, shape, terms, R, backend))
    this.queue = run.catch(() => undefined)
    return run
  }

  private async runJob(weight: Float32Array, shape: MatrixShape, terms: readonly LowRankTerm[], R: number, backend: MergeBackend): Promise<void> {
    if (this.closed) throw new MergePoolError('merge pool is closed')
    if (this.failure !== undefined) throw this.failure
    if (R === 0) return // no terms: W is left untouched (see merge.ts)
    const layout = mergeLayout(shape, R)
    loadJob(this.memory, layout, terms, weight)
    const job = { ...mergeJob(layout, this.workers, backend), id: this.nextId++ }
    this.counter[0] = 0
    await new Promise<void>((resolve, reject) => {
      this.pending = { id: job.id, left: this.threads.length, resolve, reject }
      for (const t of this.threads) {
        t.ref() // an awaited merge must keep the event loop alive
        t.postMessage(job)
      }
    }).finally(() => {
      this.pending = undefined
      for (const t of this.threads) t.unref()
    })
    storeResult(this.memory, layout, weight)
  }

  private onReply(msg: WorkerReply): void {
    const p = this.pending
    if (p === undefined || msg.id !== p.id) return
    if (!msg.ok) {
      // Other workers may still be writing into the shared memory: retire the pool.
      this.fail(new MergePoolError(`merge worker error: ${msg.error ?? 'unknown'}`))
      return
    }
    p.left -= 1
    if (p.left === 0) p.resolve()
  }

  private fail(err: MergePoolError): void {
    this.failure ??= err
    const p = this.pending
    this.pending = undefined
    p?.reject(err)
  }

  /** Terminates the workers. Idempotent; merges after close() reject with MergePoolError. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.fail(new MergePoolError('merge pool closed'))
    await Promise.all(this.threads.map((t) => t.terminate()))
  }
}
