/**
 * The native kernels (native/flora_kernels.cc) called directly: the GEMM against a float64
 * reference over transposes, broadcasts and ragged sizes; bit-identical results for any
 * thread count; the portable and AVX2 micro-kernels agreeing; the fused ops against their
 * JS definitions; and argument validation. Skipped, with the reason, where the addon was
 * not built (no C++ toolchain at install time).
 */
import { spawnSync } from 'node:child_process'
import { Worker } from 'node:worker_threads'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { initAdapter } from '../../src/lora/init.js'
import { createPrng } from '../../src/lora/prng.js'
import { selectBackend } from '../../src/model/backend.js'
import { llamaConfig } from '../../src/model/config.js'
import { LlamaModel } from '../../src/model/llama.js'
import { trainLora } from '../../src/model/trainer.js'
import { loadNativeKernels, type NativeKernels } from '../../src/model/native.js'
import { crossEntropyLoop } from '../../src/model/kernels.js'

const loaded = loadNativeKernels()
const prng = createPrng('native-test')
const rand = (n: number) => prng.fillUniform(new Float32Array(n), -1, 1)

function refGemm(a: Float32Array, b: Float32Array, batch: number, m: number, n: number, k: number, ta: boolean, tb: boolean, sa: number, sb: number): Float64Array {
  const c = new Float64Array(batch * m * n)
  for (let q = 0; q < batch; q++)
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0
        for (let p = 0; p < k; p++) {
          const av = ta ? a[q * sa + p * m + i] : a[q * sa + i * k + p]
          const bv = tb ? b[q * sb + j * k + p] : b[q * sb + p * n + j]
          s += av * bv
        }
        c[(q * m + i) * n + j] = s
      }
  return c
}

