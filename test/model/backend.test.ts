import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { createPrng } from '../../src/lora/prng.js'
import { BackendUnavailableError, nativeKernelsActive, selectBackend, setNativeKernels } from '../../src/model/backend.js'
import { loadNativeKernels } from '../../src/model/native.js'
import { maxAbsDiff } from './helpers.js'

const prng = createPrng('backend-test')
const rand = (n: number) => prng.fillUniform(new Float32Array(n), -1, 1)

/** Plain-loop batched matmul with broadcasting of a batch of 1. */
function refMatMul(a: Float32Array, aShape: number[], b: Float32Array, bShape: number[], tA: boolean, tB: boolean): Float64Array {
  const ra = aShape.length
  const rb = bShape.length
  const m = tA ? aShape[ra - 1] : aShape[ra - 2]
  const k = tA ? aShape[ra - 2] : aShape[ra - 1]
  const n = tB ? bShape[rb - 2] : bShape[rb - 1]
  const batchA = aShape.slice(0, -2).reduce((x, y) => x * y, 1)
  const batchB = bShape.slice(0, -2).reduce((x, y) => x * y, 1)
  const batch = Math.max(batchA, batchB)
  const out = new Float64Array(batch * m * n)
  for (let p = 0; p < batch; p++) {
    const ao = (batchA === 1 ? 0 : p) * m * k
    const bo = (batchB === 1 ? 0 : p) * k * n
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let acc = 0
        for (let q = 0; q < k; q++) {
          const av = tA ? a[ao + q * m + i] : a[ao + i * k + q]
          const bv = tB ? b[bo + j * k + q] : b[bo + q * n + j]
          acc += av * bv
        }
        out[p * m * n + i * n + j] = acc
      }
    }
  }
  return out
}

describe('selectBackend', () => {
  it('falls back past the native backends (not installed here) and webgpu (no GPU here) and reports why', async () => {
    const sel = await selectBackend('auto')
    // tfjs-node cannot be installed offline; if it ever is, the test still holds for what is skipped.
    expect(['tensorflow-gpu', 'tensorflow', 'wasm']).toContain(sel.backend)
    for (const s of sel.skipped) {
      expect(s.reason.length).toBeGreaterThan(0)
    }
    if (sel.backend === 'wasm') {
      expect(sel.skipped.map((s) => s.backend)).toEqual(['tensorflow-gpu', 'webgpu', 'tensorflow'])
      expect(sel.skipped[0].reason).toMatch(/tfjs-node-gpu/)
      expect(sel.skipped[1].reason).toMatch(/no WebGPU adapter|software renderer/)
      expect(sel.threads).toBe(1)
      expect(sel.patchedKernels).toEqual(['BatchMatMul', 'Slice', 'GatherV2', 'Identity', 'Cast', 'Add', 'Sub', 'Multiply', 'Transpose'])
      // The native kernels either run or say why not.
      expect(sel.native).toBeDefined()
      if (sel.native !== undefined && 'reason' in sel.native) expect(sel.native.reason.length).toBeGreaterThan(0)
      expect(tf.getBackend()).toBe('wasm')
    }
  })

  it('selects a named backend, and refuses to fall back when asked not to', async () => {
    expect((await selectBackend('cpu')).backend).toBe('cpu')
    expect(tf.getBackend()).toBe('cpu')
    await expect(selectBackend('tensorflow', { fallback: false })).rejects.toBeInstanceOf(BackendUnavailableError)
    await expect(selectBackend('nope' as 'cpu')).rejects.toThrow(/unknown backend/)
    expect((await selectBackend('wasm', { fallback: false })).backend).toBe('wasm')
  })
})

const native = loadNativeKernels().kernels
// Every patched kernel is checked on both of its paths: the native addon (when it is built)
// and the wasm-only one (XNNPACK, stock element-wise kernels).
const paths = native !== undefined ? (['native', 'wasm'] as const) : (['wasm'] as const)

