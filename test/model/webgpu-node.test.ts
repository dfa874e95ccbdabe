/**
 * `--backend webgpu` in Node, through the optional `webgpu` package (Dawn):
 *  - where no adapter exists (this machine has no GPU and no Vulkan loader), asking for it by
 *    name fails with the reason, and `auto` moves on to the next backend, saying why;
 *  - a software adapter (SwiftShader) is never taken by `auto`, but is by name;
 *  - on an adapter (Chromium's SwiftShader Vulkan driver, in a child process: the loader is
 *    found through LD_LIBRARY_PATH, read at process start), the logits, the LoRA gradients and
 *    a few training steps agree with wasm within the tolerances below, on the bundled model
 *    and on a random checkpoint with grouped-query attention.
 * The adapter tests are skipped, saying why, only where no Chromium ships SwiftShader.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { defaultModelDir } from '../../src/model/bundled.js'
import { saveCheckpoint } from '../../src/model/checkpoint.js'
import { llamaConfig } from '../../src/model/config.js'
import { randomLlamaWeights } from '../../src/model/llama.js'
import { findVulkanLoader, isSoftwareAdapter } from '../../src/model/webgpu-node.js'
import { swiftshaderVulkanEnv } from '../../scripts/software-webgpu.js'
import { runJob, type WebgpuJob, type WebgpuJobResult } from './webgpu-job.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs')

/** Tolerances (float32 on both sides, summed in other orders): logits and losses max abs; gradients max abs relative to the largest entry; the trained adapter relative L2. */
const LOGIT_TOL = 1e-3
const LOSS_TOL = 1e-3
const GRAD_TOL = 1e-3
const ADAPTER_TOL = 1e-3

const SEQS = [
  [1, 17, 254, 9, 33, 801, 12, 77, 3, 2000, 45, 6],
  [5, 400, 21, 8, 90, 1200, 64, 7, 19, 300],
]
const JOB = { seqs: SEQS, train: { steps: 3, batchSize: 2, seqLen: 16, lr: 1e-2, seed: 7 }, adapter: { rank: 4, alpha: 8, seed: 'webgpu-node' } }