describe.skipIf(loaded.kernels === undefined)(`native kernels${loaded.kernels === undefined ? ` (skipped: ${loaded.reason})` : ''}`, () => {
  // (The body is collected even when skipped: nothing here may touch the addon.)
  const nk = loaded.kernels as NativeKernels

  const shapes: [number, number, number, number][] = [
    [1, 1, 1, 1],
    [1, 7, 17, 3],
    [3, 13, 35, 300],
    [1, 100, 50, 600], // k spans two blocks
    [2, 64, 2100, 40], // n spans two column panels
    [5, 6, 16, 256],
    [1, 1024, 16, 64],
    [1, 16, 256, 1024],
  ]

  it.each(shapes)('gemm batch %i, %i x %i x %i: every transpose and broadcast matches float64', (batch, m, n, k) => {
    for (const ta of [false, true])
      for (const tb of [false, true])
        for (const bcast of ['none', 'a', 'b'] as const) {
          const sa = bcast === 'a' ? 0 : m * k
          const sb = bcast === 'b' ? 0 : k * n
          const a = rand((bcast === 'a' ? 1 : batch) * m * k)
          const b = rand((bcast === 'b' ? 1 : batch) * k * n)
          const c = new Float32Array(batch * m * n)
          nk.gemm(a, b, c, batch, m, n, k, ta, tb, sa, sb, false)
          const want = refGemm(a, b, batch, m, n, k, ta, tb, sa, sb)
          let worst = 0
          for (let i = 0; i < c.length; i++) worst = Math.max(worst, Math.abs(c[i] - want[i]))
          expect(worst).toBeLessThan(1e-6 * k + 1e-6)
        }
  })

  it('gemm accumulates into C when asked', () => {
    const a = rand(6 * 5)
    const b = rand(5 * 4)
    const c = new Float32Array(6 * 4).fill(1)
    nk.gemm(a, b, c, 1, 6, 4, 5, false, false, 0, 0, true)
    const want = refGemm(a, b, 1, 6, 4, 5, false, false, 0, 0)
    for (let i = 0; i < c.length; i++) expect(c[i]).toBeCloseTo(1 + want[i], 5)
  })

  // 300 rows: the blocked loop; 100 rows: the thin path (all rows packed at once). n = 530
  // leaves partial 32- and 16-column tiles; tb both ways.
  it.each([
    [300, 530, 700, true],
    [100, 530, 700, true],
    [100, 530, 700, false],
    // The thin path's largest product: 256 rows pack into 43 slivers of 6 (258 rows).
    [256, 70, 1100, true],
  ])('gemm %i x %i x %i (tb %s) gives the same bits for 1, 2 and 3 threads, and the portable kernel agrees with the fast one', (m, n, k, tb) => {
    const a = rand(m * k)
    const b = rand(k * n)
    const threads = nk.info().threads
    const run = (t: number) => {
      nk.setThreads(t)
      const c = new Float32Array(m * n)
      nk.gemm(a, b, c, 1, m, n, k, false, tb, 0, 0, false)
      return c
    }
    try {
      const one = run(1)
      expect(Buffer.from(run(2).buffer).equals(Buffer.from(one.buffer))).toBe(true)
      expect(Buffer.from(run(3).buffer).equals(Buffer.from(one.buffer))).toBe(true)
      const fast = nk.info().isa
      nk.setIsa('generic')
      const generic = run(2)
      // The AVX-512 and AVX2 kernels run the same FMA chains: the same bits.
      if (fast === 'avx512') {
        nk.setIsa('avx2-fma')
        expect(Buffer.from(run(2).buffer).equals(Buffer.from(one.buffer))).toBe(true)
      }
      if (fast !== 'generic') nk.setIsa(fast as 'avx2-fma' | 'avx512')
      let worst = 0
      for (let i = 0; i < one.length; i++) worst = Math.max(worst, Math.abs(one[i] - generic[i]))
      expect(worst).toBeLessThan(1e-4)
    } finally {
      nk.setThreads(threads)
    }
  })

  it('fused ops match their definitions', () => {
    const rows = 37
    const d = 24
    const x = rand(rows * d)
    const w = rand(d)
    const y = new Float32Array(rows * d)
    nk.rmsNorm(x, w, y, rows, d, 1e-5)
    const dy = rand(rows * d)
    const dx = new Float32Array(rows * d)
    nk.rmsNormGrad(dy, x, w, dx, rows, d, 1e-5)
    for (let r = 0; r < rows; r++) {
      let ss = 0
      let dot = 0
      for (let j = 0; j < d; j++) {
        ss += x[r * d + j] ** 2
        dot += x[r * d + j] * w[j] * dy[r * d + j]
      }
      const inv = 1 / Math.sqrt(ss / d + 1e-5)
      for (let j = 0; j < d; j++) {
        expect(y[r * d + j]).toBeCloseTo(x[r * d + j] * inv * w[j], 5)
        expect(dx[r * d + j]).toBeCloseTo(inv * w[j] * dy[r * d + j] - (x[r * d + j] * inv ** 3 * dot) / d, 5)
      }
    }

    const n = 50000
    const g = prng.fillUniform(new Float32Array(n), -30, 30)
    const u = rand(n)
    const h = new Float32Array(n)
    const dg = new Float32Array(n)
    const du = new Float32Array(n)
    const up = rand(n)
    nk.swiglu(g, u, h, n)
    nk.swigluGrad(up, g, u, dg, du, n)
    let worst = 0
    for (let i = 0; i < n; i++) {
      const s = 1 / (1 + Math.exp(-g[i]))
      worst = Math.max(worst, Math.abs(h[i] - g[i] * s * u[i]), Math.abs(du[i] - up[i] * g[i] * s), Math.abs(dg[i] - up[i] * u[i] * s * (1 + g[i] * (1 - s))))
    }
    expect(worst).toBeLessThan(1e-5)

    const [mm, v] = [19, 301]
    const z = prng.fillUniform(new Float32Array(mm * v), -20, 20)
    const targets = Int32Array.from({ length: mm }, (_, i) => (i * 37) % v)
    const gn = new Float32Array(mm * v)
    const gj = new Float32Array(mm * v)
    const ln = nk.crossEntropy(z, targets, gn, mm, v)
    const lj = crossEntropyLoop(z, targets, gj, mm, v)
    expect(ln).toBeCloseTo(lj, 5)
    expect(nk.crossEntropy(z, targets, null, mm, v)).toBe(ln)
    let gw = 0
    for (let i = 0; i < gn.length; i++) gw = Math.max(gw, Math.abs(gn[i] - gj[i]))
    expect(gw).toBeLessThan(1e-7)
  })

  it('serves several JS threads at once (worker_threads): correct results, no deadlock', async () => {
    const file = loaded.file as string
    const src = `
      const { parentPort, workerData } = require('node:worker_threads')
      const nk = require(workerData.file)
      const [m, n, k] = [200, 150, 300]
      const a = new Float32Array(m * k).fill(1), b = new Float32Array(k * n).fill(0.5), c = new Float32Array(m * n)
      let bad = 0
      for (let r = 0; r < 30; r++) {
        nk.gemm(a, b, c, 1, m, n, k, false, r % 2 === 1, 0, 0, false)
        for (let i = 0; i < c.length; i++) if (c[i] !== 150) bad++
        const y = new Float32Array(m * n)
        nk.rmsNorm(c, new Float32Array(n).fill(1), y, m, n, 1e-5)
        for (let i = 0; i < y.length; i++) if (Math.abs(y[i] - 1) > 1e-6) bad++
      }
      parentPort.postMessage(bad)
    `
    const workers = [0, 1].map(() => new Worker(src, { eval: true, workerData: { file } }))
    const done = workers.map((w) => new Promise<number>((resolve, reject) => { w.once('message', resolve); w.once('error', reject) }))
    const [m, n, k] = [256, 256, 256]
    const a = new Float32Array(m * k).fill(0.25)
    const c = new Float32Array(m * n)
    let bad = 0
    for (let r = 0; r < 30; r++) {
      nk.gemm(a, a, c, 1, m, n, k, false, false, 0, 0, false)
      for (let i = 0; i < c.length; i++) if (c[i] !== 16) bad++
    }
    expect(bad).toBe(0)
    expect(await Promise.all(done)).toEqual([0, 0])
    await Promise.all(workers.map((w) => w.terminate()))
  })

  // t = 100: several ragged row blocks on the packed fast path; t = 530: past one K block,
  // the general path.
  it.each([
    [2, 100, 4, 2, 8],
    [1, 530, 2, 1, 4],
  ])('causal attention b %i, t %i, %i heads on %i kv heads, hd %i: float64 reference, forward and backward', (b, t, h, kv, hd) => {
    const scale = 0.35
    const rep = h / kv
    const q = rand(b * t * h * hd)
    const k = rand(b * t * kv * hd)
    const v = rand(b * t * kv * hd)
    const dout = rand(b * t * h * hd)
    const out = new Float32Array(q.length)
    const probs = new Float32Array(b * h * t * t).fill(NaN)
    nk.attention(q, k, v, out, probs, b, t, h, kv, hd, scale)
    const dq = new Float32Array(q.length).fill(NaN)
    const dk = new Float32Array(k.length).fill(NaN)
    const dv = new Float32Array(v.length).fill(NaN)
    nk.attentionGrad(dout, q, k, v, probs, dq, dk, dv, b, t, h, kv, hd, scale)
    const qi = (bb: number, i: number, hh: number, d: number) => ((bb * t + i) * h + hh) * hd + d
    const ki = (bb: number, j: number, g: number, d: number) => ((bb * t + j) * kv + g) * hd + d
    const rq = new Float64Array(q.length)
    const rk = new Float64Array(k.length)
    const rv = new Float64Array(v.length)
    let worstOut = 0
    let worstProb = 0
    for (let bb = 0; bb < b; bb++)
      for (let hh = 0; hh < h; hh++) {
        const g = Math.floor(hh / rep)
        for (let i = 0; i < t; i++) {
          const p: number[] = []
          for (let j = 0; j <= i; j++) {
            let sdot = 0
            for (let d = 0; d < hd; d++) sdot += q[qi(bb, i, hh, d)] * k[ki(bb, j, g, d)]
            p.push(Math.exp(scale * sdot))
          }
          const sum = p.reduce((x, y) => x + y, 0)
          for (let j = 0; j <= i; j++) p[j] /= sum
          for (let j = 0; j < t; j++) worstProb = Math.max(worstProb, Math.abs(probs[((bb * h + hh) * t + i) * t + j] - (j <= i ? p[j] : 0)))
          for (let d = 0; d < hd; d++) {
            let o = 0
            for (let j = 0; j <= i; j++) o += p[j] * v[ki(bb, j, g, d)]
            worstOut = Math.max(worstOut, Math.abs(out[qi(bb, i, hh, d)] - o))
          }
          const dp = p.map((_, j) => {
            let x = 0
            for (let d = 0; d < hd; d++) x += dout[qi(bb, i, hh, d)] * v[ki(bb, j, g, d)]
            return x
          })
          const dot = p.reduce((acc, pj, j) => acc + pj * dp[j], 0)
          for (let j = 0; j <= i; j++) {
            const ds = scale * p[j] * (dp[j] - dot)
            for (let d = 0; d < hd; d++) {
              rq[qi(bb, i, hh, d)] += ds * k[ki(bb, j, g, d)]
              rk[ki(bb, j, g, d)] += ds * q[qi(bb, i, hh, d)]
              rv[ki(bb, j, g, d)] += p[j] * dout[qi(bb, i, hh, d)]
            }
          }
        }
      }
    expect(worstProb).toBeLessThan(1e-6)
    expect(worstOut).toBeLessThan(1e-5)
    const worst = (x: Float32Array, y: Float64Array) => x.reduce((w, xi, i) => Math.max(w, Math.abs(xi - y[i])), 0)
    expect(worst(dq, rq)).toBeLessThan(1e-5)
    expect(worst(dk, rk)).toBeLessThan(1e-5)
    expect(worst(dv, rv)).toBeLessThan(1e-5)
  })

  it('rejects bad arguments with clear errors instead of reading out of bounds', () => {
    const f = new Float32Array(4)
    expect(() => nk.gemm(f, f, f, 1, 3, 3, 3, false, false, 0, 0, false)).toThrow(/shorter than its shape/)
    expect(() => nk.gemm(new Float64Array(4) as unknown as Float32Array, f, f, 1, 2, 2, 1, false, false, 0, 0, false)).toThrow(/Float32Array/)
    expect(() => nk.gemm(f, f, f, 1, -2, 2, 1, false, false, 0, 0, false)).toThrow(/non-negative/)
    expect(() => nk.crossEntropy(f, Int32Array.from([9]), null, 1, 4)).toThrow(/outside/)
    expect(() => nk.rope(f, f, f, f, 1, 1, 1, 3, false)).toThrow(/even/)
    expect(() => nk.setThreads(0)).toThrow(/\[1, 256\]/)
    expect(() => nk.binary(7 as 0, f, f, f, 4)).toThrow(/op must be/)
  })
})

