/**
 * The harness on the plain-JS toy backend: fast enough to check every method, the
 * not-applicable rule, the global scale and reproducibility.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { writePlots } from '../../src/eval/plots.js'
import { parseEvalArgs } from '../../src/eval/cli.js'
import { ci95HalfWidth, pairedDifferences, renderMarkdown, tunedCentralized } from '../../src/eval/report.js'
import { runEvaluation } from '../../src/eval/simulate.js'
import { createToyBackend } from '../../src/eval/toy.js'
import type { EvalConfig, EvalResults, RunRecord } from '../../src/eval/types.js'

const config: EvalConfig = {
  ...parseEvalArgs(['--backend', 'toy', '--out', 'unused']),
  clients: 4,
  rounds: 2,
  localSteps: 3,
  seeds: 2,
  trainExamples: 160,
  evalExamples: 40,
  batchSize: 4,
  lr: 0.003,
}

const toy = () => createToyBackend({ trainExamples: config.trainExamples, evalExamples: config.evalExamples, batchSize: config.batchSize, lr: config.lr })

function run(results: EvalResults, setting: string, method: string, seed = 0, scale = 1): RunRecord {
  const r = results.runs.find((x) => x.setting === setting && x.method === method && x.seed === seed && x.globalScale === scale)
  if (r === undefined) throw new Error(`no run ${setting}/${method}`)
  return r
}

/** results.json without wall-clock fields. */
function stripTimes(r: EvalResults): unknown {
  return JSON.parse(JSON.stringify(r, (k, v) => (k === 'seconds' ? undefined : v)))
}

