/**
 * Writes a random checkpoint of a real model's shapes in Hugging Face layout (config.json,
 * safetensors shards + model.safetensors.index.json), for the loading and training
 * benchmarks of large models (no download needed).
 *
 *   npx tsx bench/make-checkpoint.ts --config tinyllama-1.1b --out /tmp/tinyllama [--dtype BF16] [--shard-mb 1024]
 */
import { CONFIGS } from './model-shapes.js'
import { saveCheckpoint } from '../src/model/checkpoint.js'
import { randomLlamaWeights } from '../src/model/llama.js'
import type { SafetensorsDType } from '../src/model/safetensors.js'

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? process.argv[i + 1] : fallback
  if (v === undefined) throw new Error(`--${name} is required`)
  return v
}

const name = arg('config', 'tinyllama-1.1b')
const config = CONFIGS[name]
if (config === undefined) throw new Error(`unknown --config ${name} (${Object.keys(CONFIGS).join(', ')})`)
const out = arg('out')
const dtype = arg('dtype', 'BF16') as SafetensorsDType
const t0 = performance.now()
const weights = randomLlamaWeights(config, `checkpoint-${name}`)
await saveCheckpoint(out, config, weights, { dtype, maxShardBytes: Number(arg('shard-mb', '1024')) * 2 ** 20 })
process.stdout.write(`wrote ${name} (${dtype}) to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`)
