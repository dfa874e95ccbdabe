/**
 * One correctness job of test/model/webgpu-node.test.ts, run the same way on any backend:
 * the logits of a sequence, the LoRA gradients of a batch (non-zero B, so every factor has a
 * gradient), then a few training steps from a fresh adapter and the adapter they give.
 * The test runs it here on wasm and, as `tsx test/model/webgpu-job.ts '<jobs json array>'`, in a
 * child process on webgpu (the child prints `RESULT <json array>`, one result per job).
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as tf from '@tensorflow/tfjs'
import { initAdapter } from '../../src/lora/init.js'
import { type BackendPreference, selectBackend } from '../../src/model/backend.js'
import { loadModel } from '../../src/model/checkpoint.js'
import { adapterGradients, trainLora } from '../../src/model/trainer.js'

export interface WebgpuJob {
  readonly modelDir: string
  readonly backend: BackendPreference
  readonly seqs: number[][]
  readonly train: { steps: number; batchSize: number; seqLen: number; lr: number; seed: number }
  readonly adapter: { rank: number; alpha: number; seed: string }
}

export interface WebgpuJobResult {
  backend: string
  adapterInfo?: { vendor: string; architecture: string; software: boolean }
  logits: number[]
  gradients: { name: string; dA: number[]; dB: number[] }[]
  gradLoss: number
  losses: number[]
  adapter: { name: string; loraA: number[]; loraB: number[] }[]
}

export async function runJob(job: WebgpuJob): Promise<WebgpuJobResult> {
  const selection = await selectBackend(job.backend, { fallback: false })
  const model = await loadModel(job.modelDir, { targetModules: ['q_proj', 'k_proj', 'v_proj', 'down_proj'] })
  try {
    const ids = tf.tensor2d([job.seqs[0]], [1, job.seqs[0].length], 'int32')
    const logits = model.forward(ids)
    const logitValues = Array.from(await logits.data())
    tf.dispose([ids, logits])
    const examples = job.seqs.map((inputIds) => ({ inputIds, promptLength: 2 }))

    const init = initAdapter({ shapes: model.targetModuleShapes(), ...job.adapter })
    model.setAdapter({ modules: init.modules.map((m) => ({ ...m, loraB: m.loraB.map((_, i) => Math.sin(i) / 8) })) })
    const g = await adapterGradients(model, examples, { seqLen: job.train.seqLen })

    model.setAdapter(init)
    const trained = await trainLora(model, examples, job.train)
    const adapter = await model.readAdapter()
    return {
      backend: tf.getBackend(),
      ...(selection.adapter !== undefined ? { adapterInfo: selection.adapter } : {}),
      logits: logitValues,
      gradients: g.modules.map((m) => ({ name: m.name, dA: Array.from(m.dA), dB: Array.from(m.dB) })),
      gradLoss: g.loss,
      losses: [...trained.losses],
      adapter: adapter.modules.map((m) => ({ name: m.name, loraA: Array.from(m.loraA), loraB: Array.from(m.loraB) })),
    }
  } finally {
    model.dispose()
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const results: WebgpuJobResult[] = []
  for (const job of JSON.parse(process.argv[2] as string) as WebgpuJob[]) results.push(await runJob(job))
  process.stdout.write(`RESULT ${JSON.stringify(results)}\n`)
}
