/**
 * Writes a random checkpoint of a real model's shapes in Hugging Face layout (config.json,
 * safetensors shards + model.safetensors.index.json), for the loading and training
 * benchmarks of large models (no download needed).
 *
 *   npx tsx bench/make-checkpoint.ts --config tinyllama-1.1b --out /tmp/tinyllama [--dtype BF16] [--shard-mb 1024]
 *   npx tsx bench/make-checkpoint.ts --config smollm2-135m --tokenizer models/flora-tiny --out /tmp/smol135
 *
 * --tokenizer DIR takes DIR's tokenizer (and its vocabulary size, and bos/eos ids), so the
 * checkpoint runs where a tokenizer is needed (flora train, npm run swarm -- --model).
 */
import { CONFIGS } from './model-shapes.js'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { saveCheckpoint } from '../src/model/checkpoint.js'
import { fromHfConfig, llamaConfig } from '../src/model/config.js'
import { randomLlamaWeights } from '../src/model/llama.js'
import type { SafetensorsDType } from '../src/model/safetensors.js'

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? process.argv[i + 1] : fallback
  if (v === undefined) throw new Error(`--${name} is required`)
  return v
}

const name = arg('config', 'tinyllama-1.1b')
const shapes = CONFIGS[name]
if (shapes === undefined) throw new Error(`unknown --config ${name} (${Object.keys(CONFIGS).join(', ')})`)
const tokenizerDir = process.argv.includes('--tokenizer') ? arg('tokenizer') : undefined
const vocab = tokenizerDir !== undefined ? fromHfConfig(JSON.parse(readFileSync(join(tokenizerDir, 'config.json'), 'utf8'))) : undefined
const config = vocab === undefined ? shapes : llamaConfig({ ...shapes, vocabSize: vocab.vocabSize, bosTokenId: vocab.bosTokenId, eosTokenId: vocab.eosTokenId, padTokenId: vocab.padTokenId })
const out = arg('out')
const dtype = arg('dtype', 'BF16') as SafetensorsDType
const t0 = performance.now()
const weights = randomLlamaWeights(config, `checkpoint-${name}`)
await saveCheckpoint(out, config, weights, { dtype, maxShardBytes: Number(arg('shard-mb', '1024')) * 2 ** 20, tokenizerDir })
process.stdout.write(`wrote ${name} (${dtype}) to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`)