describe.each(paths)('patched wasm kernels (%s path)', (which) => {
  beforeAll(async () => {
    await selectBackend('wasm', { fallback: false })
    setNativeKernels(which === 'native' ? native : undefined)
    expect(nativeKernelsActive()).toBe(which === 'native')
    return () => setNativeKernels(native)
  })

  const cases: [number[], number[], boolean, boolean][] = [
    [[5, 7], [7, 3], false, false],
    [[7, 5], [7, 3], true, false],
    [[5, 7], [3, 7], false, true],
    [[7, 5], [3, 7], true, true],
    [[33, 2], [33, 40], true, false], // tall-skinny: the swapped plan
    [[4, 6, 5], [4, 5, 3], false, false], // batched
    [[4, 5, 6], [4, 3, 5], true, true],
    [[2, 3, 6, 5], [2, 3, 5, 4], false, false],
    [[2, 3, 6, 5], [5, 4], false, false], // b broadcast: folded into one product
    [[6, 5], [3, 5, 4], false, false], // a broadcast
    [[3, 6, 5], [1, 4, 5], false, true],
    [[70, 300], [300, 45], false, false], // several micro-tiles with ragged edges, k > one block
    [[300, 70], [45, 300], true, true],
    [[2, 64, 130], [2, 33, 130], false, true],
  ]

  it.each(cases)('matMul %j x %j (tA=%s, tB=%s) matches the reference', (aShape, bShape, tA, tB) => {
    const a = rand(aShape.reduce((x, y) => x * y, 1))
    const b = rand(bShape.reduce((x, y) => x * y, 1))
    const ta = tf.tensor(a, aShape)
    const tb = tf.tensor(b, bShape)
    const c = tf.matMul(ta, tb, tA, tB)
    const k = tA ? aShape[aShape.length - 2] : aShape[aShape.length - 1]
    // float32 sums of k products of values in [-1, 1]: rounding grows with k
    expect(maxAbsDiff(c.dataSync(), refMatMul(a, aShape, b, bShape, tA, tB))).toBeLessThan(5e-6 + 1e-7 * k)
    tf.dispose([ta, tb, c])
  })

  it('matMul with mismatched inner dimensions still fails', () => {
    expect(() => tf.matMul(tf.zeros([2, 3]), tf.zeros([4, 2]))).toThrow()
  })

  it('slice: contiguous and strided, float and int', () => {
    const data = Float32Array.from({ length: 2 * 3 * 4 * 5 }, (_, i) => i)
    const x = tf.tensor4d(data, [2, 3, 4, 5])
    const s1 = tf.slice(x, [1, 0, 0, 0], [1, 3, 4, 5])
    expect([...s1.dataSync()]).toEqual([...data.subarray(60, 120)])
    const s2 = tf.slice(x, [0, 1, 2, 1], [2, 2, 2, 3])
    const want: number[] = []
    for (let a = 0; a < 2; a++) for (let b = 1; b < 3; b++) for (let c = 2; c < 4; c++) for (let d = 1; d < 4; d++) want.push(((a * 3 + b) * 4 + c) * 5 + d)
    expect([...s2.dataSync()]).toEqual(want)
    const xi = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3], 'int32')
    const s3 = tf.slice(xi, [0, 1], [2, 2])
    expect(s3.dtype).toBe('int32')
    expect([...s3.dataSync()]).toEqual([2, 3, 5, 6])
    const s4 = tf.slice(x, [0, 0, 0, 0], [0, 3, 4, 5])
    expect(s4.shape).toEqual([0, 3, 4, 5])
    tf.dispose([x, s1, s2, xi, s3, s4])
  })

  it('gather: rows along axis 0, other axes through the stock kernel, bounds checked', () => {
    const x = tf.tensor2d([0, 1, 2, 10, 11, 12, 20, 21, 22], [3, 3])
    const idx = tf.tensor2d([2, 0, 1, 2], [2, 2], 'int32')
    const g = tf.gather(x, idx)
    expect(g.shape).toEqual([2, 2, 3])
    expect([...g.dataSync()]).toEqual([20, 21, 22, 0, 1, 2, 10, 11, 12, 20, 21, 22])
    const g1 = tf.gather(x, tf.tensor1d([2, 0], 'int32'), 1)
    expect([...g1.dataSync()]).toEqual([2, 0, 12, 10, 22, 20])
    expect(() => tf.gather(x, tf.tensor1d([3], 'int32'))).toThrow(/not in \[0, 2\]/)
    tf.dispose([x, idx, g, g1])
  })
  it('identity and same-dtype cast share the buffer safely; real casts convert', () => {
    const x = tf.tensor1d([1.5, -2.5, 3])
    const c = tf.clone(x)
    const same = tf.cast(x, 'float32')
    const i = tf.cast(x, 'int32')
    x.dispose()
    expect([...c.dataSync()]).toEqual([1.5, -2.5, 3])
    expect([...same.dataSync()]).toEqual([1.5, -2.5, 3])
    expect(i.dtype).toBe('int32')
    expect([...i.dataSync()]).toEqual([1, -2, 3])
    tf.dispose([c, same, i])
  })
  it('element-wise add/sub/mul: same shapes, scalars on either side, broadcasts, large and small', () => {
    for (const n of [7, 40000]) {
      const a = rand(n)
      const b = rand(n)
      const ta = tf.tensor2d(a, [n / (n === 7 ? 7 : 100), n === 7 ? 7 : 100].reverse() as [number, number])
      const tb = tf.tensor2d(b, ta.shape)
      const s = tf.scalar(0.75)
      const row = tf.tensor1d(b.subarray(0, ta.shape[1]))
      const ops: [tf.Tensor, (i: number) => number][] = [
        [tf.add(ta, tb), (i) => a[i] + b[i]],
        [tf.sub(ta, tb), (i) => a[i] - b[i]],
        [tf.mul(ta, tb), (i) => a[i] * b[i]],
        [tf.mul(ta, s), (i) => a[i] * 0.75],
        [tf.mul(s, ta), (i) => 0.75 * a[i]],
        [tf.add(s, ta), (i) => 0.75 + a[i]],
        [tf.sub(ta, s), (i) => a[i] - 0.75],
        [tf.sub(s, ta), (i) => 0.75 - a[i]],
        [tf.add(ta, row), (i) => a[i] + b[i % ta.shape[1]]],
      ]
      for (const [t, f] of ops) {
        expect(t.shape).toEqual(ta.shape)
        const got = t.dataSync()
        let worst = 0
        for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(got[i] - Math.fround(f(i))))
        expect(worst).toBe(0)
      }
      tf.dispose([ta, tb, s, row, ...ops.map((o) => o[0])])
    }
  })

  it('transpose [0, 2, 1, 3] (attention heads) and other permutations', () => {
    const shape = [2, 64, 8, 40]
    const data = Float32Array.from({ length: 2 * 64 * 8 * 40 }, (_, i) => i)
    const x = tf.tensor4d(data, shape as [number, number, number, number])
    const y = tf.transpose(x, [0, 2, 1, 3])
    expect(y.shape).toEqual([2, 8, 64, 40])
    const got = y.dataSync()
    let bad = 0
    for (let a = 0; a < 2; a++) for (let c = 0; c < 8; c++) for (let b = 0; b < 64; b++) for (let d = 0; d < 40; d++) {
      if (got[((a * 8 + c) * 64 + b) * 40 + d] !== data[((a * 64 + b) * 8 + c) * 40 + d]) bad++
    }
    expect(bad).toBe(0)
    const z = tf.transpose(x, [3, 1, 2, 0])
    expect(z.shape).toEqual([40, 64, 8, 2])
    expect(z.dataSync()[1]).toBe(data[40 * 64 * 8])
    tf.dispose([x, y, z])
  })
})
