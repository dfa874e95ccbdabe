/**
 * scripts/eval-merge.ts: a comparison split by rank setting over two processes merges into
 * what one process running both settings gives.
 */
import { describe, expect, it } from 'vitest'
import { parseEvalArgs } from '../../src/eval/cli.js'
import { runEvaluation } from '../../src/eval/simulate.js'
import { createToyBackend } from '../../src/eval/toy.js'
import type { EvalConfig, EvalResults } from '../../src/eval/types.js'
import { mergeResults } from '../../scripts/eval-merge.js'

const config: EvalConfig = {
  ...parseEvalArgs(['--backend', 'toy', '--out', 'unused']),
  clients: 4,
  rounds: 2,
  localSteps: 2,
  seeds: 2,
  trainExamples: 120,
  evalExamples: 30,
  strategies: ['flora', 'fedit'],
}
const toy = () => createToyBackend({ trainExamples: config.trainExamples, evalExamples: config.evalExamples, batchSize: config.batchSize, lr: config.lr })
const numbers = (r: EvalResults): unknown => JSON.parse(JSON.stringify({ runs: r.runs, summary: r.summary, config: r.config }, (k, v) => (k === 'seconds' ? undefined : v)))

describe('eval-merge', () => {
  it('merges a split by setting into the single run of both settings', async () => {
    const both = await runEvaluation(config, toy())
    const homo = await runEvaluation({ ...config, settings: ['homo16'] }, toy())
    const hetero = await runEvaluation({ ...config, settings: ['hetero'] }, toy())
    const merged = mergeResults([hetero, homo])
    expect(merged.config.settings).toEqual(['homo16', 'hetero'])
    const sort = (r: EvalResults): EvalResults => ({ ...r, runs: [...r.runs].sort((a, b) => `${a.setting}${a.seed}${a.method}`.localeCompare(`${b.setting}${b.seed}${b.method}`)) })
    const a = numbers(sort(merged)) as { runs: unknown; summary: unknown[]; config: unknown }
    const b = numbers(sort(both)) as typeof a
    expect(a.runs).toEqual(b.runs)
    expect(new Set(a.summary.map((x) => JSON.stringify(x)))).toEqual(new Set(b.summary.map((x) => JSON.stringify(x))))
    expect(() => mergeResults([homo, homo])).toThrow(/more than one part/)
    expect(() => mergeResults([homo, { ...hetero, config: { ...hetero.config, lr: 1 } }])).toThrow(/differs from part 1/)
  })
})
