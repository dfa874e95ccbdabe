/**
 * Entry of the training worker thread started by worker-trainer.ts: runs `setupPeer` here,
 * then serves train and evaluate calls from the main thread, so that a training backend
 * that computes synchronously (tfjs wasm, the native kernels, a busy synthetic trainer)
 * never blocks the peer's networking on the main thread. See worker-trainer.ts for the
 * protocol.
 */
import { parentPort } from 'node:worker_threads'
import { setupPeer, type PeerSetup } from './setup.js'
import type { TrainContext, TrainResult } from './trainer.js'
import { compactCopies, compactCopy, type FromWorker, type SerializedError, type ToWorker } from './worker-protocol.js'

const port = parentPort
if (port == null) throw new Error('trainer-worker.ts runs as a worker thread (see worker-trainer.ts)')

let setup: PeerSetup | undefined
/** Id of the train call in progress (calls come one at a time), for its progress messages. */
let training: number | undefined
const controllers = new Map<number, AbortController>()

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(msg, transfer)
}

function serializeError(err: unknown): SerializedError {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code
    return { name: err.name, message: err.message, stack: err.stack, ...(typeof code === 'string' ? { code } : {}) }
  }
  return { name: 'Error', message: String(err) }
}

async function handle(msg: Exclude<ToWorker, { type: 'abort' }>, signal: AbortSignal): Promise<void> {
  switch (msg.type) {
    case 'setup': {
      for (const specifier of msg.imports) await import(specifier)
      setup = await setupPeer({
        ...msg.options,
        onTrainStep: msg.wantSteps ? (progress) => training !== undefined && post({ type: 'step', id: training, progress: { ...progress } }) : undefined,
      })
      const transfer: ArrayBuffer[] = []
      // Copies: the backend keeps using its own arrays (the model's loaded weights).
      const weights = compactCopies(setup.weights, transfer)
      post(
        { type: 'result', id: msg.id, value: { config: setup.config, weights, samples: setup.samples, description: setup.description, baseModelDir: setup.baseModelDir } },
        transfer,
      )
      return
    }
    case 'train': {
      if (setup === undefined) throw new Error('training worker: not set up')
      const ctx: TrainContext = { ...msg.ctx, signal }
      training = msg.id
      let result: TrainResult
      try {
        result = await setup.trainer(ctx)
      } finally {
        training = undefined
      }
      const transfer: ArrayBuffer[] = []
      const modules = result.adapter.modules.map((m) => ({ ...m, loraA: compactCopy(m.loraA, transfer), loraB: compactCopy(m.loraB, transfer) }))
      post({ type: 'result', id: msg.id, value: { ...result, adapter: { modules } } }, transfer)
      return
    }
    case 'evaluate': {
      if (setup === undefined) throw new Error('training worker: not set up')
      const score = await setup.evaluate(msg.weights, signal)
      post({ type: 'result', id: msg.id, value: score })
      return
    }
  }
}

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'abort') {
    const reason = new Error(msg.message)
    reason.name = msg.name
    controllers.get(msg.id)?.abort(reason)
    return
  }
  // Synchronously, so that an abort posted right after the call finds its controller.
  const ac = new AbortController()
  controllers.set(msg.id, ac)
  handle(msg, ac.signal).then(
    () => controllers.delete(msg.id),
    (err: unknown) => {
      controllers.delete(msg.id)
      post({ type: 'error', id: msg.id, error: serializeError(err) })
    },
  )
})
