/**
 * A decoder layer's two residual sublayers, each as one node of the gradient tape with a
 * backward pass written out by hand (compute path 'native'):
 *
 *   attention:  out = x + o(attn(rope(q(n)), rope(k(n)), v(n))),   n = rmsNorm(x)
 *   MLP:        out = x + down(swiglu(gate(m), up(m))),             m = rmsNorm(x)
 *
 * Through the ops one by one, tfjs's tape keeps every intermediate tensor of the forward
 * pass, and every gradient of the backward pass, alive until the whole backward pass ends.
 * Here the tape sees one op per sublayer: the forward pass keeps only what its backward
 * pass reads (x, the roped q and k, v, the attention probabilities, SwiGLU's g and u, and
 * the adapters' inputs), and the backward pass frees its intermediates, and those saved
 * tensors, as soon as each sublayer's gradients are computed. On a
 * TinyLlama-1.1B-shaped model this cuts the training step's peak memory by about a third
 * (docs/TRAINING.md).
 *
 * The products and kernels are those of the op-by-op path, so the forward values are the
 * same bits; gradients agree to float32 rounding (sums of several terms are added in
 * another order), which test/model/layer-grad.test.ts holds them to. The LoRA factors of
 * the sublayer's modules are inputs of the node, so tf.variableGrads sees them.
 */
import * as tf from '@tensorflow/tfjs'
import { fusedKernelCalls as K } from './kernels.js'
import type { LoraDropout, LoraGrads, LoraKeep, LoraLinear } from './lora-layer.js'

export interface SublayerContext {
  readonly batch: number
  readonly seqLen: number
  readonly heads: number
  readonly kvHeads: number
  readonly headDim: number
  readonly eps: number
  /** RoPE tables [T, hd]. */
  readonly cos: tf.Tensor2D
  readonly sin: tf.Tensor2D
  readonly dropout: LoraDropout | undefined
}

export interface AttentionLayer {
  readonly norm: tf.Tensor1D
  readonly q: LoraLinear
  readonly k: LoraLinear
  readonly v: LoraLinear
  readonly o: LoraLinear
}

export interface MlpLayer {
  readonly norm: tf.Tensor1D
  readonly gate: LoraLinear
  readonly up: LoraLinear
  readonly down: LoraLinear
}

/** The tensors a sublayer's forward pass keeps for its backward pass, by name. */
class Saved {
  readonly names: string[] = []
  readonly tensors: tf.Tensor[] = []
  add(name: string, t: tf.Tensor | undefined): void {
    if (t === undefined) return
    this.names.push(name)
    this.tensors.push(t)
  }
  /** What LoraLinear.backward needs of a module, under `prefix`. */
  addKeep(prefix: string, keep: LoraKeep): void {
    this.add(`${prefix}.xd`, keep.xd)
    this.add(`${prefix}.mask`, keep.mask)
    this.add(`${prefix}.h`, keep.h)
  }
}

/** The saved tensors as the backward pass gets them (tfjs's copies), by the same names. */
interface SavedReader {
  get<T extends tf.Tensor>(name: string): T
  keep(prefix: string): LoraKeep
}

function reader(names: readonly string[], tensors: readonly tf.Tensor[]): SavedReader {
  const byName = new Map(names.map((n, i) => [n, tensors[i]]))
  const get = <T extends tf.Tensor>(name: string): T => byName.get(name) as T
  return {
    get,
    keep: (prefix) => ({ xd: get<tf.Tensor2D>(`${prefix}.xd`), mask: get<tf.Tensor2D>(`${prefix}.mask`), h: get<tf.Tensor2D>(`${prefix}.h`) }),
  }
}

/**
 * out = x + sublayer(x) as one tape node. `forward` computes the sublayer's output from x and
 * saves what `backward` needs; `backward` turns dL/d(sublayer output) into dL/dx through the
 * sublayer and the gradients of `linears` (in their order). The residual's identity path and
 * the LoRA factors as the node's inputs are handled here.
 */
function residualNode(
  x: tf.Tensor2D,
  linears: readonly LoraLinear[],
  forward: (x: tf.Tensor2D, saved: Saved) => tf.Tensor2D,
  backward: (dy: tf.Tensor2D, saved: SavedReader) => { dx: tf.Tensor2D; grads: LoraGrads[] },
): tf.Tensor2D {
  const f = tf.customGrad((...args) => {
    const xIn = args[0] as tf.Tensor2D
    const save = args[args.length - 1] as unknown as tf.GradSaveFunc
    const saved = new Saved()
    saved.add('x', xIn)
    const y = forward(xIn, saved)
    save(saved.tensors)
    return {
      value: xIn.add(y) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, tensors: tf.Tensor[]) => {
        // tfjs runs a custom gradient outside any scope of its own, so its intermediates
        // would live until the whole backward pass ends, and it keeps the saved tensors until
        // then too: free both now (a node's backward pass runs once per gradient computation).
        const grads = tf.tidy(() => {
          const { dx, grads: g } = backward(dy as tf.Tensor2D, reader(saved.names, tensors))
          const loraGrads = linears.flatMap((l, i) => (l.hasAdapter ? [g[i].dA as tf.Tensor, g[i].dB as tf.Tensor] : []))
          return [dy.add(dx), ...loraGrads]
        })
        for (const t of tensors) t.dispose()
        return grads
      },
    }
  })
  return f(x, ...linears.flatMap((l) => l.variables())) as tf.Tensor2D
}

