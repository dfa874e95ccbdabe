/**
 * LoRA training-step benchmark: tokens/s and model-FLOPs utilisation on the active backend,
 * plus a per-kernel profile of one step.
 *
 *   npm run bench:train                      # bundled + small + wide, human-readable
 *   npm run bench:train -- --json            # one JSON object on stdout
 *   npm run bench:train -- --config wide --steps 5 --backend wasm --profile
 *   --config bundled|small|wide|all (default all). `bundled` is the real checkpoint of
 *   models/flora-tiny (GQA 3:1, tied embeddings) loaded with loadModel; small and wide are
 *   random-weight models (MHA, separate lm_head). All three: batch 8 x 128 tokens, LoRA r=16
 *   on q_proj, v_proj.
 *   npm run bench:train -- --torch          # also run bench/train_torch.py per config and compare
 *   ... --no-patch (stock wasm kernels) --no-native (wasm GEMM instead of the native addon)
 *   ... --no-fused (tf-op RMSNorm/RoPE) --no-weight-copies --python /path/to/python3
 *   FLORA_THREADS=n sets the native kernels' thread count (default: every core).
 *
 * Model FLOPs (the usual convention, stated here so numbers are comparable):
 *   model flops/step = 6 * N * tokens + 12 * L * T * (H * hd) * tokens
 * with N = non-embedding parameters + the lm_head (the embedding lookup is free), tokens =
 * B * T, and the attention term for QK^T and PV (forward 4 L T H hd, x3 for backward).
 * N counts each projection at its real size: q_proj and o_proj d x (H * hd), k_proj and
 * v_proj d x (Hkv * hd) (smaller under GQA), the SwiGLU MLP 3 d I, and the lm_head V d even
 * when it is tied to the embedding (the weight is shared, the matmul is not). The attention
 * term uses the query heads H: under GQA every query head still does its own QK^T and PV.
 * (H * hd = d for all the configs here; the term is written with H * hd so it stays right
 * for a model whose head_dim is set independently.)
 *   MFU = model flops/s / CPU peak,  CPU peak = cores used * clock * FLOP/cycle, where
 * FLOP/cycle comes from the CPU's flags (cpuFlopsPerCycle: 64 with AVX-512F, 32 with
 * AVX2+FMA, 16 with AVX, 8 otherwise: float32 FMA on two vector pipes, an upper bound);
 * assuming AVX2 on an AVX-512 Xeon reported MFUs over 100%. Cores used = the native kernels' threads when the addon runs
 * the matmuls (src/model/native.ts), else 1 for wasm (single-threaded in Node) and cpu, and
 * every core for tfjs-node.
 * A LoRA step with a frozen base does less work (no weight gradients):
 *   hardware flops/step = 4 * N * tokens + 12 * L * T * d * tokens,
 * and "matmul util" = hardware flops/s / the best measured plain-matmul throughput of the
 * same backend (measured through tf.matMul, so on the native GEMM when that runs), i.e. how
 * close the step gets to what this backend can do at all.
 *
 * --torch runs the same step in PyTorch (bench/train_torch.py, torch's default threading) right
 * after each config, and reports ratio = flora tok/s / torch tok/s, from the best and from the
 * median step times.
 *
 * On a GPU backend (--backend webgpu): no CPU MFU; instead the GPU memory tfjs's WebGPU buffer
 * pool holds at its peak (`gpuPeakMiB`: buffers are pooled and reused, so the pool's size after
 * the steps is the step's high-water mark) and the adapter the backend runs on. --torch then
 * runs PyTorch on CUDA (`--device cuda`), with torch's own peak GPU memory. Without a GPU:
 *   LD_LIBRARY_PATH=/usr/lib/chromium VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json \
 *     npm run bench:train -- --backend webgpu --config bundled
 * runs it on Chromium's SwiftShader (a CPU renderer: a check that the path works, not a speed).
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { CONFIGS as MODEL_SHAPES, roundToBf16InPlace } from './model-shapes.js'
import { promisify } from 'node:util'
import * as tf from '@tensorflow/tfjs'
import { initAdapter } from '../src/lora/init.js'
import { describeBackend, selectBackend, type BackendPreference, type BackendSelection } from '../src/model/backend.js'
import { defaultModelDir } from '../src/model/bundled.js'
import { loadModel } from '../src/model/checkpoint.js'
import { llamaConfig, type LlamaConfig } from '../src/model/config.js'
import { LlamaModel, type LlamaModelOptions, randomLlamaWeights } from '../src/model/llama.js'
import { trainLora, type TrainingExample } from '../src/model/trainer.js'

interface BenchConfig {
  readonly name: string
  /** Random weights of this config, or a model directory (HF layout) loaded with loadModel. */
  readonly model: LlamaConfig | { readonly dir: string }
  readonly batchSize: number
  readonly seqLen: number
  readonly rank: number
  /** Left out of --config all. */
  readonly heavy?: boolean
  /**
   * Random weights rounded to BF16, the values of a BF16 checkpoint (TinyLlama's is one):
   * flora keeps the frozen layers in BF16, exactly; PyTorch's CPU path computes in float32,
   * its fastest here, on weights of the same shapes. Both compute in float32.
   */
  readonly bf16Weights?: boolean
}