/** Runs `args` (a tsx script and its arguments) in a child Node process; stdout, stderr and the exit code. */
function child(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [TSX, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    p.once('error', reject)
    p.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

/** An environment in which no Vulkan loader can be found (whatever this machine has installed is outside LD_LIBRARY_PATH's reach only if it is not in the system folders; see the test). */
const NO_VULKAN = { LD_LIBRARY_PATH: '', VK_ICD_FILENAMES: '' }

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}
const relL2 = (a: readonly number[], b: readonly number[]): number => {
  let d = 0
  let n = 0
  for (let i = 0; i < b.length; i++) {
    d += (a[i] - b[i]) ** 2
    n += b[i] ** 2
  }
  return Math.sqrt(d / n)
}
const maxMag = (xs: readonly (readonly number[])[]): number => Math.max(...xs.map((x) => Math.max(...x.map(Math.abs))))

describe('telling a GPU from a software renderer', () => {
  it('marks SwiftShader, llvmpipe, lavapipe and fallback adapters as software', () => {
    expect(isSoftwareAdapter({ vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader driver 5.0.0' })).toBe(true)
    expect(isSoftwareAdapter({ vendor: 'mesa', architecture: '', description: 'llvmpipe (LLVM 15.0.6, 256 bits)' })).toBe(true)
    expect(isSoftwareAdapter({ vendor: 'mesa', architecture: '', description: 'lavapipe' })).toBe(true)
    expect(isSoftwareAdapter({ vendor: 'x', architecture: 'y', description: '', isFallbackAdapter: true })).toBe(true)
    expect(isSoftwareAdapter({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H200' })).toBe(false)
    expect(isSoftwareAdapter({ vendor: 'amd', architecture: 'rdna-3', description: 'AMD Radeon RX 7900 XTX (RADV NAVI31)' })).toBe(false)
  })

  it('finds the Vulkan loader through LD_LIBRARY_PATH', () => {
    const env = swiftshaderVulkanEnv()
    if (env === undefined) return // no Chromium: nothing with a libvulkan.so.1 to point at
    expect(findVulkanLoader({ LD_LIBRARY_PATH: env.LD_LIBRARY_PATH })).toBe(path.join(env.LD_LIBRARY_PATH.split(':')[0], 'libvulkan.so.1'))
  })
})

const systemLoader = findVulkanLoader(NO_VULKAN)

describe.skipIf(systemLoader !== undefined)('--backend webgpu where no adapter exists', () => {
  it('asked for by name: exits 2 (usage) with the reason; auto: runs on the next backend and says why webgpu was skipped', async () => {
    const byName = await child(['src/model/cli.ts', 'train', '--backend', 'webgpu', '--steps', '1', '--max-eval', '2'], NO_VULKAN)
    expect(byName.code).toBe(2) // EXIT_USAGE: the user's choice cannot run here
    expect(byName.stderr).toMatch(/--backend webgpu: no WebGPU adapter: the Vulkan loader \(libvulkan\.so\.1\) is not installed/)
    expect(byName.stderr).not.toMatch(/Couldn't load Vulkan/) // Dawn was not asked, so it printed nothing of its own

    const auto = await child(['-e', "import('./src/model/backend.ts').then(async (b) => console.log(JSON.stringify(await b.selectBackend('auto'))))"], NO_VULKAN)
    expect(auto.code).toBe(0)
    const selection = JSON.parse(auto.stdout.trim().split('\n').pop() as string) as { backend: string; skipped: { backend: string; reason: string }[] }
    expect(selection.backend).toBe('wasm')
    expect(selection.skipped.find((s) => s.backend === 'webgpu')?.reason).toMatch(/no WebGPU adapter: the Vulkan loader/)
    expect(auto.stderr).not.toMatch(/Couldn't load Vulkan/)
  }, 60_000)
})
if (systemLoader !== undefined) console.warn(`webgpu-node: 'no adapter' case skipped: this machine has a Vulkan loader (${systemLoader})`)

const swiftshader = swiftshaderVulkanEnv()
const SWIFTSHADER: NodeJS.ProcessEnv = swiftshader ?? {}
if (swiftshader === undefined) console.warn('webgpu-node: adapter cases skipped: no Chromium with SwiftShader (apt-get install -y chromium)')

describe.skipIf(swiftshader === undefined)('--backend webgpu on an adapter (SwiftShader, in a child process)', () => {
  let dir = ''
  const MODELS = ['bundled', 'gqa'] as const
  /** Per model: the child's webgpu result and this process's wasm result. */
  const results = new Map<(typeof MODELS)[number], { gpu: WebgpuJobResult; wasm: WebgpuJobResult }>()

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'flora-webgpu-node-'))
    const gqaDir = path.join(dir, 'gqa')
    const gqa = llamaConfig({ vocabSize: 4096, hiddenSize: 48, intermediateSize: 96, numLayers: 2, numHeads: 6, numKvHeads: 2, maxPositionEmbeddings: 64, tieWordEmbeddings: false })
    await saveCheckpoint(gqaDir, gqa, randomLlamaWeights(gqa, 'webgpu-gqa', 0.2))
    const jobs: WebgpuJob[] = MODELS.map((m) => ({ ...JOB, modelDir: m === 'bundled' ? defaultModelDir() : gqaDir, backend: 'webgpu' }))
    // One child runs both models on webgpu while this process runs them on wasm.
    const running = child([path.join('test', 'model', 'webgpu-job.ts'), JSON.stringify(jobs)], SWIFTSHADER)
    const wasm: WebgpuJobResult[] = []
    for (const job of jobs) wasm.push(await runJob({ ...job, backend: 'wasm' }))
    const run = await running
    const line = run.stdout.split('\n').find((l) => l.startsWith('RESULT '))
    if (run.code !== 0 || line === undefined) throw new Error(`the webgpu child failed (${run.code}): ${run.stderr.slice(-2000)}`)
    const gpu = JSON.parse(line.slice('RESULT '.length)) as WebgpuJobResult[]
    MODELS.forEach((m, i) => results.set(m, { gpu: gpu[i], wasm: wasm[i] }))
  }, 180_000)

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('auto skips the software adapter, saying so; by name it is taken', async () => {
    const script = "import('./src/model/backend.ts').then(async (b) => { const s = await b.selectBackend(process.argv.at(-1)); console.log(JSON.stringify(s)) })"
    const auto = await child(['-e', script, 'auto'], SWIFTSHADER)
    const a = JSON.parse(auto.stdout.trim().split('\n').pop() as string) as { backend: string; skipped: { backend: string; reason: string }[] }
    expect(a.backend).toBe('wasm')
    expect(a.skipped.find((s) => s.backend === 'webgpu')?.reason).toMatch(/the only WebGPU adapter is a software renderer \(google swiftshader/)
    const named = await child(['-e', script, 'webgpu'], SWIFTSHADER)
    const n = JSON.parse(named.stdout.trim().split('\n').pop() as string) as { backend: string; adapter: { architecture: string; software: boolean } }
    expect(n.backend).toBe('webgpu')
    expect(n.adapter).toMatchObject({ architecture: 'swiftshader', software: true })
  }, 60_000)

  for (const which of MODELS) {
    it(`${which === 'bundled' ? 'the bundled model' : 'a random GQA checkpoint'}: logits, LoRA gradients and training steps agree with wasm`, () => {
      const { gpu, wasm } = results.get(which) as { gpu: WebgpuJobResult; wasm: WebgpuJobResult }
      expect(gpu.backend).toBe('webgpu')
      expect(gpu.adapterInfo?.architecture).toBe('swiftshader')
      expect(wasm.backend).toBe('wasm')
      const logitErr = maxAbs(gpu.logits, wasm.logits)
      const lossErr = Math.max(maxAbs(gpu.losses, wasm.losses), Math.abs(gpu.gradLoss - wasm.gradLoss))
      const gradScale = maxMag(wasm.gradients.flatMap((m) => [m.dA, m.dB]))
      const gradErr = Math.max(...wasm.gradients.map((m, i) => Math.max(maxAbs(gpu.gradients[i].dA, m.dA), maxAbs(gpu.gradients[i].dB, m.dB)))) / gradScale
      // The adapter after AdamW: relative L2 error over all factors. Adam divides each gradient by its
      // own running magnitude, so an entry whose gradient is ~0 moves by rounding noise on either side;
      // a largest-entry bound would measure that noise, not the agreement.
      const adapterErr = relL2(gpu.adapter.flatMap((m) => [...m.loraA, ...m.loraB]), wasm.adapter.flatMap((m) => [...m.loraA, ...m.loraB]))
      console.log(
        `node webgpu vs wasm (${which}): logits ${logitErr.toExponential(2)}, losses ${lossErr.toExponential(2)}, gradients ${gradErr.toExponential(2)} (relative), adapter ${adapterErr.toExponential(2)} (relative L2)`,
      )
      expect(gpu.gradients.map((m) => m.name)).toEqual(wasm.gradients.map((m) => m.name))
      expect(gradScale).toBeGreaterThan(0)
      expect(logitErr).toBeLessThan(LOGIT_TOL)
      expect(lossErr).toBeLessThan(LOSS_TOL)
      expect(gradErr).toBeLessThan(GRAD_TOL)
      expect(adapterErr).toBeLessThan(ADAPTER_TOL)
      expect(gpu.losses[2]).toBeLessThan(gpu.losses[0]) // it learns, on the GPU path too
    })
  }
})