/** x + the attention sublayer of x [B*T, d] (see the module comment). */
export function attentionSublayer(x: tf.Tensor2D, layer: AttentionLayer, c: SublayerContext): tf.Tensor2D {
  const { batch: b, seqLen: t, heads: nh, kvHeads: nkv, headDim: hd } = c
  const scale = 1 / Math.sqrt(hd)
  return residualNode(
    x,
    [layer.q, layer.k, layer.v, layer.o],
    (xIn, saved) => {
      const n = K.rmsNorm(xIn, layer.norm, c.eps)
      // The modules in the op-by-op path's order, so the dropout masks come in the same order.
      const q = layer.q.forwardKeep(n, c.dropout)
      const k = layer.k.forwardKeep(n, c.dropout)
      const v = layer.v.forwardKeep(n, c.dropout)
      const qr = K.rope(q.y.reshape<tf.Tensor4D>([b, t, nh, hd]), c.cos, c.sin, false)
      const kr = K.rope(k.y.reshape<tf.Tensor4D>([b, t, nkv, hd]), c.cos, c.sin, false)
      const v4 = v.y.reshape<tf.Tensor4D>([b, t, nkv, hd])
      const [a, probs] = K.attention(qr, kr, v4, scale)
      const o = layer.o.forwardKeep(a.reshape([b * t, nh * hd]), c.dropout)
      saved.add('q', qr)
      saved.add('k', kr)
      saved.add('v', v4)
      saved.add('probs', probs)
      // The tables are slices made for this forward pass: freed when it ends, unless saved.
      saved.add('cos', c.cos)
      saved.add('sin', c.sin)
      saved.addKeep('q', q.keep)
      saved.addKeep('k', k.keep)
      saved.addKeep('v', v.keep)
      saved.addKeep('o', o.keep)
      return o.y
    },
    (dy, s) => {
      const go = layer.o.backward(dy, s.keep('o'))
      const [dq, dk, dv] = K.attentionGrad(go.dx.reshape<tf.Tensor4D>([b, t, nh, hd]), s.get('q'), s.get('k'), s.get('v'), s.get('probs'), scale)
      const [cos, sin] = [s.get<tf.Tensor2D>('cos'), s.get<tf.Tensor2D>('sin')]
      const gq = layer.q.backward(K.rope(dq, cos, sin, true).reshape([b * t, nh * hd]), s.keep('q'))
      const gk = layer.k.backward(K.rope(dk, cos, sin, true).reshape([b * t, nkv * hd]), s.keep('k'))
      const gv = layer.v.backward(dv.reshape([b * t, nkv * hd]), s.keep('v'))
      const dn = gv.dx.add(gk.dx).add(gq.dx) as tf.Tensor2D
      return { dx: K.rmsNormGrad(dn, s.get('x'), layer.norm, c.eps), grads: [gq, gk, gv, go] }
    },
  )
}

/** x + the MLP sublayer of x [B*T, d] (see the module comment). */
export function mlpSublayer(x: tf.Tensor2D, layer: MlpLayer, c: SublayerContext): tf.Tensor2D {
  return residualNode(
    x,
    [layer.gate, layer.up, layer.down],
    (xIn, saved) => {
      const m = K.rmsNorm(xIn, layer.norm, c.eps)
      const g = layer.gate.forwardKeep(m, c.dropout)
      const u = layer.up.forwardKeep(m, c.dropout)
      const down = layer.down.forwardKeep(K.swiglu(g.y, u.y), c.dropout)
      saved.add('g', g.y)
      saved.add('u', u.y)
      saved.addKeep('gate', g.keep)
      saved.addKeep('up', u.keep)
      saved.addKeep('down', down.keep)
      return down.y
    },
    (dy, s) => {
      const gd = layer.down.backward(dy, s.keep('down'))
      const [dg, du] = K.swigluGrad(gd.dx, s.get('g'), s.get('u'))
      const gg = layer.gate.backward(dg, s.keep('gate'))
      const gu = layer.up.backward(du, s.keep('up'))
      const dm = gu.dx.add(gg.dx) as tf.Tensor2D
      return { dx: K.rmsNormGrad(dm, s.get('x'), layer.norm, c.eps), grads: [gg, gu, gd] }
    },
  )
}
