/**
 * A swarm with one peer training on WebGPU, in a headless Chromium tab, and two on wasm:
 * every round has all three contributors and ends on one state hash at every peer, bit for
 * bit. Training may run anywhere; the merge runs in each peer's Node process, on the CPU,
 * deterministically (docs/DESIGN.md). The tab peer is a flora peer embedded as the library
 * API allows: its `trainer` hands each round's job to the tab (the agreed weights of the
 * LoRA targets, a fresh adapter's seed) and returns the adapter the tab trained. Skipped,
 * saying why, only where no Chromium exists.
 */
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AdapterSet, ModuleShape } from '../../src/lora/types.js'
import { defaultModelDir } from '../../src/model/bundled.js'
import { saveCheckpoint } from '../../src/model/checkpoint.js'
import { llamaConfig } from '../../src/model/config.js'
import { randomLlamaWeights } from '../../src/model/llama.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { setupPeer } from '../../src/node/setup.js'
import type { Trainer } from '../../src/node/trainer.js'
import { waitForEvent } from '../node/helpers.js'
import { findChromium, type FloraInTab, openWebgpuTab, type WebgpuTab } from '../../scripts/browser-tab.js'

const CONFIG = llamaConfig({ vocabSize: 4096, hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositionEmbeddings: 64, tieWordEmbeddings: true })
const RANKS = [4, 2, 3] // the last one trains in the tab
const ROUNDS = 2
const ROUND = { deadlineMs: 60_000, graceMs: 3000, minPeers: RANKS.length }
const FAST = { localSteps: 2, batchSize: 2, seqLen: 32, evalExamples: 8, trainExamples: 40, lr: 1e-2, backend: 'wasm' as const }
/** The tab peer's own data: a few token sequences. */
const TAB_DATA = [
  [1, 17, 254, 9, 33, 801, 12, 77, 3, 2000, 45, 6],
  [5, 400, 21, 8, 90, 1200, 64, 7, 19, 300],
  [2, 2, 60, 1000, 3000, 11, 4, 4, 8],
]

interface TabJob {
  weights: [string, number[]][]
  shapes: ModuleShape[]
  rank: number
  alpha: number
  rslora: boolean
  seed: number
  seqs: number[][]
}

/** One round of local training, in the tab, on WebGPU (the model is loaded on the first call). */
async function trainRoundInTab(job: TabJob): Promise<{ backend: string; modules: (Omit<AdapterSet['modules'][number], 'loraA' | 'loraB'> & { loraA: number[]; loraB: number[] })[]; loss: number }> {
  const g = globalThis as unknown as { flora: FloraInTab; model?: ReturnType<FloraInTab['loadModelFromBytes']> }
  const flora = g.flora
  if (g.model === undefined) {
    await flora.useBackend('webgpu')
    const [config, bytes] = await Promise.all([fetch('/model/config.json').then((r) => r.text()), fetch('/model/model.safetensors').then((r) => r.arrayBuffer())])
    g.model = flora.loadModelFromBytes(config, new Uint8Array(bytes))
  }
  const model = g.model
  for (const [name, values] of job.weights) model.setBaseWeight(name, Float32Array.from(values))
  model.setAdapter(flora.initAdapter({ shapes: job.shapes, rank: job.rank, alpha: job.alpha, rslora: job.rslora, seed: job.seed }))
  const result = await flora.trainLora(model, job.seqs.map((inputIds) => ({ inputIds, promptLength: 2 })), { steps: 2, batchSize: 2, seqLen: 16, lr: 1e-2, seed: job.seed })
  const adapter = await model.readAdapter()
  model.clearAdapter()
  return {
    backend: flora.tf.getBackend(),
    modules: adapter.modules.map((m) => ({ ...m, loraA: Array.from(m.loraA), loraB: Array.from(m.loraB) })),
    loss: result.losses.reduce((a, b) => a + b, 0) / result.losses.length,
  }
}

const browserPath = findChromium()
if (browserPath === undefined) console.warn('mixed-swarm: skipped: no Chromium (apt-get install -y chromium, or set CHROMIUM_PATH)')

describe.skipIf(browserPath === undefined)('a swarm with a peer training on WebGPU in a browser tab', () => {
  let dir = ''
  let modelDir = ''
  let tab: WebgpuTab | undefined
  const peers: FloraPeer[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flora-mixed-'))
    modelDir = join(dir, 'model')
    await mkdir(modelDir)
    await saveCheckpoint(modelDir, CONFIG, randomLlamaWeights(CONFIG, 'mixed-swarm', 0.05))
    await copyFile(join(defaultModelDir(), 'tokenizer.json'), join(modelDir, 'tokenizer.json'))
    tab = await openWebgpuTab(browserPath as string, modelDir, 'browser-mixed')
  }, 60_000)

  afterAll(async () => {
    await Promise.all(peers.map((p) => p.stop()))
    await tab?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it(`two wasm peers and one WebGPU peer: ${ROUNDS} rounds, 3 contributors each, one state hash at every peer`, async () => {
    const { page, errors } = tab as WebgpuTab
    const backends: string[] = []
    const tabTrainer: Trainer = async (ctx) => {
      ctx.signal.throwIfAborted()
      const job: TabJob = {
        weights: [...ctx.weights].map(([name, w]) => [name, Array.from(w)]),
        shapes: [...ctx.shapes],
        rank: ctx.rank,
        alpha: ctx.alpha,
        rslora: ctx.rslora,
        seed: ctx.seed,
        seqs: TAB_DATA,
      }
      const out = await page.evaluate(trainRoundInTab, job)
      backends.push(out.backend)
      return {
        adapter: { modules: out.modules.map((m) => ({ ...m, loraA: Float32Array.from(m.loraA), loraB: Float32Array.from(m.loraB) })) },
        samples: TAB_DATA.length,
        metrics: { loss: out.loss },
      }
    }
    const setups = await Promise.all(
      RANKS.map((rank, i) => setupPeer({ trainer: 'model', model: modelDir, rank, alpha: 2 * rank, data: `${i}/${RANKS.length}`, round: ROUND, ...FAST, configOnly: i === RANKS.length - 1 })),
    )
    const hashes = RANKS.map(() => new Map<number, string>())
    const contributors = RANKS.map(() => new Map<number, number>())
    for (let i = 0; i < RANKS.length; i++) {
      const inTab = i === RANKS.length - 1
      const peer = await createPeer({
        config: setups[i].config,
        weights: setups[i].weights,
        privateKey: await identityFromSeed(`mixed-swarm-${i}`),
        rank: RANKS[i],
        alpha: 2 * RANKS[i],
        trainer: inTab ? tabTrainer : setups[i].trainer,
        rounds: ROUNDS,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        bootstrap: i === 0 ? [] : [peers[0].multiaddrs()[0]],
      })
      peers.push(peer)
      peer.addEventListener('round:complete', (e) => {
        hashes[i].set(e.detail.round, e.detail.stateHash)
        contributors[i].set(e.detail.round, e.detail.contributors.length)
      })
      await peer.start()
    }
    await Promise.all(peers.map((p) => waitForEvent(p, 'done', () => true, 150_000)))
    expect(errors).toEqual([])
    expect(backends).toEqual(Array(ROUNDS).fill('webgpu'))
    for (let r = 1; r <= ROUNDS; r++) {
      expect(contributors.map((c) => c.get(r))).toEqual(RANKS.map(() => RANKS.length))
      expect(new Set(hashes.map((h) => h.get(r))).size).toBe(1)
    }
    expect(peers[0].head.hash).not.toBe(setups[0].config.genesisStateHash)
  }, 200_000)
})
