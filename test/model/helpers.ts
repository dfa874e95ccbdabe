/**
 * Test helpers: the wasm backend, a tiny config, and an independent float64 reference
 * implementation of the Llama equations in plain loops (no tfjs).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { AdapterSet } from '../../src/lora/types.js'
import { selectBackend, type BackendSelection } from '../../src/model/backend.js'
import { llamaConfig, type LlamaConfig } from '../../src/model/config.js'

export async function useWasm(): Promise<BackendSelection> {
  return selectBackend('wasm', { fallback: false })
}

/** 2 layers, GQA (4 query heads on 2 kv heads), untied. */
export const TINY: LlamaConfig = llamaConfig({
  vocabSize: 37,
  hiddenSize: 32,
  intermediateSize: 48,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  maxPositionEmbeddings: 64,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
})

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'flora-model-'))
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) }
}

/** y = W x (+ s * B (A x)) for W [out, in] row-major. */
function refLinear(w: Float32Array, out: number, inF: number, x: Float64Array, lora?: { a: Float32Array; b: Float32Array; r: number; s: number }): Float64Array {
  const y = new Float64Array(out)
  for (let o = 0; o < out; o++) {
    let acc = 0
    for (let i = 0; i < inF; i++) acc += w[o * inF + i] * x[i]
    y[o] = acc
  }
  if (lora !== undefined) {
    const h = new Float64Array(lora.r)
    for (let k = 0; k < lora.r; k++) {
      let acc = 0
      for (let i = 0; i < inF; i++) acc += lora.a[k * inF + i] * x[i]
      h[k] = acc
    }
    for (let o = 0; o < out; o++) {
      let acc = 0
      for (let k = 0; k < lora.r; k++) acc += lora.b[o * lora.r + k] * h[k]
      y[o] += lora.s * acc
    }
  }
  return y
}

function refRmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ms = 0
  for (const v of x) ms += v * v
  ms /= x.length
  const inv = 1 / Math.sqrt(ms + eps)
  return x.map((v, i) => v * inv * w[i])
}

/** HF rotate_half convention on one head vector at position p. */
function refRope(x: Float64Array, p: number, theta: number): Float64Array {
  const hd = x.length
  const half = hd / 2
  const out = new Float64Array(hd)
  for (let j = 0; j < hd; j++) {
    const i = j % half
    const angle = p / theta ** ((2 * i) / hd)
    const rot = j < half ? -x[j + half] : x[j - half]
    out[j] = x[j] * Math.cos(angle) + rot * Math.sin(angle)
  }
  return out
}

/** Logits [T * vocab] for each sequence, in float64. */
export function referenceLogits(c: LlamaConfig, w: ReadonlyMap<string, Float32Array>, seqs: number[][], adapter?: AdapterSet): Float64Array[] {
  const W = (n: string) => {
    const v = w.get(n)
    if (v === undefined) throw new Error(`reference: missing ${n}`)
    return v
  }
  const loraOf = (module: string) => {
    const m = adapter?.modules.find((x) => x.name === module)
    return m === undefined ? undefined : { a: m.loraA, b: m.loraB, r: m.rank, s: m.scaling }
  }
  const d = c.hiddenSize
  const hd = c.headDim
  const rep = c.numHeads / c.numKvHeads
  const lin = (layer: number, block: string, kind: string, out: number, inF: number, x: Float64Array) => {
    const name = `model.layers.${layer}.${block}.${kind}`
    return refLinear(W(`${name}.weight`), out, inF, x, loraOf(name))
  }
  return seqs.map((ids) => {
    const T = ids.length
    let xs = ids.map((id) => Float64Array.from(W('model.embed_tokens.weight').subarray(id * d, (id + 1) * d)))
    for (let l = 0; l < c.numLayers; l++) {
      const norm1 = W(`model.layers.${l}.input_layernorm.weight`)
      const n = xs.map((x) => refRmsNorm(x, norm1, c.rmsNormEps))
      const q = n.map((x) => lin(l, 'self_attn', 'q_proj', c.numHeads * hd, d, x))
      const k = n.map((x) => lin(l, 'self_attn', 'k_proj', c.numKvHeads * hd, d, x))
      const v = n.map((x) => lin(l, 'self_attn', 'v_proj', c.numKvHeads * hd, d, x))
      const head = (vec: Float64Array, h: number) => vec.subarray(h * hd, (h + 1) * hd)
      const attnOut = xs.map(() => new Float64Array(c.numHeads * hd))
      for (let h = 0; h < c.numHeads; h++) {
        const kvh = Math.floor(h / rep)
        for (let t = 0; t < T; t++) {
          const qt = refRope(head(q[t], h), t, c.ropeTheta)
          const scores: number[] = []
          for (let j = 0; j <= t; j++) {
            const kj = refRope(head(k[j], kvh), j, c.ropeTheta)
            let dot = 0
            for (let e = 0; e < hd; e++) dot += qt[e] * kj[e]
            scores.push(dot / Math.sqrt(hd))
          }
          const mx = Math.max(...scores)
          const ex = scores.map((s) => Math.exp(s - mx))
          const z = ex.reduce((a, b) => a + b, 0)
          for (let j = 0; j <= t; j++) {
            const vj = head(v[j], kvh)
            for (let e = 0; e < hd; e++) attnOut[t][h * hd + e] += (ex[j] / z) * vj[e]
          }
        }
      }
      xs = xs.map((x, t) => {
        const o = lin(l, 'self_attn', 'o_proj', d, c.numHeads * hd, attnOut[t])
        return x.map((val, i) => val + o[i])
      })
      const norm2 = W(`model.layers.${l}.post_attention_layernorm.weight`)
      xs = xs.map((x) => {
        const m = refRmsNorm(x, norm2, c.rmsNormEps)
        const g = lin(l, 'mlp', 'gate_proj', c.intermediateSize, d, m)
        const u = lin(l, 'mlp', 'up_proj', c.intermediateSize, d, m)
        const act = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i])
        const down = lin(l, 'mlp', 'down_proj', d, c.intermediateSize, act)
        return x.map((val, i) => val + down[i])
      })
    }
    const head = c.tieWordEmbeddings ? W('model.embed_tokens.weight') : W('lm_head.weight')
    const out = new Float64Array(T * c.vocabSize)
    xs.forEach((x, t) => {
      const h = refRmsNorm(x, W('model.norm.weight'), c.rmsNormEps)
      const logits = refLinear(head, c.vocabSize, d, h)
      out.set(logits, t * c.vocabSize)
    })
    return out
  })
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}
