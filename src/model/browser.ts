/**
 * The model layer in a browser tab: what `npm run build:browser` bundles (with esbuild,
 * scripts/build-browser.mjs) into dist/browser/flora-model.js. It holds the Llama model,
 * LoRA adapters, the trainer and the safetensors parser, with the tfjs backends a tab can
 * use: WebGPU (`@tensorflow/tfjs-backend-webgpu`), WebGL and plain JS. Nothing here reads
 * files or loads the native addon; a page fetches a model directory's files itself and hands
 * over their bytes (`loadModelFromBytes`).
 *
 * On WebGPU the model computes with stock tfjs ops (compute path 'stock': the fused kernels
 * are registered for the wasm and cpu backends). The merge of the federation is not here: it
 * stays on the CPU, deterministic, so a peer that trains on a GPU still agrees bit for bit.
 */
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-webgpu'
import { initAdapter } from '../lora/init.js'
import type { AdapterSet } from '../lora/types.js'
import { fromHfConfig } from './config.js'
import { LlamaModel, type LlamaModelOptions } from './llama.js'
import { parseSafetensors } from './safetensors.js'
import { adapterGradients, evaluate, trainLora } from './trainer.js'

export { tf, initAdapter, LlamaModel, adapterGradients, evaluate, trainLora }
export type { AdapterSet }

/** What the tab's GPU adapter says it is (WebGPU's GPUAdapterInfo), or undefined without one. */
export async function webgpuAdapterInfo(): Promise<{ vendor: string; architecture: string; description: string } | undefined> {
  const gpu = (globalThis.navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info?: Record<string, string> } | null> } } | undefined)?.gpu
  const adapter = await gpu?.requestAdapter()
  if (adapter == null) return undefined
  const info = adapter.info ?? {}
  return { vendor: info.vendor ?? '', architecture: info.architecture ?? '', description: info.description ?? '' }
}

/** Switches tfjs to `name` ('webgpu', 'webgl' or 'cpu'); throws when the tab cannot run it. */
export async function useBackend(name: 'webgpu' | 'webgl' | 'cpu'): Promise<string> {
  if (!(await tf.setBackend(name))) throw new Error(`the ${name} backend could not be initialised in this tab`)
  await tf.ready()
  return tf.getBackend()
}

/** A model from a directory's config.json text and model.safetensors bytes. */
export function loadModelFromBytes(configJson: string, safetensors: Uint8Array, options: LlamaModelOptions = {}): LlamaModel {
  const config = fromHfConfig(JSON.parse(configJson) as unknown)
  const { tensors } = parseSafetensors(safetensors)
  const weights = new Map([...tensors].map(([name, t]) => [name, t.data]))
  return new LlamaModel(config, weights, options)
}
