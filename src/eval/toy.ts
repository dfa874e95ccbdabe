/**
 * A toy SimBackend in plain JavaScript: a two-layer linear classifier whose two layers are
 * named like a Llama's q_proj and v_proj, on a synthetic non-IID task. It exists so the
 * harness (splits, strategies, merges, metrics, reports) can be tested in milliseconds
 * and independently of tfjs; it says nothing about language models.
 *
 * Task: C categories; category c has a teacher T_c = T_0 + U_c V_c^T (a rank-2 shift of a
 * shared teacher) and an input mean mu_c. An example of c is x ~ N(mu_c, I), label
 * y = argmax(T_c x). Model: logits = W_v_eff (W_q_eff x), with W_eff = W + s B A and a
 * base close to (I, T_0), so LoRA has to learn the per-category shifts. Loss: softmax
 * cross-entropy; one "token" per example. Training: Adam on A and B (A frozen for FFA).
 */
import { createPrng, type Prng } from '../lora/prng.js'
import type { AdapterSet, LoraModule, ModuleShape } from '../lora/types.js'
import type { ExampleScores, SimBackend, TaskExample, TrainJob, TrainOutcome } from './types.js'

export interface ToyOptions {
  readonly trainExamples: number
  readonly evalExamples: number
  readonly batchSize: number
  readonly lr: number
  readonly seed?: number
  /** Input and hidden width (default 64, so rank-64 adapters fit). */
  readonly width?: number
  readonly classes?: number
  readonly categories?: number
  /** Also report per-example exact match (the argmax class is right), like a task with accepted answers. */
  readonly exactMatch?: boolean
}

interface ToyExample extends TaskExample {
  readonly x: Float64Array
  readonly y: number
}

const Q = 'model.layers.0.self_attn.q_proj'
const V = 'model.layers.0.self_attn.v_proj'

function gaussianMatrix(prng: Prng, n: number, std: number): Float64Array {
  const out = new Float64Array(n)
  prng.fillNormal(out, 0, std)
  return out
}