const CONFIGS: BenchConfig[] = [
  {
    // The bundled base model (models/flora-tiny): d 192, 4 layers, 3 query heads of 64 with
    // 1 key/value head, SwiGLU 512, vocab 4096, tied embeddings.
    name: 'bundled',
    model: { dir: defaultModelDir() },
    batchSize: 8,
    seqLen: 128,
    rank: 16,
  },
  {
    name: 'small',
    model: llamaConfig({ vocabSize: 4096, hiddenSize: 256, intermediateSize: 688, numLayers: 4, numHeads: 4, maxPositionEmbeddings: 512 }),
    batchSize: 8,
    seqLen: 128,
    rank: 16,
  },
  {
    // TinyLlama-1.1B's shapes (random weights; the frozen layers go to the native addon):
    // not in 'all' (minutes per step with torch), run it with --config tinyllama-1.1b.
    name: 'tinyllama-1.1b',
    model: MODEL_SHAPES['tinyllama-1.1b'],
    batchSize: 1,
    seqLen: 128,
    rank: 16,
    heavy: true,
    bf16Weights: true,
  },
  {
    // SmolLM2-135M's shapes (random weights with BF16 values, as its checkpoint holds; at
    // 0.54 GB of float32 they stay tfjs tensors): not in 'all', run it with --config smollm2-135m.
    name: 'smollm2-135m',
    model: MODEL_SHAPES['smollm2-135m'],
    batchSize: 8,
    seqLen: 128,
    rank: 16,
    heavy: true,
    bf16Weights: true,
  },
  {
    name: 'wide',
    model: llamaConfig({ vocabSize: 4096, hiddenSize: 512, intermediateSize: 1376, numLayers: 8, numHeads: 8, maxPositionEmbeddings: 512 }),
    batchSize: 8,
    seqLen: 128,
    rank: 16,
  },
]

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const flag = (name: string) => process.argv.includes(`--${name}`)

/**
 * Non-embedding parameters + lm_head (what a token's matmuls touch): q_proj and o_proj are
 * d x (H * hd), k_proj and v_proj d x (Hkv * hd) (GQA), the MLP 3 d I, and the lm_head V d
 * whether or not it is tied to the embedding (a tied head is still a full matmul per token).
 * Norm weights are left out (elementwise, no matmul).
 */
function activeParams(c: LlamaConfig): number {
  const d = c.hiddenSize
  const attn = d * c.numHeads * c.headDim * 2 + d * c.numKvHeads * c.headDim * 2
  const mlp = 3 * d * c.intermediateSize
  return c.numLayers * (attn + mlp) + c.vocabSize * d
}

/** Attention-score FLOPs per token (QK^T and PV over T keys, forward + backward): 12 L T H hd. */
function attentionFlopsPerToken(c: LlamaConfig, seqLen: number): number {
  return 12 * c.numLayers * seqLen * c.numHeads * c.headDim
}

/** Build a config's model: random weights, or the checkpoint directory through loadModel. */
async function buildModel(bc: BenchConfig, options: LlamaModelOptions): Promise<LlamaModel> {
  if ('dir' in bc.model) return loadModel(bc.model.dir, options)
  if (bc.bf16Weights !== true) return LlamaModel.random(bc.model, 'bench', options)
  const weights = randomLlamaWeights(bc.model, 'bench')
  for (const w of weights.values()) roundToBf16InPlace(w)
  const model = new LlamaModel(bc.model, weights, options)
  weights.clear()
  return model
}

