/**
 * The bundled base model (models/flora-tiny, pretrained by scripts/pretrain.py):
 *
 * - the TypeScript Llama reproduces the logits of an independent implementation (the
 *   PyTorch model of scripts/pretrain.py, run in float64 on the same F16-rounded weights,
 *   test/fixtures/flora-tiny-logits.json). Both sides use exactly the same weights, so the
 *   only difference is the tfjs float32 arithmetic: with logits of magnitude ~10-20 and dot
 *   products of length <= 512, float32 rounding gives errors around 1e-5 (8e-6 measured on
 *   the wasm backend), while any convention mismatch (RoPE pairing, GQA head mapping, norm
 *   eps, tying) moves logits by O(0.1..1). 1e-3 absolute leaves ~100x headroom for other
 *   backends' float32 kernels and is still two orders of magnitude below a real bug.
 * - it has actually learned something: the held-out (eval split) WordNet loss is far below
 *   the ln(4096) = 8.32 of a uniform guess.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { loadModel } from '../../src/model/checkpoint.js'
import { tokenizeExample } from '../../src/model/data/template.js'
import { wordnetTask } from '../../src/model/data/wordnet.js'
import type { LlamaModel } from '../../src/model/llama.js'
import { LlamaTokenizer } from '../../src/model/tokenizer.js'
import { evaluate } from '../../src/model/trainer.js'
import { useWasm } from './helpers.js'

const MODEL_DIR = fileURLToPath(new URL('../../models/flora-tiny/', import.meta.url))
const FIXTURE = fileURLToPath(new URL('../fixtures/flora-tiny-logits.json', import.meta.url))
const TOL = 1e-3

interface Fixture {
  prompt: string
  inputIds: number[]
  lastTop10: { ids: number[]; logits: number[] }
  sliceVocab: [number, number]
  logitsSlice: number[][]
  logsumexp: number[]
}

const fixture = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Fixture
let model: LlamaModel
let tok: LlamaTokenizer

beforeAll(async () => {
  await useWasm()
  model = await loadModel(MODEL_DIR)
  tok = await LlamaTokenizer.fromDir(MODEL_DIR)
})

function maxAbsDiff(a: readonly number[], b: readonly number[]): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)))
  return m
}

describe('bundled model models/flora-tiny', () => {
  it('has the expected config and special tokens', () => {
    expect(model.config.vocabSize).toBe(tok.vocabSize)
    expect(model.config.tieWordEmbeddings).toBe(true)
    expect([tok.bosId, tok.eosId, tok.padId]).toEqual([1, 2, 3])
  })

  it('matches the independent PyTorch reference logits', () => {
    const ids = [tok.bosId as number, ...tok.encode(fixture.prompt)]
    expect(ids).toEqual(fixture.inputIds)
    const t = ids.length
    const v = model.config.vocabSize
    const input = tf.tensor2d([ids], [1, t], 'int32')
    const out = model.forward(input)
    const logits = out.dataSync() as Float32Array
    input.dispose()
    out.dispose()
    const [s0, s1] = fixture.sliceVocab
    let worst = 0
    for (let p = 0; p < t; p++) {
      const row = Array.from(logits.subarray(p * v + s0, p * v + s1))
      worst = Math.max(worst, maxAbsDiff(row, fixture.logitsSlice[p] as number[]))
      // logsumexp covers every vocabulary entry of the row
      const full = logits.subarray(p * v, (p + 1) * v)
      let mx = -Infinity
      for (const x of full) mx = Math.max(mx, x)
      let s = 0
      for (const x of full) s += Math.exp(x - mx)
      worst = Math.max(worst, Math.abs(mx + Math.log(s) - (fixture.logsumexp[p] as number)))
    }
    const last = logits.subarray((t - 1) * v, t * v)
    const top = fixture.lastTop10.ids.map((id) => last[id] as number)
    worst = Math.max(worst, maxAbsDiff(top, fixture.lastTop10.logits))
    let argmax = 0
    for (let i = 1; i < v; i++) if ((last[i] as number) > (last[argmax] as number)) argmax = i
    expect(argmax).toBe(fixture.lastTop10.ids[0])
    expect(worst).toBeLessThan(TOL)
  })

  it('has a held-out WordNet loss far below a uniform guess', async () => {
    const task = wordnetTask({ maxTrain: 0, maxEval: 16 })
    const examples = task.eval.map((ex) => {
      const t = tokenizeExample(ex, tok, 128)
      return { inputIds: t.inputIds, promptLength: t.promptLength }
    })
    const r = await evaluate(model, examples, { seqLen: 128, batchSize: 8, padId: tok.padId })
    expect(Number.isFinite(r.loss)).toBe(true)
    expect(r.loss).toBeLessThan(0.75 * Math.log(model.config.vocabSize))
  })
})
