import { describe, expect, it } from 'vitest'
import { createProgressReporter } from '../../src/model/progress.js'
import type { StepInfo } from '../../src/model/trainer.js'

const step = (i: number): StepInfo => ({
  step: i,
  steps: 3,
  loss: 2.5 / i,
  gradNorm: 0.5,
  lr: 3e-4,
  tokens: 512,
  targetTokens: 400,
  elapsedMs: 100 * i,
  tokensPerSecond: 5120,
  ...(i === 3 ? { eval: { loss: 1.1, perplexity: Math.exp(1.1), tokens: 40 } } : {}),
})

describe('progress reporter', () => {
  it('writes one JSON line per step when not on a TTY', () => {
    const lines: string[] = []
    const stream = { isTTY: false, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream
    const r = createProgressReporter({ stream, label: 'peer-1' })
    for (let i = 1; i <= 3; i++) r.onStep(step(i))
    r.stop()
    expect(lines).toHaveLength(3)
    const last = JSON.parse(lines[2])
    expect(last).toMatchObject({ event: 'train_step', label: 'peer-1', step: 3, steps: 3, evalLoss: 1.1 })
    expect(lines.every((l) => l.endsWith('\n'))).toBe(true)
  })
})
