/**
 * Which native kernels the wasm backend's patched kernels and the fused ops use: state only,
 * with no Node import, so the model layer (llama.ts, kernels.ts) also bundles for a browser
 * tab, where no addon exists. backend.ts loads the addon and sets it here.
 */
import * as tf from '@tensorflow/tfjs'
import type { NativeKernels } from './native.js'

let patchesInstalled = false
let native: NativeKernels | undefined

/**
 * Route the patched wasm BatchMatMul and the fused ops (kernels.ts) through `kernels`, or
 * back to XNNPACK and the JS loops with `undefined`. selectBackend sets it; tests and
 * benchmarks switch it.
 */
export function setNativeKernels(kernels: NativeKernels | undefined): void {
  native = kernels
}

/** The native kernels set by setNativeKernels, whether or not the wasm backend is active. */
export function nativeKernelsSet(): NativeKernels | undefined {
  return native
}

/** Records that the wasm kernel patches (backend.ts) are installed. */
export function markWasmPatchesInstalled(): void {
  patchesInstalled = true
}

export function wasmPatchesInstalled(): boolean {
  return patchesInstalled
}

/** The native kernels when they run on the active backend, else undefined. */
export function activeNativeKernels(): NativeKernels | undefined {
  return patchesInstalled && tf.getBackend() === 'wasm' ? native : undefined
}

/** True when matmuls on the active backend run on the native GEMM. */
export function nativeKernelsActive(): boolean {
  return activeNativeKernels() !== undefined
}
