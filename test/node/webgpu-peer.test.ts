/**
 * A swarm of three flora-peer processes, one of which trains on WebGPU in Node (`--backend
 * webgpu`, the `webgpu` package's Dawn on Chromium's SwiftShader Vulkan driver: no GPU here)
 * and two on wasm: every round has all three contributors and every peer's records hold the
 * same chain, bit for bit. Training runs on any backend; the merge runs on the CPU,
 * deterministically. Skipped, saying why, only where no Chromium ships SwiftShader.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { defaultModelDir } from '../../src/model/bundled.js'
import { saveCheckpoint } from '../../src/model/checkpoint.js'
import { llamaConfig } from '../../src/model/config.js'
import { randomLlamaWeights } from '../../src/model/llama.js'
import { swiftshaderVulkanEnv } from '../../scripts/software-webgpu.js'
import { live, peerProcess, type PeerProcess } from './peer-process.js'

const CONFIG = llamaConfig({ vocabSize: 4096, hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositionEmbeddings: 64, tieWordEmbeddings: true })
const BACKENDS = ['wasm', 'wasm', 'webgpu'] as const
const ROUNDS = 2
const FAST = ['--local-steps', '2', '--batch-size', '2', '--seq-len', '32', '--eval-examples', '8', '--train-examples', '40', '--lr', '0.01']

const swiftshader = swiftshaderVulkanEnv()
if (swiftshader === undefined) console.warn('webgpu-peer: skipped: no Chromium with SwiftShader (apt-get install -y chromium)')

describe.skipIf(swiftshader === undefined)('a swarm with a flora-peer process training on WebGPU in Node', () => {
  afterEach(() => {
    for (const c of live) if (c.exitCode == null && c.signalCode == null) c.kill('SIGKILL')
    live.clear()
  })

  it(`two wasm peers and one webgpu peer: ${ROUNDS} rounds, 3 contributors each, one chain at every peer`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-webgpu-peer-'))
    try {
      const modelDir = join(dir, 'model')
      await saveCheckpoint(modelDir, CONFIG, randomLlamaWeights(CONFIG, 'webgpu-peer', 0.05))
      await copyFile(join(defaultModelDir(), 'tokenizer.json'), join(modelDir, 'tokenizer.json'))
      const start = (i: number, bootstrap?: string): PeerProcess =>
        peerProcess(
          [
            '--trainer', 'model', '--model', modelDir, '--backend', BACKENDS[i],
            '--rounds', String(ROUNDS), '--min-peers', '3', '--deadline', '120000', '--grace', '3000',
            ...FAST,
            '--data', `${i}/3`, '--rank', String(2 + i),
            '--identity', join(dir, `peer-${i}.key`), '--state-dir', join(dir, `peer-${i}.state`), '--records', join(dir, `records-${i}.jsonl`),
            '--listen', '/ip4/127.0.0.1/tcp/0',
            ...(bootstrap !== undefined ? ['--bootstrap', bootstrap] : []),
          ],
          BACKENDS[i] === 'webgpu' ? swiftshader : {},
        )
      const first = start(0)
      const addr = ((await first.until((e) => e.event === 'listening')).multiaddrs as string[])[0]
      const procs = [first, start(1, addr), start(2, addr)]
      const codes = await Promise.all(procs.map((p) => p.exit))
      codes.forEach((code, i) => expect(code, procs[i].stderr.slice(-3000)).toBe(0))
      // Each peer logged what it trains on.
      expect(procs[2].stderr).toMatch(/tfjs webgpu \(google swiftshader/)
      expect(procs[0].stderr).toMatch(/tfjs wasm/)
      const chains = await Promise.all(
        procs.map(async (_, i) =>
          (await readFile(join(dir, `records-${i}.jsonl`), 'utf8'))
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as { round: number; stateHash: string; contributors: string[] }),
        ),
      )
      expect(chains[0].map((r) => r.round)).toEqual([1, 2])
      expect(chains[0].map((r) => r.contributors.length)).toEqual([3, 3])
      for (const c of chains.slice(1)) expect(c.map((r) => r.stateHash)).toEqual(chains[0].map((r) => r.stateHash))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }, 240_000)
})