describe('native kernel switches (environment)', () => {
  const backendLine = (env: Record<string, string>) =>
    spawnSync(
      process.execPath,
      ['--import', 'tsx', '-e', "const m = await import('./src/model/backend.ts'); console.log(m.describeBackend(await m.selectBackend('wasm')))"],
      { cwd: path.resolve(import.meta.dirname, '..', '..'), env: { ...process.env, ...env }, encoding: 'utf8' },
    )

  it('FLORA_NATIVE=0 turns them off and the backend line says why; FLORA_THREADS sets the threads', () => {
    const off = backendLine({ FLORA_NATIVE: '0' })
    expect(off.stdout).toMatch(/^wasm \(1 thread; native kernels off: disabled by FLORA_NATIVE\)/)
    if (loaded.kernels !== undefined) {
      expect(backendLine({ FLORA_THREADS: '1' }).stdout).toMatch(/^wasm \+ native \S+ x1 thread( \(prebuilt\))?$/m)
      const bad = backendLine({ FLORA_THREADS: 'many' })
      expect(bad.status).not.toBe(0)
      expect(bad.stderr).toMatch(/FLORA_THREADS must be an integer in \[1, 256\], got 'many'/)
    }
  })
})

describe.skipIf(loaded.kernels === undefined)('training on the native kernels', () => {
  it('gives the same adapter bit for bit with 1 and 2 threads', async () => {
    const nk = loaded.kernels as NativeKernels
    await selectBackend('wasm', { fallback: false })
    // big enough that every kernel actually splits across threads (>= 32 K elements)
    const config = llamaConfig({ vocabSize: 512, hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositionEmbeddings: 128 })
    const data = Array.from({ length: 16 }, (_, i) => ({ inputIds: Array.from({ length: 64 }, (_, j) => (i * 37 + j * 11) % 512), promptLength: 8 }))
    const train = async (threads: number) => {
      nk.setThreads(threads)
      const model = LlamaModel.random(config, 'threads')
      model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank: 8, alpha: 16, seed: 'threads' }))
      const res = await trainLora(model, data, { steps: 3, batchSize: 4, seqLen: 64, lr: 1e-2, seed: 5 })
      const adapter = model.getAdapter()
      model.dispose()
      return { losses: res.losses, bytes: Buffer.concat(adapter.modules.flatMap((m) => [Buffer.from(m.loraA.buffer), Buffer.from(m.loraB.buffer)])) }
    }
    const threads = nk.info().threads
    try {
      const one = await train(1)
      const two = await train(2)
      expect(two.losses).toEqual(one.losses)
      expect(two.bytes.equals(one.bytes)).toBe(true)
    } finally {
      nk.setThreads(threads)
    }
  })
})
