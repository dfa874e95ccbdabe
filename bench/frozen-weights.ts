/**
 * Frozen base weights in the native addon vs float32 tfjs tensors (src/model/frozen-weight.ts):
 * the wasm heap the model's tensors take, the process RSS, and the LoRA training step time,
 * on random BF16 weights of a real model's shapes (default: SmolLM2-135M), LoRA on
 * q_proj,v_proj. Both storages give the same bits (test/model/frozen-weight.test.ts);
 * this measures what they cost.
 *
 *   npx tsx bench/frozen-weights.ts [--config smollm2-135m|tinyllama-1.1b] [--steps 3] [--seq 128] [--batch 1] [--storage both|native|tfjs] [--json]
 *   npx tsx bench/frozen-weights.ts --model DIR ...   # load a checkpoint (bench/make-checkpoint.ts writes one) tensor by tensor
 *
 * Each storage runs in its own process (RSS is a process high-water mark).
 */
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import * as tf from '@tensorflow/tfjs'
import { initAdapter } from '../src/lora/init.js'
import { describeBackend, selectBackend } from '../src/model/backend.js'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { parameterCount } from '../src/model/config.js'
import { loadModel } from '../src/model/checkpoint.js'
import { CONFIGS, roundToBf16InPlace } from './model-shapes.js'
import { LlamaModel, randomLlamaWeights } from '../src/model/llama.js'
import { trainLora, type TrainingExample } from '../src/model/trainer.js'

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback
}

interface Result {
  storage: 'native' | 'tfjs'
  config: string
  parameters: number
  backend: string
  wasmTensorBytes: number
  nativeBytes: number
  rssMb: number
  buildS: number
  /** With --model: the checkpoint's bytes on disk and the peak RSS once it is loaded. */
  checkpointBytes?: number
  loadRssMb?: number
  stepMs: number[]
}

async function runOne(storage: 'native' | 'tfjs', name: string): Promise<Result> {
  const dir = process.argv.includes('--model') ? arg('model', '') : undefined
  const steps = Number(arg('steps', '3'))
  const seqLen = Number(arg('seq', '128'))
  const batchSize = Number(arg('batch', '1'))
  const backend = await selectBackend('wasm', { fallback: false })
  const t0 = performance.now()
  let model: LlamaModel
  let checkpointBytes: number | undefined
  let loadRssMb: number | undefined
  if (dir !== undefined) {
    checkpointBytes = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).reduce((n, f) => n + statSync(join(dir, f)).size, 0)
    model = await loadModel(dir, { frozenWeights: storage, targetModules: ['q_proj', 'v_proj'] })
    loadRssMb = process.resourceUsage().maxRSS / 1024
  } else {
    const c = CONFIGS[name]
    if (c === undefined) throw new Error(`unknown --config ${name} (${Object.keys(CONFIGS).join(', ')})`)
    const weights = randomLlamaWeights(c, 'frozen-bench')
    for (const w of weights.values()) roundToBf16InPlace(w)
    model = new LlamaModel(c, weights, { frozenWeights: storage, targetModules: ['q_proj', 'v_proj'] })
    weights.clear()
  }
  const config = model.config
  const buildS = (performance.now() - t0) / 1000
  model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: 16, alpha: 32, seed: 1 }))
  const data: TrainingExample[] = Array.from({ length: batchSize * 2 }, (_, e) => ({
    inputIds: Array.from({ length: seqLen }, (_, i) => (e * 7919 + i * 104729) % config.vocabSize),
  }))
  const stepMs: number[] = []
  let last = performance.now()
  await trainLora(model, data, {
    steps,
    batchSize,
    seqLen,
    lr: 1e-4,
    seed: 0,
    onStep: () => {
      const now = performance.now()
      stepMs.push(now - last)
      last = now
    },
  })
  const result: Result = {
    storage,
    config: dir ?? name,
    parameters: parameterCount(config),
    backend: describeBackend(backend),
    wasmTensorBytes: tf.memory().numBytes,
    nativeBytes: model.frozenWeightStorage().nativeBytes,
    rssMb: process.resourceUsage().maxRSS / 1024,
    buildS,
    checkpointBytes,
    loadRssMb,
    stepMs,
  }
  model.dispose()
  return result
}

const only = arg('only', '')
if (only === 'native' || only === 'tfjs') {
  process.stdout.write(`${JSON.stringify(await runOne(only, arg('config', 'smollm2-135m')))}\n`)
} else {
  const want = arg('storage', 'both')
  const storages = want === 'both' ? (['tfjs', 'native'] as const) : [want as 'native' | 'tfjs']
  const here = fileURLToPath(import.meta.url)
  const results: Result[] = []
  for (const s of storages) {
    const out = execFileSync(process.execPath, ['--import', 'tsx', here, ...process.argv.slice(2), '--only', s], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 })
    results.push(JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Result)
  }
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(results)}\n`)
  else {
    const r0 = results[0]
    process.stdout.write(`${r0.config}: ${(r0.parameters / 1e6).toFixed(1)}M parameters, ${r0.checkpointBytes !== undefined ? 'loaded from disk' : 'random BF16 weights'}, LoRA r=16 on q_proj,v_proj; ${r0.backend}\n`)
    for (const r of results) {
      const median = [...r.stepMs].sort((a, b) => a - b)[Math.floor(r.stepMs.length / 2)]
      process.stdout.write(
        `  ${r.storage.padEnd(6)}${r.loadRssMb !== undefined && r.checkpointBytes !== undefined ? ` load: peak RSS ${r.loadRssMb.toFixed(0)} MB = ${((r.loadRssMb * 2 ** 20) / r.checkpointBytes).toFixed(2)}x the ${(r.checkpointBytes / 2 ** 20).toFixed(0)} MiB checkpoint;` : ''} wasm tensors ${(r.wasmTensorBytes / 2 ** 20).toFixed(0).padStart(6)} MiB, addon ${(r.nativeBytes / 2 ** 20).toFixed(0).padStart(6)} MiB, peak RSS ${r.rssMb.toFixed(0).padStart(6)} MB, build ${r.buildS.toFixed(1)} s, step ${median.toFixed(0)} ms (median of ${r.stepMs.length})\n`,
      )
    }
  }
}
