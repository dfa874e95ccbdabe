/**
 * The `model` trainer backend on a tiny random checkpoint written here (the bundled
 * tokenizer, 2 layers of hidden 16): in-process peers over loopback TCP agree on every
 * round and report a held-out eval loss; a peer on another base model is refused; the
 * swarm script runs real flora-peer processes with it end to end.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readCheckpoint, saveCheckpoint, savePeftAdapter } from '../../src/model/checkpoint.js'
import { genesisState } from '../../src/node/state.js'
import { initAdapter } from '../../src/lora/init.js'
import { mergeIntoWeightsSync } from '../../src/aggregation/merge.js'
import { llamaConfig, type LlamaConfig } from '../../src/model/config.js'
import { randomLlamaWeights } from '../../src/model/llama.js'
import { SwarmConfigError, swarmIdOf } from '../../src/node/config.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { baseModelHash, checkpointBaseModelHash, parseDataSpec } from '../../src/node/model-trainer.js'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { defaultTrainerBackend, setupPeer, type PeerSetup, type SetupOptions } from '../../src/node/setup.js'
import type { SwarmReport } from '../../scripts/swarm.js'
import { waitForEvent } from './helpers.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs')

const CONFIG: LlamaConfig = llamaConfig({
  vocabSize: 4096, // the bundled tokenizer's
  hiddenSize: 16,
  intermediateSize: 32,
  numLayers: 2,
  numHeads: 2,
  numKvHeads: 1,
  maxPositionEmbeddings: 64,
  tieWordEmbeddings: true,
})

async function writeTinyModel(dir: string, seed: string): Promise<void> {
  await mkdir(dir, { recursive: true })
  await saveCheckpoint(dir, CONFIG, randomLlamaWeights(CONFIG, seed, 0.05))
  await copyFile(join(ROOT, 'models', 'flora-tiny', 'tokenizer.json'), join(dir, 'tokenizer.json'))
  await copyFile(join(ROOT, 'models', 'flora-tiny', 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'))
}

/** Small and fast: a few steps of 2 examples of <= 32 tokens, 8 held-out examples. */
const FAST: Partial<SetupOptions> = { localSteps: 2, batchSize: 2, seqLen: 32, evalExamples: 8, trainExamples: 60, lr: 1e-2, backend: 'wasm' }

