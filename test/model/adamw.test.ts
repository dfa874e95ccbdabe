/**
 * The trainer's AdamW against torch.optim.AdamW + clip_grad_norm_(max_norm=1.0): the expected
 * values below were printed by PyTorch 1.13 (float32) for the same parameters and gradients.
 */
import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { AdamW } from '../../src/model/adamw.js'
import { useWasm } from './helpers.js'

const GRADS: [number[], number[]][] = [
  [[0.3, -2.0, 1.0, 0.1], [0.5, 0.5, -1.5]],
  [[0.01, 0.02, -0.03, 0.04], [0.0, -0.05, 0.06]],
  [[3.0, 1.0, -2.0, 0.5], [1.0, -1.0, 0.25]],
]
const TORCH: { norm: number; a: number[]; b: number[] }[] = [
  { norm: 2.8017852306365967, a: [0.3995000123977661, -0.8990000486373901, 1.8980000019073486, 0.14975003898143768], b: [0.6492500305175781, -0.5995000004768372, 1.5985000133514404] },
  { norm: 0.09539391845464706, a: [0.325462281703949, -0.8332066535949707, 1.835567831993103, 0.04946567863225937], b: [0.5815950036048889, -0.6433340311050415, 1.6551982164382935] },
  { norm: 4.038873195648193, a: [0.2537650465965271, -0.8059282302856445, 1.8581044673919678, -0.0399516224861145], b: [0.4989069104194641, -0.6121013164520264, 1.6910123825073242] },
]

describe('AdamW', () => {
  beforeAll(async () => {
    await useWasm()
  })

  it('matches torch.optim.AdamW with global-norm clipping, step by step', () => {
    const a = tf.variable(tf.tensor2d([0.5, -1.0, 2.0, 0.25], [2, 2]))
    const b = tf.variable(tf.tensor1d([0.75, -0.5, 1.5]))
    const opt = new AdamW([a, b], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 })
    const before = tf.memory().numTensors
    GRADS.forEach(([ga, gb], i) => {
      const grads = [tf.tensor2d(ga, [2, 2]), tf.tensor1d(gb)]
      const norm = opt.step(grads, 0.1)
      tf.dispose(grads)
      expect(norm).toBeCloseTo(TORCH[i].norm, 6)
      const got = [...a.dataSync(), ...b.dataSync()]
      const want = [...TORCH[i].a, ...TORCH[i].b]
      got.forEach((x, j) => expect(Math.abs(x - want[j])).toBeLessThan(2e-7))
    })
    expect(tf.memory().numTensors).toBe(before) // assign replaces, nothing accumulates
    tf.dispose([a, b])
  })

  it('rejects gradients that do not match the parameters', () => {
    const a = tf.variable(tf.zeros([3]))
    const opt = new AdamW([a], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 })
    expect(() => opt.step([], 0.1)).toThrow(/0 gradients for 1 parameters/)
    const g = tf.zeros([4])
    expect(() => opt.step([g], 0.1)).toThrow(/gradient 0 has 4 values, its parameter 3/)
    tf.dispose([a, g])
  })
})
