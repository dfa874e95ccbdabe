/**
 * `flora train` / `flora generate` end to end on a tiny random checkpoint and a tiny
 * JSONL file written by the test (no bundled model needed).
 */
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { countPieces, tokenizerJson, trainByteLevelBpe } from '../../src/model/data/bpe.js'
import { loadModel, loadPeftAdapter, saveCheckpoint } from '../../src/model/checkpoint.js'
import { llamaConfig } from '../../src/model/config.js'
import { randomLlamaWeights } from '../../src/model/llama.js'
import { main } from '../../src/model/cli.js'
import { runTrain, TrainCommandError } from '../../src/model/train-command.js'
import { TrainingAbortedError } from '../../src/model/trainer.js'
import { tempDir } from './helpers.js'

const WORDS = ['cat', 'dog', 'sun', 'tree', 'fish', 'bird', 'rain', 'stone', 'milk', 'ship', 'door', 'hand']
const RECORDS = WORDS.map((w, i) =>
  i % 2 === 0
    ? { instruction: `Define the word ${w}.`, input: '', output: `a ${w} is a ${w}` }
    : { instruction: `Define the word ${w}.`, context: 'short', response: `the ${w} thing`, category: 'misc' },
)
const TEXT = RECORDS.map((r) => JSON.stringify(r)).join(' ') + ' ### Instruction: Response: Input: '

/** Collects what is written; not a TTY, so progress comes as JSON lines. */
function sink(): { write(s: string): boolean; text: () => string; isTTY: false } {
  const chunks: string[] = []
  return { write: (s: string) => (chunks.push(s), true), text: () => chunks.join(''), isTTY: false }
}