/** Nominal clock: --cpu-ghz, else os.cpus(), else /proc/cpuinfo (VMs often report 0 to Node). */
function cpuClockHz(): number {
  const given = arg('cpu-ghz')
  if (given !== undefined) return Number(given) * 1e9
  const mhz = os.cpus()[0]?.speed ?? 0
  if (mhz > 0) return mhz * 1e6
  try {
    const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    if (m !== null) return Number(m[1]) * 1e6
  } catch {
    // not Linux
  }
  return NaN
}

/** Peak float32 FLOP per cycle and core from the CPU's flags (/proc/cpuinfo), with the ISA named. */
function cpuFlopsPerCycle(): { flops: number; isa: string } {
  let flags = ''
  try {
    flags = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? ''
  } catch {
    // not Linux
  }
  const has = (f: string): boolean => flags.split(/\s+/).includes(f)
  if (has('avx512f')) return { flops: 64, isa: 'AVX-512' }
  if (has('avx2') && has('fma')) return { flops: 32, isa: 'AVX2 FMA' }
  if (has('avx')) return { flops: 16, isa: 'AVX' }
  return { flops: 8, isa: flags === '' ? 'unknown ISA (assumed SSE)' : 'SSE' }
}

/** Best FLOP/s of plain matmuls of the benchmark's typical shapes (best of 5 each). */
async function measurePeak(): Promise<number> {
  let best = 0
  for (const [m, k, n] of [
    [1024, 1024, 1024],
    [1024, 512, 1376],
    [1024, 512, 512],
  ]) {
    const a = tf.randomNormal([m, k])
    const b = tf.randomNormal([k, n])
    tf.matMul(a, b).dispose()
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now()
      const c = tf.matMul(a, b)
      await c.data()
      const s = (performance.now() - t0) / 1000
      c.dispose()
      best = Math.max(best, (2 * m * k * n) / s)
    }
    tf.dispose([a, b])
  }
  return best
}

function examples(c: BenchConfig, vocabSize: number, count: number): TrainingExample[] {
  // Full-length sequences, loss on every token after a 16-token prompt.
  const out: TrainingExample[] = []
  let x = 12345
  for (let e = 0; e < count; e++) {
    const ids: number[] = []
    for (let i = 0; i < c.seqLen; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0
      ids.push(x % vocabSize)
    }
    out.push({ inputIds: ids, promptLength: 16 })
  }
  return out
}

/** One config's result from bench/train_torch.py --json. */
interface TorchResult {
  readonly config: string
  /** torch intra-op threads. */
  readonly threads: number
  /** OpenBLAS's own threads (null when unknown). */
  readonly blasThreads: number | null
  /** The BLAS torch loaded: openblas, mkl, blis, reference (libblas3, 10-25x slower) or unknown. */
  readonly blas?: string
  readonly blasLibrary?: string | null
  readonly stepMs: number
  readonly medianStepMs: number
  readonly cpuMsPerStep: number
  readonly tokensPerSecond: number
  readonly medianTokensPerSecond: number
  /** With --device cuda: the GPU and the peak memory torch allocated. */
  readonly device?: 'cuda'
  readonly gpu?: string
  readonly gpuPeakMiB?: number
}

type TorchRun = { readonly version: string; readonly result: TorchResult } | { readonly error: string }

const TORCH_SCRIPT = fileURLToPath(new URL('./train_torch.py', import.meta.url))
const execFileAsync = promisify(execFile)

/** Run the PyTorch baseline for one config; an error (no python, no torch) is returned, not thrown. */
async function runTorch(python: string, config: string, steps: number, device: 'cpu' | 'cuda'): Promise<TorchRun> {
  try {
    const { stdout } = await execFileAsync(python, [TORCH_SCRIPT, '--config', config, '--steps', String(steps), '--device', device, '--json'], {
      maxBuffer: 1 << 20,
      timeout: 30 * 60_000,
    })
    const out = JSON.parse(stdout) as { torch: string; results: TorchResult[] }
    const result = out.results.find((r) => r.config === config)
    return result !== undefined ? { version: out.torch, result } : { error: `no result for ${config} in ${stdout.trim()}` }
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string }
    if (e.code === 'ENOENT') return { error: `${python} not found` }
    const lastLine = e.stderr?.trim().split('\n').at(-1)
    return { error: lastLine !== undefined && lastLine !== '' ? lastLine : e.message.split('\n')[0] }
  }
}