describe('runEvaluation (toy backend)', () => {
  let results: EvalResults

  it('runs every strategy and both references in both settings', async () => {
    results = await runEvaluation(config, toy())
    // 2 seeds x 2 settings x (6 strategies + 2 references)
    expect(results.runs).toHaveLength(32)
    expect(results.summary).toHaveLength(16)
    expect(results.cacheHits).toBeGreaterThan(0) // round 1 is shared by the methods
    for (const r of results.runs.filter((x) => x.applicable)) {
      expect(r.rounds.map((x) => x.round)).toEqual([0, 1, 2])
      expect(r.rounds[0].evalLoss.pooled).toBe(results.base.evalLoss.pooled)
      expect(Number.isFinite(r.rounds[2].evalLoss.pooled)).toBe(true)
    }
  })

  it('FLoRA and FlexLoRA aggregate exactly; FedIT and zero-padding do not', () => {
    for (const setting of ['homo16', 'hetero']) {
      for (const round of run(results, setting, 'flora').rounds.slice(1)) expect(round.aggError).toBeLessThan(1e-6)
      for (const round of run(results, setting, 'flexlora').rounds.slice(1)) expect(round.aggError).toBeLessThan(1e-6)
      for (const round of run(results, setting, 'zero-padding').rounds.slice(1)) expect(round.aggError).toBeGreaterThan(1e-3)
    }
    for (const round of run(results, 'homo16', 'fedit').rounds.slice(1)) expect(round.aggError).toBeGreaterThan(1e-3)
    for (const round of run(results, 'homo16', 'ffa').rounds.slice(1)) expect(round.aggError).toBeLessThan(1e-6)
    // FlexLoRA's loss is in the redistribution: a truncated SVD in the heterogeneous setting
    expect(run(results, 'hetero', 'flexlora').rounds[1].startError).toBeGreaterThan(1e-3)
    expect(run(results, 'hetero', 'flora').rounds[1].startError).toBe(0)
  })

  it('with equal ranks zero-padding is FedIT', () => {
    expect(run(results, 'homo16', 'zero-padding').rounds).toEqual(run(results, 'homo16', 'fedit').rounds)
  })

  it('reports equal-rank strategies as not applicable with heterogeneous ranks, with the strategy\'s own error', () => {
    for (const m of ['fedit', 'ffa']) {
      const r = run(results, 'hetero', m)
      expect(r.applicable).toBe(false)
      expect(r.reason).toMatch(/^UnequalRanksError: /)
      expect(r.rounds).toEqual([])
      const row = results.summary.find((x) => x.setting === 'hetero' && x.method === m)
      expect(row?.applicable).toBe(false)
    }
    const md = renderMarkdown(results)
    expect(md).toMatch(/\| fedit \| [^|]+ \| not applicable \|/)
  })

  it('counts bytes per client per round', () => {
    const b = run(results, 'homo16', 'flora').rounds[1].bytes
    // q_proj [64, 64] and v_proj [64, 64] at rank 16: 16 * 256 floats
    expect(b?.up).toBe(16 * 256 * 4)
    expect(b?.downP2P).toBe(3 * 16 * 256 * 4)
    expect(run(results, 'homo16', 'ffa').rounds[1].bytes?.up).toBe(16 * 128 * 4)
  })

  it('scores local-only on each client\'s own data and on the whole held-out set', () => {
    const r = run(results, 'homo16', 'local-only')
    expect(r.crossEvalLoss).toBeGreaterThan(0)
    expect(r.rounds[2].aggError).toBeNull()
  })

  it('is reproducible: the same config gives the same numbers', async () => {
    const again = await runEvaluation(config, toy())
    expect(stripTimes(again)).toEqual(stripTimes(results))
  })

  it('runs a global-scale sweep as separate rows', async () => {
    const sweep = await runEvaluation({ ...config, seeds: 1, settings: ['hetero'], strategies: ['flora'], references: false, globalScales: [0.5, 1] }, toy())
    const half = run(sweep, 'hetero', 'flora', 0, 0.5)
    const one = run(sweep, 'hetero', 'flora', 0, 1)
    expect(half.rounds[1].aggError).toBeLessThan(1e-6) // measured against x * ideal
    // same round-1 training, half the step: the first merged model differs
    expect(half.rounds[1].evalLoss.pooled).not.toBe(one.rounds[1].evalLoss.pooled)
    expect(sweep.summary.map((s) => s.globalScale)).toEqual([0.5, 1])
  })

  it('sweeps the centralized learning rate (a row per lr, the best named tuned) and reports exact match with paired 95% CIs', async () => {
    const sweep = await runEvaluation(
      { ...config, seeds: 3, settings: ['homo16'], strategies: ['flora', 'fedit'], centralLrs: [0.0003, 0.003, 0.03] },
      createToyBackend({ trainExamples: config.trainExamples, evalExamples: config.evalExamples, batchSize: config.batchSize, lr: config.lr, exactMatch: true }),
    )
    const central = sweep.summary.filter((r) => r.method.startsWith('centralized'))
    expect(central.map((r) => r.method)).toEqual(['centralized lr=0.0003', 'centralized lr=0.003', 'centralized lr=0.03'])
    expect(sweep.runs.filter((r) => r.method.startsWith('centralized')).map((r) => r.lr)).toEqual([0.0003, 0.003, 0.03, 0.0003, 0.003, 0.03, 0.0003, 0.003, 0.03])
    const finals = central.map((r) => r.exactMatch?.mean ?? NaN)
    expect(new Set(finals).size).toBeGreaterThan(1) // the lr changes the outcome
    expect(tunedCentralized(sweep, 'homo16')?.exactMatch?.mean).toBe(Math.max(...finals))
    // Exact match is per example: on the toy (one prediction each) it equals token accuracy.
    for (const r of sweep.runs) for (const x of r.rounds) expect(x.exactMatch?.pooled).toBe(x.tokenAccuracy.pooled)
    const d = pairedDifferences(sweep, 'homo16', 'flora', (x) => x.exactMatch?.pooled ?? NaN).find((x) => x.method === 'fedit')
    const f = sweep.runs.filter((r) => r.method === 'flora').map((r) => r.rounds[2].exactMatch?.pooled ?? NaN)
    const e = sweep.runs.filter((r) => r.method === 'fedit').map((r) => r.rounds[2].exactMatch?.pooled ?? NaN)
    expect(d?.diff.mean).toBeCloseTo((e[0] - f[0] + e[1] - f[1] + e[2] - f[2]) / 3, 12)
    const md = renderMarkdown(sweep)
    expect(md).toContain('## Final held-out exact match')
    expect(md).toContain('Paired differences in exact match from flora, with 95% confidence intervals')
    expect(md).toMatch(/Tuned centralized \(homo16\): centralized lr=/)
    const dir = await mkdtemp(join(tmpdir(), 'flora-plots-'))
    try {
      expect(await writePlots(sweep, dir)).toEqual(expect.arrayContaining(['exact-match.png', 'paired-differences.png']))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('ci95HalfWidth', () => {
  it('is t(0.975, n-1) s / sqrt(n)', () => {
    expect(ci95HalfWidth({ mean: 0, std: 1, n: 5 })).toBeCloseTo(2.776 / Math.sqrt(5), 12)
    expect(ci95HalfWidth({ mean: 0, std: 2, n: 2 })).toBeCloseTo((12.706 * 2) / Math.sqrt(2), 12)
    expect(ci95HalfWidth({ mean: 0, std: 1, n: 100 })).toBeCloseTo(1.96 / 10, 12)
    expect(ci95HalfWidth({ mean: 0, std: 0, n: 1 })).toBeNaN()
  })
})

describe('flora-pd in the harness', () => {
  it('is exact like FLoRA, restarts from B = 0 (start error 0) and goes its own way from round 2', async () => {
    const r = await runEvaluation({ ...config, seeds: 1, settings: ['hetero'], strategies: ['flora', 'flora-pd'], references: false }, toy())
    const flora = run(r, 'hetero', 'flora')
    const pd = run(r, 'hetero', 'flora-pd')
    for (const x of pd.rounds.slice(1)) {
      expect(x.aggError).toBeLessThan(1e-6)
      expect(x.startError).toBe(0)
    }
    // Round 1 is the same training for both (fresh LoRAs); round 2 starts from other A's.
    expect(pd.rounds[1].evalLoss.pooled).toBe(flora.rounds[1].evalLoss.pooled)
    expect(pd.rounds[2].evalLoss.pooled).not.toBe(flora.rounds[2].evalLoss.pooled)
  })
})
