/**
 * Messages between worker-trainer.ts (main thread) and trainer-worker.ts (the training
 * worker). Every call carries an id; the worker answers it with exactly one `result` or
 * `error`, and may send `step` progress for a train call before that. `abort` aborts the
 * worker-side AbortController of a call (AbortSignals cannot cross threads).
 */
import type { SwarmConfig } from './config.js'
import type { EvalScore, SetupOptions, TrainProgress } from './setup-types.js'
import type { TrainContext, TrainResult } from './trainer.js'

/** SetupOptions without the callback (functions cannot cross threads; progress comes back as `step` messages). */
export type WorkerSetupOptions = Omit<SetupOptions, 'onTrainStep'>

/** TrainContext without the AbortSignal. */
export type WorkerTrainContext = Omit<TrainContext, 'signal'>

export type ToWorker =
  | { readonly type: 'setup'; readonly id: number; readonly options: WorkerSetupOptions; readonly wantSteps: boolean; readonly imports: readonly string[] }
  | { readonly type: 'train'; readonly id: number; readonly ctx: WorkerTrainContext }
  | { readonly type: 'evaluate'; readonly id: number; readonly weights: ReadonlyMap<string, Float32Array> }
  | { readonly type: 'abort'; readonly id: number; readonly name: string; readonly message: string }

export interface SetupReply {
  readonly config: SwarmConfig
  readonly weights: Map<string, Float32Array>
  readonly samples: number
  readonly description: string
  readonly baseModelDir?: string
}

export interface SerializedError {
  readonly name: string
  readonly message: string
  readonly stack?: string
  readonly code?: string
}

export type FromWorker =
  | { readonly type: 'result'; readonly id: number; readonly value: SetupReply | TrainResult | EvalScore }
  | { readonly type: 'error'; readonly id: number; readonly error: SerializedError }
  | { readonly type: 'step'; readonly id: number; readonly progress: TrainProgress }

/**
 * Compact copies of `weights` (each in a buffer of its own, so that posting one never
 * serialises a larger buffer it is a view of), their buffers pushed onto `transfer`.
 */
export function compactCopies(weights: ReadonlyMap<string, Float32Array>, transfer: ArrayBuffer[]): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>()
  for (const [name, w] of weights) out.set(name, compactCopy(w, transfer))
  return out
}

/** A compact copy of `a`, its buffer pushed onto `transfer`. */
export function compactCopy(a: Float32Array, transfer: ArrayBuffer[]): Float32Array {
  const c = a.slice()
  transfer.push(c.buffer as ArrayBuffer)
  return c
}