/** MiB held by tfjs's WebGPU buffer pool (its high-water mark: freed buffers are kept for reuse). */
function gpuPoolMiB(): number | undefined {
  const b = tf.backend() as unknown as { bufferManager?: { numBytesAllocated?: number } }
  const bytes = b.bufferManager?.numBytesAllocated
  return bytes === undefined ? undefined : Math.round(bytes / 2 ** 20)
}

/** The native kernels' state in one line. */
function describeNative(native: BackendSelection['native']): string {
  if (native === undefined) return 'native kernels n/a (patched wasm only)'
  return 'isa' in native ? `native ${native.isa} x${native.threads} threads` : `native off: ${native.reason}`
}

interface ProfileRow {
  readonly kernel: string
  readonly ms: number
  readonly calls: number
}

async function profileStep(model: LlamaModel, bc: BenchConfig, data: TrainingExample[]): Promise<ProfileRow[]> {
  const info = await tf.profile(async () => {
    await trainLora(model, data, { steps: 1, batchSize: bc.batchSize, seqLen: bc.seqLen, lr: 1e-4, seed: 0 })
  })
  const rows = new Map<string, { ms: number; calls: number }>()
  for (const k of info.kernels) {
    // customGrad scopes time their inner kernels, which are listed on their own too.
    if (k.name === 'unnamed scope') continue
    const shapes = k.inputShapes.map((s) => (s === null ? '-' : `[${s.join(',')}]`)).join(' ')
    const key = `${k.name} ${shapes}`
    const r = rows.get(key) ?? { ms: 0, calls: 0 }
    r.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0
    r.calls++
    rows.set(key, r)
  }
  return [...rows.entries()].map(([kernel, r]) => ({ kernel, ...r })).sort((a, b) => b.ms - a.ms)
}

