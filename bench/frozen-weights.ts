/**
 * Frozen base weights in the native addon vs float32 tfjs tensors (src/model/frozen-weight.ts):
 * the wasm heap the model's tensors take, the process RSS, and the LoRA training step time,
 * on random BF16 weights of a real model's shapes (default: SmolLM2-135M), LoRA on
 * q_proj,v_proj. Both storages give the same bits (test/model/frozen-weight.test.ts);
 * this measures what they cost.
 *
 *   npx tsx bench/frozen-weights.ts [--config smollm2-135m|tinyllama-1.1b] [--steps 3] [--seq 128] [--batch 1] [--storage both|native|tfjs] [--json]
 *
 * Each storage runs in its own process (RSS is a process high-water mark).
 */
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import * as tf from '@tensorflow/tfjs'
import { initAdapter } from '../src/lora/init.js'
import { describeBackend, selectBackend } from '../src/model/backend.js'
import { llamaConfig, parameterCount, type LlamaConfig } from '../src/model/config.js'
import { LlamaModel, randomLlamaWeights } from '../src/model/llama.js'
import { trainLora, type TrainingExample } from '../src/model/trainer.js'

const CONFIGS: Record<string, LlamaConfig> = {
  // HuggingFaceTB/SmolLM2-135M's shapes.
  'smollm2-135m': llamaConfig({ vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, maxPositionEmbeddings: 2048, tieWordEmbeddings: true, ropeTheta: 100000 }),
  // TinyLlama-1.1B's shapes.
  'tinyllama-1.1b': llamaConfig({ vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKvHeads: 4, maxPositionEmbeddings: 2048 }),
}

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
  stepMs: number[]
}

/** Rounds every value to bf16 in place (a BF16 checkpoint's values). */
function roundToBf16(x: Float32Array): void {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length)
  for (let i = 0; i < u.length; i++) u[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) & 0xffff0000
}

async function runOne(storage: 'native' | 'tfjs', name: string): Promise<Result> {
  const config = CONFIGS[name]
  if (config === undefined) throw new Error(`unknown --config ${name} (${Object.keys(CONFIGS).join(', ')})`)
  const steps = Number(arg('steps', '3'))
  const seqLen = Number(arg('seq', '128'))
  const batchSize = Number(arg('batch', '1'))
  const backend = await selectBackend('wasm', { fallback: false })
  const t0 = performance.now()
  const weights = randomLlamaWeights(config, 'frozen-bench')
  for (const w of weights.values()) roundToBf16(w)
  const model = new LlamaModel(config, weights, { frozenWeights: storage, targetModules: ['q_proj', 'v_proj'] })
  weights.clear()
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
    config: name,
    parameters: parameterCount(config),
    backend: describeBackend(backend),
    wasmTensorBytes: tf.memory().numBytes,
    nativeBytes: model.frozenWeightStorage().nativeBytes,
    rssMb: process.resourceUsage().maxRSS / 1024,
    buildS,
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
    process.stdout.write(`${r0.config}: ${(r0.parameters / 1e6).toFixed(1)}M parameters, random BF16 weights, LoRA r=16 on q_proj,v_proj; ${r0.backend}\n`)
    for (const r of results) {
      const median = [...r.stepMs].sort((a, b) => a - b)[Math.floor(r.stepMs.length / 2)]
      process.stdout.write(
        `  ${r.storage.padEnd(6)} wasm tensors ${(r.wasmTensorBytes / 2 ** 20).toFixed(0).padStart(6)} MiB, addon ${(r.nativeBytes / 2 ** 20).toFixed(0).padStart(6)} MiB, peak RSS ${r.rssMb.toFixed(0).padStart(6)} MB, build ${r.buildS.toFixed(1)} s, step ${median.toFixed(0)} ms (median of ${r.stepMs.length})\n`,
      )
    }
  }
}
