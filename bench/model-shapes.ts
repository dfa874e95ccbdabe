/** Shapes of real models, for benchmarks with random weights (no download needed). */
import { llamaConfig, type LlamaConfig } from '../src/model/config.js'

export const CONFIGS: Record<string, LlamaConfig> = {
  // HuggingFaceTB/SmolLM2-135M's shapes.
  'smollm2-135m': llamaConfig({ vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, maxPositionEmbeddings: 2048, tieWordEmbeddings: true, ropeTheta: 100000 }),
  // TinyLlama/TinyLlama-1.1B's shapes.
  'tinyllama-1.1b': llamaConfig({ vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKvHeads: 4, maxPositionEmbeddings: 2048 }),
}

/** Rounds every value to bf16 in place (round to nearest even): the values a BF16 checkpoint holds. */
export function roundToBf16InPlace(x: Float32Array): void {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length)
  for (let i = 0; i < u.length; i++) u[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) & 0xffff0000
}