async function main(): Promise<void> {
  const json = flag('json')
  const steps = Number(arg('steps') ?? 5)
  const which = arg('config') ?? 'all'
  const selected = CONFIGS.filter((c) => (which === 'all' && c.heavy !== true) || c.name === which)
  if (selected.length === 0) {
    throw new Error(`unknown --config '${which}' (one of ${CONFIGS.map((c) => c.name).join(', ')}, all)`)
  }
  const torch = flag('torch')
  const python = arg('python') ?? '/usr/bin/python3'
  const backend = await selectBackend((arg('backend') ?? 'auto') as BackendPreference, {
    patchWasmKernels: !flag('no-patch'),
    nativeKernels: !flag('no-native'),
  })
  const peak = await measurePeak()
  const onGpu = backend.backend === 'webgpu' || backend.backend === 'tensorflow-gpu'
  const nativeThreads = backend.native !== undefined && 'isa' in backend.native ? backend.native.threads : undefined
  const coresUsed = nativeThreads ?? (backend.backend === 'wasm' || backend.backend === 'cpu' ? 1 : os.cpus().length)
  const clockHz = cpuClockHz()
  const perCycle = cpuFlopsPerCycle()
  const cpuPeak = coresUsed * clockHz * perCycle.flops
  const results = []
  let torchVersion: string | undefined
  let torchError: string | undefined
  for (const bc of selected) {
    const model = await buildModel(bc, {
      compute: flag('no-fused') ? 'stock' : undefined,
      ...(flag('no-weight-copies') ? { backwardWeightCopies: false } : {}),
    })
    const mc = model.config
    if (bc.seqLen > mc.maxPositionEmbeddings) {
      throw new Error(`${bc.name}: seqLen ${bc.seqLen} exceeds the model's max_position_embeddings ${mc.maxPositionEmbeddings}`)
    }
    model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: bc.rank, alpha: 2 * bc.rank, seed: 0 }))
    const data = examples(bc, mc.vocabSize, 4 * bc.batchSize)
    const opts = { batchSize: bc.batchSize, seqLen: bc.seqLen, lr: 1e-4, seed: 0 }
    await trainLora(model, data, { ...opts, steps: 1 }) // warm-up (kernel setup, operator caches)
    // Per-step wall times; the machine may be shared, so report the best and the median.
    // CPU time of this process (all its threads, the native kernels' included) is what the
    // step costs; wall time also counts other processes' turns on a shared machine.
    const times: number[] = []
    const cpuTimes: number[] = []
    let last = 0
    let lastCpu = process.cpuUsage()
    await trainLora(model, data, {
      ...opts,
      steps,
      onStep: (i) => {
        times.push(i.elapsedMs - last)
        last = i.elapsedMs
        const cpu = process.cpuUsage(lastCpu)
        cpuTimes.push((cpu.user + cpu.system) / 1000)
        lastCpu = process.cpuUsage()
      },
    })
    times.sort((a, b) => a - b)
    cpuTimes.sort((a, b) => a - b)
    const stepMs = times[0]
    const medianMs = times[Math.floor(times.length / 2)]
    const cpuMs = cpuTimes[Math.floor(cpuTimes.length / 2)]
    const tokens = bc.batchSize * bc.seqLen
    const n = activeParams(mc)
    const attn = attentionFlopsPerToken(mc, bc.seqLen)
    const modelFlops = (6 * n + attn) * tokens
    const hwFlops = (4 * n + attn) * tokens
    const gpuPeakMiB = onGpu ? gpuPoolMiB() : undefined
    const profile = flag('profile') || !json ? (await profileStep(model, bc, data)).slice(0, 15) : undefined
    model.dispose()
    // Torch right after the same config (interleaved), so both see similar machine load.
    let torchResult: TorchResult | undefined
    if (torch && torchError === undefined) {
      const run = await runTorch(python, bc.name, steps, onGpu ? 'cuda' : 'cpu')
      if ('error' in run) {
        torchError = run.error
      } else {
        torchVersion = run.version
        torchResult = run.result
      }
    }
    const tokensPerSecond = tokens / (stepMs / 1000)
    const medianTokensPerSecond = tokens / (medianMs / 1000)
    results.push({
      config: bc.name,
      weights: 'dir' in bc.model ? path.relative(process.cwd(), bc.model.dir) || bc.model.dir : bc.bf16Weights === true ? 'random, BF16 values' : 'random',
      hidden: mc.hiddenSize,
      layers: mc.numLayers,
      heads: mc.numHeads,
      kvHeads: mc.numKvHeads,
      headDim: mc.headDim,
      intermediate: mc.intermediateSize,
      vocab: mc.vocabSize,
      tiedEmbeddings: mc.tieWordEmbeddings,
      batch: bc.batchSize,
      seqLen: bc.seqLen,
      loraRank: bc.rank,
      targets: 'q_proj,v_proj',
      activeParams: n,
      stepMs: Math.round(stepMs),
      medianStepMs: Math.round(medianMs),
      cpuMsPerStep: Math.round(cpuMs),
      tokensPerCpuSecond: Math.round(tokens / (cpuMs / 1000)),
      tokensPerSecond: Math.round(tokensPerSecond),
      medianTokensPerSecond: Math.round(medianTokensPerSecond),
      modelTflopsPerStep: modelFlops / 1e12,
      modelGflops: Math.round(modelFlops / (stepMs / 1000) / 1e7) / 100,
      // MFU against the CPU's peak: meaningless when a GPU computes.
      mfu: onGpu ? null : Math.round((modelFlops / (stepMs / 1000) / cpuPeak) * 1000) / 1000,
      ...(gpuPeakMiB !== undefined ? { gpuPeakMiB } : {}),
      hardwareGflops: Math.round(hwFlops / (stepMs / 1000) / 1e7) / 100,
      matmulUtil: Math.round((hwFlops / (stepMs / 1000) / peak) * 1000) / 1000,
      ...(profile !== undefined ? { profile } : {}),
      ...(torchResult?.blas === 'reference' ? { torchOnReferenceBlas: torchResult.blasLibrary ?? 'libblas.so.3' } : {}),
      // No ratio against a torch on the reference BLAS: it is not PyTorch at its best.
      ...(torchResult !== undefined && torchResult.blas !== 'reference'
        ? {
            torch: torchResult,
            // flora tok/s / torch tok/s = torch ms/step / flora ms/step
            ratio: {
              best: Math.round((torchResult.stepMs / stepMs) * 100) / 100,
              median: Math.round((torchResult.medianStepMs / medianMs) * 100) / 100,
            },
          }
        : {}),
    })
  }
  const summary = {
    backend: backend.backend,
    patchedKernels: backend.patchedKernels,
    skipped: backend.skipped,
    threads: backend.threads,
    native: backend.native ?? null,
    ...(backend.adapter !== undefined ? { adapter: backend.adapter } : {}),
    coresUsed,
    matmulPeakGflops: Math.round(peak / 1e7) / 100,
    cpuPeakGflops: Math.round(cpuPeak / 1e7) / 100,
    cpuFlopsPerCycle: perCycle.flops,
    cpuIsa: perCycle.isa,
    cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
    node: process.version,
    ...(torch ? { torch: torchError !== undefined ? { error: torchError } : { version: torchVersion ?? null, script: 'bench/train_torch.py' } } : {}),
    results,
  }
  if (json) {
    process.stdout.write(JSON.stringify(summary) + '\n')
    return
  }
  console.log(
    backend.adapter !== undefined
      ? `backend ${describeBackend(backend)} with ${summary.cpu}`
      : `backend ${summary.backend} (threads ${summary.threads ?? '?'}, ${describeNative(backend.native)}, patched: ${summary.patchedKernels.join(', ') || 'none'}) on ${summary.cpu}`,
  )
  for (const s of summary.skipped) console.log(`  skipped ${s.backend}: ${s.reason}`)
  console.log(
    onGpu
      ? `best plain matmul on the GPU: ${summary.matmulPeakGflops} GFLOP/s`
      : `best plain matmul: ${summary.matmulPeakGflops} GFLOP/s; CPU peak (${coresUsed} core(s), ${perCycle.isa}: ${perCycle.flops} FLOP/cycle): ${summary.cpuPeakGflops} GFLOP/s`,
  )
  for (const r of results) {
    console.log(
      `\n${r.config} (${r.weights} weights): d=${r.hidden} L=${r.layers} H=${r.heads}/${r.kvHeads}kv hd=${r.headDim} I=${r.intermediate} V=${r.vocab}${r.tiedEmbeddings ? ' tied' : ''} B=${r.batch} T=${r.seqLen} r=${r.loraRank}  ` +
        `${r.stepMs} ms/step (median ${r.medianStepMs}, cpu ${r.cpuMsPerStep})  ${r.tokensPerSecond} tok/s (median ${r.medianTokensPerSecond})  model ${r.modelGflops} GFLOP/s  ${r.mfu !== null ? `MFU ${(r.mfu * 100).toFixed(1)}%` : `GPU memory ${r.gpuPeakMiB ?? '?'} MiB (tfjs buffer pool)`}  (hardware ${r.hardwareGflops} GFLOP/s = ${(r.matmulUtil * 100).toFixed(0)}% of the best matmul)`,
    )
    if (r.profile !== undefined) {
      const total = r.profile.reduce((a, p) => a + p.ms, 0)
      console.log(`  top kernels of one step (${total.toFixed(0)} ms in the top 15):`)
      for (const p of r.profile) console.log(`  ${p.ms.toFixed(1).padStart(8)} ms ${String(p.calls).padStart(4)}x  ${p.kernel}`)
    }
    if (r.torchOnReferenceBlas !== undefined) {
      console.log(`  torch comparison refused: torch loaded the reference BLAS (${r.torchOnReferenceBlas}), 10-25x slower than it can be; apt-get install libopenblas0-pthread`)
    }
    if (r.torch !== undefined && r.ratio !== undefined) {
      const t = r.torch
      console.log(
        `  torch ${torchVersion ?? '?'} (${t.device === 'cuda' ? `CUDA on ${t.gpu ?? '?'}, peak ${t.gpuPeakMiB ?? '?'} MiB` : `${t.threads} intra-op thread(s), BLAS ${t.blas ?? '?'} ${t.blasLibrary ?? ''} x${t.blasThreads ?? '?'}`}): ${t.stepMs} ms/step (median ${t.medianStepMs}, cpu ${t.cpuMsPerStep})  ` +
          `${t.tokensPerSecond} tok/s (median ${t.medianTokensPerSecond})  flora/torch tok/s: ${r.ratio.best.toFixed(2)}x best, ${r.ratio.median.toFixed(2)}x median`,
      )
    }
  }
  if (torchError !== undefined) console.log(`\ntorch comparison skipped: ${torchError}`)
}

await main()