export function createToyBackend(options: ToyOptions): SimBackend {
  const d = options.width ?? 64
  const nClass = options.classes ?? 64
  const nCat = options.categories ?? 12
  const root = createPrng(options.seed ?? 0).fork('flora-eval/toy')
  const t0 = gaussianMatrix(root.fork('teacher'), nClass * d, 1 / Math.sqrt(d))
  const teachers: Float64Array[] = []
  const means: Float64Array[] = []
  for (let c = 0; c < nCat; c++) {
    const p = root.fork(`category-${c}`)
    const u = gaussianMatrix(p, nClass * 2, 1)
    const v = gaussianMatrix(p, d * 2, 1 / Math.sqrt(d))
    const t = t0.slice()
    for (let i = 0; i < nClass; i++) for (let j = 0; j < d; j++) t[i * d + j] += u[i * 2] * v[j * 2] + u[i * 2 + 1] * v[j * 2 + 1]
    teachers.push(t)
    means.push(gaussianMatrix(p, d, 1.5 / Math.sqrt(d)).map((m) => m * Math.sqrt(d)))
  }
  const makeExamples = (label: string, n: number): ToyExample[] => {
    const p = root.fork(label)
    return Array.from({ length: n }, () => {
      const c = p.int(nCat)
      const x = new Float64Array(d)
      for (let j = 0; j < d; j++) x[j] = means[c][j] + p.normal()
      const t = teachers[c]
      let best = 0
      let bestV = -Infinity
      for (let i = 0; i < nClass; i++) {
        let s = 0
        for (let j = 0; j < d; j++) s += t[i * d + j] * x[j]
        if (s > bestV) {
          bestV = s
          best = i
        }
      }
      return { category: `toy.c${String(c).padStart(2, '0')}`, x, y: best }
    })
  }
  const trainExamples = makeExamples('train', options.trainExamples)
  const evalExamples = makeExamples('eval', options.evalExamples)

  const baseNoise = root.fork('base')
  const base = new Map<string, Float32Array>()
  const wq = new Float32Array(d * d)
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) wq[i * d + j] = (i === j ? 1 : 0) + 0.05 * baseNoise.normal()
  base.set(Q, wq)
  base.set(V, Float32Array.from(t0, (v) => v + 0.1 * baseNoise.normal() / Math.sqrt(d)))
  const shapes: ModuleShape[] = [
    { name: Q, inFeatures: d, outFeatures: d },
    { name: V, inFeatures: d, outFeatures: nClass },
  ]

  /** Dense W + s B A in float64 for a module (adapter optional). */
  const effective = (shape: ModuleShape, m: { scaling: number; rank: number; a: Float64Array; b: Float64Array } | undefined): Float64Array => {
    const w = Float64Array.from(base.get(shape.name) as Float32Array)
    if (m === undefined) return w
    const { inFeatures: inF, outFeatures: out } = shape
    for (let i = 0; i < out; i++) {
      for (let t = 0; t < m.rank; t++) {
        const bv = m.scaling * m.b[i * m.rank + t]
        if (bv === 0) continue
        for (let j = 0; j < inF; j++) w[i * inF + j] += bv * m.a[t * inF + j]
      }
    }
    return w
  }

  /** Forward one example: hidden z, logits, and loss/grad of the softmax CE. */
  const forward = (wqE: Float64Array, wvE: Float64Array, ex: ToyExample) => {
    const z = new Float64Array(d)
    for (let i = 0; i < d; i++) {
      let s = 0
      for (let j = 0; j < d; j++) s += wqE[i * d + j] * ex.x[j]
      z[i] = s
    }
    const logits = new Float64Array(nClass)
    let max = -Infinity
    for (let i = 0; i < nClass; i++) {
      let s = 0
      for (let j = 0; j < d; j++) s += wvE[i * d + j] * z[j]
      logits[i] = s
      if (s > max) max = s
    }
    let sum = 0
    let arg = 0
    for (let i = 0; i < nClass; i++) {
      if (logits[i] > logits[arg]) arg = i
      sum += Math.exp(logits[i] - max)
    }
    const loss = Math.log(sum) + max - logits[ex.y]
    return { z, logits, max, sum, loss, correct: arg === ex.y ? 1 : 0 }
  }

  return {
    description: { model: 'toy two-layer linear classifier', width: d, classes: nClass, categories: nCat, backend: 'plain JS' },
    shapes,
    trainExamples,
    evalExamples,
    getBaseWeight(module) {
      const w = base.get(module)
      if (w === undefined) throw new Error(`toy backend: no module ${module}`)
      return w.slice()
    },
    setBaseWeight(module, weight) {
      const w = base.get(module)
      if (w === undefined || w.length !== weight.length) throw new Error(`toy backend: bad weight for ${module}`)
      base.set(module, weight.slice())
    },
    async evaluate(idx) {
      const wqE = effective(shapes[0], undefined)
      const wvE = effective(shapes[1], undefined)
      const out: ExampleScores = {
        lossSum: new Float64Array(idx.length),
        tokens: new Float64Array(idx.length).fill(1),
        correct: new Float64Array(idx.length),
      }
      idx.forEach((i, j) => {
        const f = forward(wqE, wvE, evalExamples[i])
        out.lossSum[j] = f.loss
        out.correct[j] = f.correct
      })
      // One prediction per example: its exact match is its accuracy.
      return options.exactMatch === true ? { ...out, exact: out.correct.slice() } : out
    },
    async train(job: TrainJob): Promise<TrainOutcome> {
      const mods = shapes.map((shape) => {
        const m = job.start.modules.find((x) => x.name === shape.name)
        if (m === undefined) throw new Error(`toy backend: start adapter lacks ${shape.name}`)
        return {
          shape,
          src: m,
          scaling: m.scaling,
          rank: m.rank,
          a: Float64Array.from(m.loraA),
          b: Float64Array.from(m.loraB),
          ma: new Float64Array(m.loraA.length),
          va: new Float64Array(m.loraA.length),
          mb: new Float64Array(m.loraB.length),
          vb: new Float64Array(m.loraB.length),
        }
      })
      const prng = createPrng(job.seed).fork('toy-batches')
      // A job's own lr is in the run's units; the toy's useful step is twice that (see cli.ts).
      const lr = job.lr === undefined ? options.lr : job.lr * 2
      const beta1 = 0.9
      const beta2 = 0.999
      const eps = 1e-8
      let lossTotal = 0
      for (let step = 1; step <= job.steps; step++) {
        const wE = mods.map((m) => effective(m.shape, m))
        const gq = new Float64Array(d * d)
        const gv = new Float64Array(nClass * d)
        let batchLoss = 0
        for (let e = 0; e < options.batchSize; e++) {
          const ex = trainExamples[job.examples[prng.int(job.examples.length)]]
          const f = forward(wE[0], wE[1], ex)
          batchLoss += f.loss
          const g = new Float64Array(nClass)
          for (let i = 0; i < nClass; i++) g[i] = Math.exp(f.logits[i] - f.max) / f.sum - (i === ex.y ? 1 : 0)
          const dz = new Float64Array(d)
          for (let i = 0; i < nClass; i++) {
            const gi = g[i] / options.batchSize
            for (let j = 0; j < d; j++) {
              gv[i * d + j] += gi * f.z[j]
              dz[j] += gi * wE[1][i * d + j]
            }
          }
          for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) gq[i * d + j] += dz[i] * ex.x[j]
        }
        lossTotal += batchLoss / options.batchSize
        const bc1 = 1 - beta1 ** step
        const bc2 = 1 - beta2 ** step
        const adam = (p: Float64Array, g: Float64Array, m: Float64Array, v: Float64Array): void => {
          for (let i = 0; i < p.length; i++) {
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            p[i] -= (lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + eps)
          }
        }
        mods.forEach((m, idx) => {
          const gW = idx === 0 ? gq : gv
          const { inFeatures: inF, outFeatures: out } = m.shape
          const r = m.rank
          // W_eff = W + s B A:  dL/dB = s gW A^T,  dL/dA = s B^T gW
          const gb = new Float64Array(out * r)
          const ga = new Float64Array(r * inF)
          for (let i = 0; i < out; i++) {
            for (let t = 0; t < r; t++) {
              let s = 0
              const bv = m.b[i * r + t]
              for (let j = 0; j < inF; j++) {
                s += gW[i * inF + j] * m.a[t * inF + j]
                ga[t * inF + j] += m.scaling * bv * gW[i * inF + j]
              }
              gb[i * r + t] = m.scaling * s
            }
          }
          adam(m.b, gb, m.mb, m.vb)
          if (!job.freezeA) adam(m.a, ga, m.ma, m.va)
        })
      }
      const modules: LoraModule[] = mods.map((m) => ({
        ...m.src,
        loraA: job.freezeA ? m.src.loraA.slice() : Float32Array.from(m.a),
        loraB: Float32Array.from(m.b),
      }))
      const adapter: AdapterSet = { modules }
      return { adapter, meanLoss: lossTotal / Math.max(1, job.steps) }
    },
    dispose() {},
  }
}