let dir: string
let modelA: string
let modelB: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'flora-model-trainer-'))
  modelA = join(dir, 'model-a')
  modelB = join(dir, 'model-b')
  await writeTinyModel(modelA, 'model-trainer-test/a')
  await writeTinyModel(modelB, 'model-trainer-test/b')
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('model trainer: options and identity', () => {
  it('is the default backend', () => {
    expect(defaultTrainerBackend()).toBe('model')
  })

  it('parses --data specs', () => {
    expect(parseDataSpec(undefined)).toEqual({ source: 'wordnet' })
    expect(parseDataSpec('wordnet')).toEqual({ source: 'wordnet' })
    expect(parseDataSpec('1/3')).toEqual({ source: 'wordnet', part: { index: 1, count: 3 } })
    expect(parseDataSpec('wordnet:0/2')).toEqual({ source: 'wordnet', part: { index: 0, count: 2 } })
    expect(parseDataSpec('data/x.jsonl:2/4')).toEqual({ source: 'data/x.jsonl', part: { index: 2, count: 4 } })
    expect(parseDataSpec('data/x.jsonl')).toEqual({ source: 'data/x.jsonl' })
    expect(() => parseDataSpec('3/3')).toThrow(SwarmConfigError)
    expect(parseDataSpec('skills:1/3')).toEqual({ source: 'skills', part: { index: 1, count: 3 } })
  })

  it('--data skills: a shard holds a few task types (non-IID by task), held-out questions are scored by exact match', async () => {
    const setup = await setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, data: 'skills:0/3', ...FAST, trainExamples: undefined })
    try {
      expect(setup.description).toMatch(/shard 0\/3 \(by category, .*\) of the skills suite/)
      expect(setup.description).toMatch(/eval: 8 examples, skills suite, questions about held-out words and sums/)
      // The suite's recipe: LoRA on every linear module unless --targets says otherwise.
      expect(new Set(setup.config.targets.map((t) => t.name.split('.').pop())).size).toBe(7)
      const tasks = [...setup.description.matchAll(/(spell|first-letter|last-letter|length|synonym|kind|add) \d+%/g)].map((m) => m[1])
      expect(tasks.length).toBeGreaterThan(0)
      const score = await setup.evaluate(setup.weights)
      expect(score.loss).toBeGreaterThan(0)
      // A random model answers nothing right; the field is there, as a share.
      expect(score.exactMatch).toBe(0)
    } finally {
      await setup.close?.()
    }
  }, 60_000)

  it('hashes the base model over every tensor, the config and the tokenizer', () => {
    const w = randomLlamaWeights(CONFIG, 'hash')
    const h = baseModelHash(CONFIG, w, 'tok')
    expect(h).toMatch(/^[0-9a-f]{64}$/)
    expect(baseModelHash(CONFIG, new Map(w), 'tok')).toBe(h)
    const flipped = new Map(w)
    const norm = Float32Array.from(w.get('model.norm.weight') as Float32Array)
    new Uint32Array(norm.buffer)[3] ^= 1 // one bit of a non-target tensor
    flipped.set('model.norm.weight', norm)
    expect(baseModelHash(CONFIG, flipped, 'tok')).not.toBe(h)
    expect(baseModelHash(CONFIG, w, 'other tokenizer')).not.toBe(h)
    expect(baseModelHash({ ...CONFIG, ropeTheta: 500000 }, w, 'tok')).not.toBe(h)
  })

  it("hashes a checkpoint streamed tensor by tensor to the same identity as its float32 weights, the peer's base model hash", async () => {
    const tokSha = createHash('sha256').update(await readFile(join(modelA, 'tokenizer.json'))).digest('hex')
    const streamed = await checkpointBaseModelHash(modelA, tokSha)
    expect(streamed).toBe(baseModelHash(CONFIG, (await readCheckpoint(modelA)).weights, tokSha))
    const peer = await setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, configOnly: true, backend: 'wasm' })
    expect(peer.config.baseModelHash).toBe(streamed)
    expect(await checkpointBaseModelHash(modelB, tokSha)).not.toBe(streamed)
  })

  it('refuses a --config written for another base model, and a missing model directory', async () => {
    const a = await setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, configOnly: true, backend: 'wasm' })
    const file = join(dir, 'swarm-a.json')
    await writeFile(file, JSON.stringify(a.config))
    const again = await setupPeer({ trainer: 'model', model: modelA, rank: 4, alpha: 8, configFile: file, configOnly: true, backend: 'wasm' })
    expect(swarmIdOf(again.config)).toBe(swarmIdOf(a.config))
    await expect(setupPeer({ trainer: 'model', model: modelB, rank: 2, alpha: 4, configFile: file, configOnly: true, backend: 'wasm' })).rejects.toThrow(
      /is for another base model/,
    )
    await expect(setupPeer({ trainer: 'model', model: join(dir, 'nope'), rank: 2, alpha: 4, configOnly: true, backend: 'wasm' })).rejects.toThrow(
      /cannot load the base model/,
    )
  })

  it('--init-adapter: the federation starts from the base with the adapter merged in (a swarm of its own), bit for bit as the merge kernel does it', async () => {
    const plain = await setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, configOnly: true, backend: 'wasm' })
    const shapes = plain.config.targets
    const adapter = initAdapter({ shapes, rank: 3, alpha: 6, seed: 'init-adapter-test' })
    // A fresh LoRA has B = 0: give it a real update.
    for (const m of adapter.modules) m.loraB.forEach((_, k) => (m.loraB[k] = Math.sin(k + 1) * 0.01))
    const adapterDir = join(dir, 'init-adapter')
    await savePeftAdapter(adapterDir, adapter)
    const started = await setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, configOnly: true, backend: 'wasm', initAdapter: adapterDir })
    expect(started.config.genesisStateHash).not.toBe(plain.config.genesisStateHash)
    expect(swarmIdOf(started.config)).not.toBe(swarmIdOf(plain.config))
    for (const m of adapter.modules) {
      const expected = Float32Array.from(plain.weights.get(m.name) as Float32Array)
      mergeIntoWeightsSync(expected, m, [{ coef: m.scaling, rank: m.rank, loraA: m.loraA, loraB: m.loraB }])
      expect(started.weights.get(m.name)).toEqual(expected)
    }
    // The shared runtime's base weights are untouched.
    const again = await setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, configOnly: true, backend: 'wasm' })
    expect(again.config.genesisStateHash).toBe(plain.config.genesisStateHash)
    await expect(setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, configOnly: true, backend: 'wasm', initAdapter: join(dir, 'nope') })).rejects.toThrow(/--init-adapter .*nope/)
  })
})