describe('flora train (runTrain) and flora generate', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let modelDir: string
  let data: string
  beforeAll(async () => {
    ;({ dir, cleanup } = await tempDir())
    modelDir = path.join(dir, 'model')
    await mkdir(modelDir)
    const bpe = trainByteLevelBpe(countPieces(TEXT), { vocabSize: 300, specialTokens: ['<unk>', '<s>', '</s>', '<pad>'] })
    await writeFile(path.join(modelDir, 'tokenizer.json'), tokenizerJson(bpe))
    const config = llamaConfig({ vocabSize: bpe.vocab.length, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositionEmbeddings: 96 })
    await saveCheckpoint(modelDir, config, randomLlamaWeights(config, 'train-command-test', 0.05))
    data = path.join(dir, 'data.jsonl')
    await writeFile(data, RECORDS.map((r) => JSON.stringify(r)).join('\n') + '\n')
  })
  afterAll(async () => cleanup?.())

  const base = () => ({ model: modelDir, backend: 'wasm' as const, batchSize: 4, seqLen: 48, samples: 1 })

  it('trains, reports held-out loss before and after, saves a reloadable PEFT adapter (and the merged model)', async () => {
    const out = sink()
    const err = sink()
    const adapterDir = path.join(dir, 'adapter')
    // Eval on the training file itself: a few high-lr steps must lower it.
    const r = await runTrain({ ...base(), data, evalData: data, rank: 4, steps: 6, lr: 2e-2, out: adapterDir, merge: true, stdout: out, stderr: err })
    expect(r.before.loss).toBeGreaterThan(0)
    expect(r.after.loss).toBeLessThan(r.before.loss)
    expect(r.train.losses).toHaveLength(6)
    expect(r.data).toMatchObject({ train: WORDS.length, eval: WORDS.length })
    expect(r.adapter).toMatchObject({ rank: 4, alpha: 8, scaling: 2, targets: ['q_proj', 'v_proj'], modules: 4 })
    expect(r.samples).toHaveLength(1)
    const text = out.text()
    expect(text).toMatch(/backend {3}wasm/)
    expect(text).toMatch(/eval before {2}loss \d+\.\d{4} {2}perplexity/)
    expect(text).toMatch(/eval after {3}loss \d+\.\d{4}/)
    expect(text).toContain('reference:')
    // Not a TTY: one JSON progress line per step on stderr.
    const steps = err.text().trim().split('\n').map((l) => JSON.parse(l) as { event: string; step: number })
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6])

    expect((await readdir(adapterDir)).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'flora_train.json', 'merged'])
    const model = await loadModel(modelDir)
    const adapter = await loadPeftAdapter(adapterDir, model.moduleShapes())
    model.dispose()
    expect(adapter.modules.map((m) => m.name)).toEqual([
      'model.layers.0.self_attn.q_proj',
      'model.layers.0.self_attn.v_proj',
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.self_attn.v_proj',
    ])
    expect(adapter.modules.every((m) => m.rank === 4 && m.loraB.some((x) => x !== 0))).toBe(true)
    const summary = JSON.parse(await readFile(path.join(adapterDir, 'flora_train.json'), 'utf8')) as { before: { loss: number }; after: { loss: number } }
    expect(summary.after.loss).toBeCloseTo(r.after.loss, 10)
    // The merged model is a model directory that loads.
    const merged = await loadModel(path.join(adapterDir, 'merged'))
    merged.dispose()

    // flora generate with the adapter: prints text, exit 0.
    const gout = sink()
    const code = await main(['node', 'flora', 'generate', '--model', modelDir, '--adapter', adapterDir, '--prompt', 'Define the word cat.', '-n', '5', '--backend', 'wasm'], {
      stdout: gout,
      stderr: sink(),
      signal: new AbortController().signal,
    })
    expect(code).toBe(0)
    expect(gout.text().endsWith('\n')).toBe(true)
  })

  it('--init-adapter starts from a saved adapter: its rank, alpha and targets, and its held-out loss as the "before"', async () => {
    const first = path.join(dir, 'init-first')
    const a = await runTrain({ ...base(), data, evalData: data, rank: 2, alpha: 3, targets: ['q_proj', 'k_proj'], steps: 3, lr: 2e-2, samples: 0, out: first, stdout: sink(), stderr: sink() })
    const b = await runTrain({ ...base(), data, evalData: data, initAdapter: first, steps: 1, samples: 0, stdout: sink(), stderr: sink() })
    expect(b.adapter).toMatchObject({ rank: 2, alpha: 3, targets: ['k_proj', 'q_proj'] })
    expect(b.before.loss).toBeCloseTo(a.after.loss, 5)
    await expect(runTrain({ ...base(), data, initAdapter: path.join(dir, 'nope'), stdout: sink(), stderr: sink() })).rejects.toThrow(/--init-adapter .*nope/)
  })

  it('--data skills: held-out questions about held-out words, scored by exact match before and after', async () => {
    const out = sink()
    const r = await runTrain({ ...base(), data: 'skills', maxTrain: 40, maxEval: 6, steps: 1, samples: 0, json: true, stdout: out, stderr: sink() })
    expect(r.data).toMatchObject({ train: 40, eval: 6 })
    // The suite's recipe (SKILLS_RECIPE): every linear module, lr 3e-3, unless flags say otherwise.
    expect(r.adapter.targets).toHaveLength(7)
    const evals = out.text().trim().split('\n').map((l) => JSON.parse(l) as { event: string; exactMatch?: number }).filter((e) => e.event === 'eval')
    expect(evals).toHaveLength(2)
    for (const e of evals) {
      expect(e.exactMatch).toBeGreaterThanOrEqual(0)
      expect(e.exactMatch).toBeLessThanOrEqual(1)
    }
  })

  it('holds out a seeded 5% of --data, and writes JSON lines with --json', async () => {
    const out = sink()
    const r = await runTrain({ ...base(), data, steps: 2, samples: 0, json: true, stdout: out, stderr: sink() })
    expect(r.data).toMatchObject({ train: WORDS.length - 1, eval: 1 })
    expect(r.saved).toBeUndefined()
    const events = out.text().trim().split('\n').map((l) => (JSON.parse(l) as { event: string }).event)
    expect(events).toEqual(['backend', 'model', 'adapter', 'data', 'eval', 'train_step', 'train_step', 'train_done', 'eval', 'done'])
    const again = await runTrain({ ...base(), data, steps: 1, samples: 0, stdout: sink(), stderr: sink() })
    expect(again.before.loss).toBe(r.before.loss) // same seed, same holdout
  })

  it('flora train writes JSON lines on stdout when stdout is not a terminal, and nothing on stderr', async () => {
    const out = sink()
    const err = sink()
    const code = await main(['node', 'flora', 'train', '--model', modelDir, '--data', data, '--steps', '1', '--seq-len', '32', '--samples', '0', '--no-save'], { stdout: out, stderr: err, signal: new AbortController().signal })
    expect(code, err.text()).toBe(0)
    const events = out.text().trim().split('\n').map((l) => (JSON.parse(l) as { event: string }).event)
    expect(events).toEqual(['backend', 'model', 'adapter', 'data', 'eval', 'train_step', 'train_done', 'eval', 'done'])
    expect(err.text()).toBe('')
  })

  it('flora train --config FILE: option values from JSON, flags and FLORA_* variables win, bad keys and values refused', async () => {
    const cfg = path.join(dir, 'train.json')
    await writeFile(cfg, JSON.stringify({ model: modelDir, data, rank: 3, 'seq-len': 32, steps: 1, samples: 0, save: false, targets: ['q_proj', 'v_proj'] }))
    const adapterOf = async (argv: string[]): Promise<{ rank: number; targets: string[] }> => {
      const out = sink()
      const err = sink()
      expect(await main(['node', 'flora', 'train', ...argv], { stdout: out, stderr: err, signal: new AbortController().signal }), err.text()).toBe(0)
      const ev = out.text().trim().split('\n').map((l) => JSON.parse(l) as { event: string; rank: number; targets: string[] }).find((e) => e.event === 'adapter')
      return { rank: ev?.rank ?? -1, targets: ev?.targets ?? [] }
    }
    expect(await adapterOf(['--config', cfg])).toEqual({ rank: 3, targets: ['q_proj', 'v_proj'] })
    expect((await adapterOf(['--config', cfg, '--rank', '2'])).rank).toBe(2)
    process.env.FLORA_RANK = '5'
    try {
      expect((await adapterOf(['--config', cfg])).rank).toBe(5)
    } finally {
      delete process.env.FLORA_RANK
    }
    const refused = async (content: unknown): Promise<string> => {
      await writeFile(cfg, JSON.stringify(content))
      const err = sink()
      expect(await main(['node', 'flora', 'train', '--config', cfg], { stdout: sink(), stderr: err, signal: new AbortController().signal })).toBe(2)
      return err.text()
    }
    expect(await refused({ rnak: 3 })).toMatch(/--config .*train\.json: unknown option "rnak" \(known: .*rank/)
    expect(await refused({ rank: 0 })).toMatch(/"rank": --rank must be an integer >= 1/)
    expect(await refused({ backend: 'gpu' })).toMatch(/"backend" must be one of auto, /)
    expect(await refused({ save: 'no' })).toMatch(/"save" must be true or false/)
    expect(await refused([1, 2])).toMatch(/expected a JSON object/)
  })

  it('stops on abort and saves nothing', async () => {
    const ctl = new AbortController()
    const adapterDir = path.join(dir, 'aborted')
    const run = runTrain({ ...base(), data, steps: 50, out: adapterDir, signal: ctl.signal, onStep: (i) => i.step === 2 && ctl.abort(), stdout: sink(), stderr: sink() })
    await expect(run).rejects.toBeInstanceOf(TrainingAbortedError)
    await expect(run).rejects.toMatchObject({ stepsCompleted: 2 })
    expect(existsSync(adapterDir)).toBe(false)
    expect((await readdir(dir)).filter((f) => f.startsWith('aborted'))).toEqual([])
  })

  it('rejects bad options and paths with clear errors', async () => {
    const io = { stdout: sink(), stderr: sink() }
    await expect(runTrain({ ...base(), data, rank: 0, ...io })).rejects.toThrow(/--rank must be >= 1 \(got 0\)/)
    await expect(runTrain({ ...base(), data, lr: -1, ...io })).rejects.toThrow(/--lr must be > 0/)
    await expect(runTrain({ ...base(), data, targets: ['q_proj', 'nope'], ...io })).rejects.toThrow(/--targets unknown module "nope"/)
    await expect(runTrain({ ...base(), data, merge: true, ...io })).rejects.toThrow(/--merge needs --out/)
    await expect(runTrain({ ...base(), data: path.join(dir, 'missing.jsonl'), ...io })).rejects.toThrow(/--data .*missing\.jsonl: no such file \(expected 'wordnet' or a JSONL file/)
    await expect(runTrain({ ...base(), model: path.join(dir, 'nope'), data, ...io })).rejects.toThrow(/--model .*nope: no such directory/)
    await expect(runTrain({ ...base(), data, evalData: dir, ...io })).rejects.toThrow(/--eval-data .*: is a directory/)
    await expect(runTrain({ ...base(), data, seqLen: 500, steps: 1, ...io })).rejects.toThrow(/--seq-len 500 exceeds the model's max_position_embeddings \(96\)/)
    await expect(runTrain({ ...base(), data, out: modelDir, ...io })).rejects.toThrow(/--out .*: exists and is not an adapter directory/)
    await expect(runTrain({ ...base(), data, rank: 0, ...io })).rejects.toBeInstanceOf(TrainCommandError)
    const bad = path.join(dir, 'bad.jsonl')
    await writeFile(bad, '{"instruction": "x", "output": "y"}\n{"prompt": "no"}\n')
    await expect(runTrain({ ...base(), data: bad, steps: 1, ...io })).rejects.toThrow(/bad\.jsonl:2: unknown record format/)

    // The CLI: usage errors exit 2 with the message on stderr.
    const err = sink()
    expect(await main(['node', 'flora', 'train', '--steps', 'many'], { stdout: sink(), stderr: err, signal: new AbortController().signal })).toBe(2)
    expect(err.text()).toMatch(/--steps must be an integer >= 1/)
    const err2 = sink()
    expect(await main(['node', 'flora', 'train', '--model', modelDir, '--data', path.join(dir, 'x.jsonl')], { stdout: sink(), stderr: err2, signal: new AbortController().signal })).toBe(2)
    expect(err2.text()).toMatch(/^flora: --data .*x\.jsonl: no such file/)
    expect(await main(['node', 'flora', 'train', '--backend', 'gpu'], { stdout: sink(), stderr: sink(), signal: new AbortController().signal })).toBe(2)
    // Options come from FLORA_* variables too (checked the same way), as for flora-peer.
    const err3 = sink()
    process.env.FLORA_STEPS = 'many'
    try {
      expect(await main(['node', 'flora', 'train'], { stdout: sink(), stderr: err3, signal: new AbortController().signal })).toBe(2)
    } finally {
      delete process.env.FLORA_STEPS
    }
    expect(err3.text()).toMatch(/value 'many' from env 'FLORA_STEPS' is invalid\. --steps must be an integer >= 1/)
  })
})
