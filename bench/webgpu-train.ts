/**
 * LoRA training steps on WebGPU in a headless Chromium tab (the model layer's browser bundle):
 * step time, tokens/s and the GPU memory tfjs holds, on the bundled model or random weights of
 * a real model's shapes. Where the machine has a GPU with a Vulkan driver, Chromium uses it
 * (`--gpu`); otherwise, or with `--swiftshader`, its built-in SwiftShader (a CPU rasteriser:
 * numbers that only show the path works).
 *
 *   npx tsx bench/webgpu-train.ts [--config bundled|smollm2-135m|tinyllama-1.1b] [--steps 5] [--batch 1] [--seq 128] [--gpu] [--json]
 */
import { defaultModelDir } from '../src/model/bundled.js'
import { findChromium, type FloraInTab, openWebgpuTab, WEBGPU_GPU_ARGS, WEBGPU_SWIFTSHADER_ARGS } from '../scripts/browser-tab.js'
import { CONFIGS } from './model-shapes.js'

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback
}

interface Job {
  config: string
  shapes: Record<string, unknown> | null
  steps: number
  batch: number
  seq: number
}

/** In the tab: build the model, train `steps` steps, time each. */
async function runInTab(job: Job) {
  const flora = (globalThis as unknown as { flora: FloraInTab }).flora
  const adapter = await flora.webgpuAdapterInfo()
  await flora.useBackend('webgpu')
  let model
  if (job.shapes === null) {
    const [config, bytes] = await Promise.all([fetch('/model/config.json').then((r) => r.text()), fetch('/model/model.safetensors').then((r) => r.arrayBuffer())])
    model = flora.loadModelFromBytes(config, new Uint8Array(bytes))
  } else {
    model = flora.LlamaModel.random(job.shapes as never, 'webgpu-bench')
  }
  model.setAdapter(flora.initAdapter({ shapes: model.targetModuleShapes(), rank: 16, alpha: 32, seed: 1 }))
  const vocab = model.config.vocabSize
  const data = Array.from({ length: job.batch * 2 }, (_, e) => ({ inputIds: Array.from({ length: job.seq }, (_, i) => (e * 7919 + i * 104729) % vocab) }))
  const stepMs: number[] = []
  let last = performance.now()
  await flora.trainLora(model, data, {
    steps: job.steps,
    batchSize: job.batch,
    seqLen: job.seq,
    lr: 1e-4,
    seed: 0,
    onStep: () => {
      const now = performance.now()
      stepMs.push(now - last)
      last = now
    },
  })
  const gpuBytes = flora.tf.memory().numBytes
  model.dispose()
  return { adapter, stepMs, gpuBytes, parameters: model.baseParameterCount() }
}

const browser = findChromium()
if (browser === undefined) {
  console.error('webgpu-train: no Chromium (apt-get install -y chromium, or set CHROMIUM_PATH)')
  process.exit(1)
}
const config = arg('config', 'bundled')
const shapes = config === 'bundled' ? null : CONFIGS[config]
if (shapes === undefined) {
  console.error(`webgpu-train: unknown --config ${config} (bundled, ${Object.keys(CONFIGS).join(', ')})`)
  process.exit(2)
}
const job: Job = { config, shapes: shapes as unknown as Record<string, unknown> | null, steps: Number(arg('steps', '5')), batch: Number(arg('batch', '1')), seq: Number(arg('seq', '128')) }
const tab = await openWebgpuTab(browser, defaultModelDir(), 'browser-bench', process.argv.includes('--gpu') ? WEBGPU_GPU_ARGS : WEBGPU_SWIFTSHADER_ARGS)
try {
  const r = await tab.page.evaluate(runInTab, job)
  const sorted = [...r.stepMs].slice(1).sort((a, b) => a - b) // the first step compiles the shaders
  const median = sorted[Math.floor(sorted.length / 2)] ?? r.stepMs[0]
  const summary = {
    config,
    parameters: r.parameters,
    adapter: r.adapter,
    batch: job.batch,
    seq: job.seq,
    firstStepMs: Math.round(r.stepMs[0]),
    medianStepMs: Math.round(median),
    tokensPerSecond: Math.round((job.batch * job.seq) / (median / 1000)),
    gpuTensorMiB: Math.round(r.gpuBytes / 2 ** 20),
  }
  if (process.argv.includes('--json')) console.log(JSON.stringify(summary))
  else {
    console.log(`${config}: ${(r.parameters / 1e6).toFixed(1)}M parameters, LoRA r=16 on q_proj,v_proj, batch ${job.batch} x ${job.seq}; WebGPU adapter ${r.adapter?.vendor ?? '?'} / ${r.adapter?.architecture ?? '?'}`)
    console.log(`  first step ${summary.firstStepMs} ms (shader compilation), then median ${summary.medianStepMs} ms: ${summary.tokensPerSecond} tokens/s; tfjs tensors on the GPU ${summary.gpuTensorMiB} MiB`)
  }
} finally {
  await tab.close()
}