describe('model trainer: in-process peers over loopback TCP', () => {
  const RANKS = [4, 2, 1]
  const ROUNDS = 2
  const round = { deadlineMs: 30_000, graceMs: 3000, minPeers: RANKS.length }
  let setups: PeerSetup[] = []
  let peers: FloraPeer[] = []

  afterAll(async () => {
    await Promise.all(peers.map((p) => p.stop()))
  })

  it(`${RANKS.length} peers (ranks ${RANKS.join(',')}) on disjoint WordNet shards: ${ROUNDS} rounds, identical hashes, eval loss reported`, async () => {
    setups = await Promise.all(
      RANKS.map((rank, i) => setupPeer({ trainer: 'model', model: modelA, rank, alpha: 2 * rank, data: `${i}/${RANKS.length}`, round, ...FAST })),
    )
    // One swarm: the same config (base model hash, genesis, targets) on every peer.
    expect(new Set(setups.map((s) => swarmIdOf(s.config))).size).toBe(1)
    expect(setups[0].config.targets.map((t) => t.name)).toEqual([
      'model.layers.0.self_attn.q_proj',
      'model.layers.0.self_attn.v_proj',
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.self_attn.v_proj',
    ])
    // The shards split the 60-example pool.
    expect(setups.reduce((a, s) => a + s.samples, 0)).toBe(60)
    for (const s of setups) expect(s.description).toMatch(/shard \d\/3 \(by category/)
    const genesisScores = await Promise.all(setups.map((s) => s.evaluate(s.weights)))
    const genesisLoss = genesisScores.map((g) => g.loss)
    expect(Number.isFinite(genesisLoss[0])).toBe(true)
    expect(new Set(genesisLoss).size).toBe(1)
    // Token accuracy of greedy predictions: a share, the same on every peer.
    const acc = genesisScores.map((g) => g.accuracy)
    expect(acc[0]).toBeGreaterThanOrEqual(0)
    expect(acc[0]).toBeLessThanOrEqual(1)
    expect(new Set(acc).size).toBe(1)

    const completes = RANKS.map(() => [] as Array<{ round: number; stateHash: string; contributors: readonly string[]; evalLoss: Promise<number>; trainLoss?: number }>)
    for (let i = 0; i < RANKS.length; i++) {
      const peer = await createPeer({
        config: setups[i].config,
        weights: setups[i].weights,
        privateKey: await identityFromSeed(`model-trainer-${i}`),
        rank: RANKS[i],
        alpha: 2 * RANKS[i],
        trainer: setups[i].trainer,
        rounds: ROUNDS,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        bootstrap: i === 0 ? [] : [peers[0].multiaddrs()[0]],
      })
      peers.push(peer)
      peer.addEventListener('round:complete', (e) => {
        // As the CLI does: evaluate the agreed weights right away (the trainer waits for it).
        completes[i].push({ ...e.detail, evalLoss: setups[i].evaluate(peer.head.weights).then((s) => s.loss), trainLoss: e.detail.metrics.train?.loss })
      })
      await peer.start()
    }
    await Promise.all(peers.map((p) => waitForEvent(p, 'done', () => true, 90_000)))

    const ids = peers.map((p) => p.peerId).sort()
    const losses: number[] = []
    for (let r = 1; r <= ROUNDS; r++) {
      const recs = completes.map((c) => c.find((x) => x.round === r))
      for (const rec of recs) {
        expect(rec).toBeDefined()
        expect([...(rec?.contributors ?? [])].sort()).toEqual(ids)
        expect(rec?.trainLoss).toBeTypeOf('number')
      }
      expect(new Set(recs.map((x) => x?.stateHash)).size).toBe(1)
      const evals = await Promise.all(recs.map((x) => x?.evalLoss as Promise<number>))
      expect(Number.isFinite(evals[0])).toBe(true)
      // Same weights, same held-out set, same kernels: the same number on every peer.
      expect(new Set(evals).size).toBe(1)
      losses.push(evals[0])
    }
    // Training moved the agreed weights (so the eval loss moved too).
    expect(losses[ROUNDS - 1]).not.toBe(genesisLoss[0])
    expect(peers[0].head.hash).not.toBe(setups[0].config.genesisStateHash)
  }, 120_000)

  it('refuses a peer on a different base model (wrong-swarm: base model and genesis hashes differ)', async () => {
    const stranger = await setupPeer({ trainer: 'model', model: modelB, rank: 2, alpha: 4, round, configOnly: true, backend: 'wasm' })
    const mine = await setupPeer({ trainer: 'model', model: modelA, rank: 2, alpha: 4, round, configOnly: true, backend: 'wasm' })
    expect(stranger.config.baseModelHash).not.toBe(mine.config.baseModelHash)
    const a = await createPeer({ config: mine.config, weights: mine.weights, rank: 2, trainer: mine.trainer, listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await createPeer({ config: stranger.config, weights: stranger.weights, rank: 2, trainer: stranger.trainer, listen: ['/ip4/127.0.0.1/tcp/0'] })
    peers.push(a, b)
    await a.start()
    await b.start()
    const refused = waitForEvent(a, 'peer:rejected', (d) => d.reason === 'wrong-swarm' && d.peerId === b.peerId)
    await b.dial(a.multiaddrs()[0]).catch(() => undefined)
    const detail = await refused
    expect(detail.detail).toMatch(/config differs in: .*baseModelHash/)
    expect(a.service.members).not.toContain(b.peerId)
  }, 60_000)
})

describe('model trainer: npm run swarm with real flora-peer processes', () => {
  it('3 processes, ranks 4,2,1, a JSONL data set split by category: hashes agree, eval loss per round in report.json', async () => {
    const out = join(dir, 'swarm')
    const cats = ['animal', 'plant', 'tool', 'food']
    const records = Array.from({ length: 24 }, (_, i) => ({
      instruction: `Define the word w${i}.`,
      context: '',
      response: `a ${cats[i % 4]} called w${i}`,
      category: cats[i % 4],
    }))
    const data = join(dir, 'dolly.jsonl')
    await writeFile(data, records.map((r) => JSON.stringify(r)).join('\n') + '\n')
    const args = [
      join(ROOT, 'scripts', 'swarm.ts'),
      '--model', modelA,
      '--data', data,
      '--peers', '3',
      '--rounds', '2',
      '--ranks', '4,2,1',
      '--local-steps', '2',
      '--eval-examples', '6',
      '--peer-args', `--batch-size 2 --seq-len 32 --backend wasm --eval-data ${data}`,
      '--out', out,
      '--no-progress',
    ]
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => {
      const child = spawn(process.execPath, [TSX, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
      let so = ''
      let se = ''
      child.stdout.on('data', (d: Buffer) => (so += d.toString()))
      child.stderr.on('data', (d: Buffer) => (se += d.toString()))
      child.on('exit', (c) => res({ code: c, stdout: so, stderr: se }))
    })
    expect(code, `${stdout}\n${stderr}`).toBe(0)
    // Piped: the text summary on stderr, the report as one JSON line on stdout.
    expect(stderr).toMatch(/round 2: hashes agree/)
    expect(stdout).toMatch(/"event":"swarm:report"/)
    expect(stderr).toMatch(/peer \d finished round 1: state [0-9a-f]{12}, 3 contributors, eval loss \d/)
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8')) as SwarmReport
    expect(report.options.trainer).toBe('model')
    expect(report.agreement).toBe(true)
    expect(report.allFinished).toBe(true)
    expect(report.genesis.evalLoss).toBeTypeOf('number')
    for (const r of report.rounds) {
      expect(new Set(Object.values(r.hashes)).size).toBe(1)
      const evals = Object.values(r.evalLoss)
      expect(evals).toHaveLength(3)
      for (const l of evals) expect(l).toBeTypeOf('number')
      expect(new Set(evals).size).toBe(1)
      for (const l of Object.values(r.trainLoss)) expect(l).toBeTypeOf('number')
    }
    // Disjoint shards of the 24 records.
    expect(report.peers.reduce((a, p) => a + (p.samples ?? 0), 0)).toBe(24)
    // The federated model to take home: an HF model dir whose target weights are the agreed
    // ones (it loads and hashes to the last round's state), and the cumulative PEFT adapter.
    expect(stderr).toMatch(/federated model: /)
    const fed = JSON.parse(await readFile(join(out, 'federated', 'flora.json'), 'utf8')) as { round: number; stateHash: string }
    const last = report.rounds.at(-1)
    expect(fed.round).toBe(2)
    expect(fed.stateHash).toBe(Object.values(last?.hashes ?? {})[0])
    const exported = await readCheckpoint(join(out, 'federated', 'model'))
    const targets = new Map([...exported.weights].filter(([k]) => /(q_proj|v_proj)\.weight$/.test(k)).map(([k, v]) => [k.replace(/\.weight$/, ''), v]))
    const shapes = [...targets.keys()].map((name) => {
      const w = exported.weights.get(`${name}.weight`) as Float32Array
      const inF = exported.config.hiddenSize
      return { name, inFeatures: inF, outFeatures: w.length / inF }
    })
    expect(genesisState(targets, shapes).hash).toBe(fed.stateHash)
    const adapterConfig = JSON.parse(await readFile(join(out, 'federated', 'adapter', 'adapter_config.json'), 'utf8')) as { r: number; base_model_name_or_path: string }
    expect(adapterConfig.base_model_name_or_path).not.toMatch(/^\//)
  }, 150_000)
})
