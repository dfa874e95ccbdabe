/**
 * The model layer in a real browser tab on WebGPU: the bundle of `npm run build:browser`,
 * served over HTTP to headless Chromium, whose WebGPU adapter here is its built-in
 * SwiftShader (no GPU). The tab loads the bundled model (models/flora-tiny), trains a LoRA
 * for a few steps on the `webgpu` tfjs backend and returns its logits, losses and adapter;
 * the same steps run here on wasm, and the two agree within the tolerances below (float32
 * on both, summed in other orders). Skipped, saying why, only where no Chromium exists
 * (`apt-get install -y chromium`).
 */
import * as tf from '@tensorflow/tfjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import { selectBackend } from '../../src/model/backend.js'
import { defaultModelDir } from '../../src/model/bundled.js'
import { loadModel } from '../../src/model/checkpoint.js'
import { trainLora } from '../../src/model/trainer.js'
import { findChromium, type FloraInTab, openWebgpuTab, type WebgpuTab } from '../../scripts/browser-tab.js'

const MODEL = defaultModelDir()
const SEQS = [
  [1, 17, 254, 9, 33, 801, 12, 77, 3, 2000, 45, 6],
  [5, 400, 21, 8, 90, 1200, 64, 7, 19, 300],
]
const STEPS = 3
const TRAIN = { steps: STEPS, batchSize: 2, seqLen: 16, lr: 1e-2, seed: 7 }
const ADAPTER = { rank: 4, alpha: 8, seed: 'webgpu-test' }

/** Tolerances: logits (max abs), per-step losses (abs), adapter entries (max abs, relative to the largest). */
const LOGIT_TOL = 1e-3
const LOSS_TOL = 1e-3
const ADAPTER_TOL = 1e-3

interface TabResult {
  adapterInfo: { vendor: string; architecture: string } | undefined
  backend: string
  logits: number[]
  losses: number[]
  adapter: { name: string; loraA: number[]; loraB: number[] }[]
}

/** What the tab does, in the tab (the bundle's exports are on window.flora). */
async function trainInTab(args: { seqs: number[][]; train: typeof TRAIN; adapter: typeof ADAPTER }): Promise<TabResult> {
  const flora = (globalThis as unknown as { flora: FloraInTab }).flora
  const adapterInfo = await flora.webgpuAdapterInfo()
  const backend = await flora.useBackend('webgpu')
  const [config, bytes] = await Promise.all([
    fetch('/model/config.json').then((r) => r.text()),
    fetch('/model/model.safetensors').then((r) => r.arrayBuffer()),
  ])
  const model = flora.loadModelFromBytes(config, new Uint8Array(bytes))
  const ids = flora.tf.tensor2d([args.seqs[0]], [1, args.seqs[0].length], 'int32')
  const logits = model.forward(ids)
  const logitValues = Array.from(await logits.data())
  flora.tf.dispose([ids, logits])
  model.setAdapter(flora.initAdapter({ shapes: model.targetModuleShapes(), ...args.adapter }))
  const result = await flora.trainLora(model, args.seqs.map((inputIds) => ({ inputIds, promptLength: 2 })), args.train)
  const adapter = (await model.readAdapter()).modules.map((m) => ({ name: m.name, loraA: Array.from(m.loraA), loraB: Array.from(m.loraB) }))
  model.dispose()
  return { adapterInfo, backend, logits: logitValues, losses: [...result.losses], adapter }
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

const browserPath = findChromium()
if (browserPath === undefined) console.warn('webgpu-train: skipped: no Chromium (apt-get install -y chromium, or set CHROMIUM_PATH)')

describe.skipIf(browserPath === undefined)('the model layer in headless Chromium on WebGPU (SwiftShader)', () => {
  let tab: WebgpuTab | undefined

  beforeAll(async () => {
    tab = await openWebgpuTab(browserPath as string, MODEL, 'browser-test')
  }, 60_000)

  afterAll(async () => {
    await tab?.close()
  })

  it('trains a LoRA on the bundled model and agrees with wasm', async () => {
    const { page, errors } = tab as WebgpuTab
    const result = await page.evaluate(trainInTab, { seqs: SEQS, train: TRAIN, adapter: ADAPTER })
    expect(errors).toEqual([])
    expect(result.backend).toBe('webgpu')
    expect(result.adapterInfo?.architecture).toBe('swiftshader')

    // The same on wasm, here.
    await selectBackend('wasm', { fallback: false })
    const model = await loadModel(MODEL)
    try {
      const ids = tf.tensor2d([SEQS[0]], [1, SEQS[0].length], 'int32')
      const logits = model.forward(ids)
      const wasmLogits = await logits.data()
      tf.dispose([ids, logits])
      model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), ...ADAPTER }))
      const wasm = await trainLora(model, SEQS.map((inputIds) => ({ inputIds, promptLength: 2 })), TRAIN)
      const wasmAdapter = model.getAdapter().modules

      const logitErr = maxAbs(result.logits, wasmLogits)
      const lossErr = maxAbs(result.losses, wasm.losses)
      const scale = Math.max(...wasmAdapter.flatMap((m) => [...m.loraA, ...m.loraB].map(Math.abs)))
      const adapterErr = Math.max(...wasmAdapter.map((m, i) => Math.max(maxAbs(result.adapter[i].loraA, m.loraA), maxAbs(result.adapter[i].loraB, m.loraB)))) / scale
      console.log(`webgpu vs wasm: logits max |diff| ${logitErr.toExponential(2)}, losses ${lossErr.toExponential(2)}, adapter ${adapterErr.toExponential(2)} (relative); losses webgpu ${result.losses.map((l) => l.toPrecision(9)).join(' ')}, wasm ${wasm.losses.map((l) => l.toPrecision(9)).join(' ')}`)
      expect(result.adapter.map((m) => m.name)).toEqual(wasmAdapter.map((m) => m.name))
      expect(logitErr).toBeLessThan(LOGIT_TOL)
      expect(lossErr).toBeLessThan(LOSS_TOL)
      expect(adapterErr).toBeLessThan(ADAPTER_TOL)
      expect(wasm.losses[STEPS - 1]).toBeLessThan(wasm.losses[0]) // it learns
    } finally {
      model.dispose()
    }
  }, 240_000)
})
