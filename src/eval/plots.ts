/**
 * Plots of a run as PNG files: Vega-Lite specs compiled and rendered to SVG by Vega in Node
 * (no browser, no canvas), then rasterized by resvg (a prebuilt binary shipped in its npm
 * package). Text uses the system fonts (DejaVu Sans where present).
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Resvg } from '@resvg/resvg-js'
import * as vega from 'vega'
import * as vl from 'vega-lite'
import { ci95HalfWidth, methodLabel, pairedDifferences } from './report.js'
import type { EvalResults, RunRecord } from './types.js'

/** Values below this are drawn at it on log axes (FLoRA's error can be exactly 0). */
export const LOG_FLOOR = 1e-16

interface Point {
  setting: string
  method: string
  kind: 'federated' | 'reference'
  round: number
  mean: number
  lo: number
  hi: number
}

/** The scale the per-round plots show: 1 when it was run, else the first one configured. */
function mainScale(results: EvalResults): number {
  return results.config.globalScales.includes(1) ? 1 : results.config.globalScales[0]
}

function perRound(results: EvalResults, metric: (r: RunRecord, i: number) => number): Point[] {
  const groups = new Map<string, RunRecord[]>()
  const x = mainScale(results)
  for (const r of results.runs) {
    if (!r.applicable || (r.kind === 'strategy' && r.globalScale !== x)) continue
    const k = `${r.setting}\0${methodLabel(r.method, r.globalScale)}`
    groups.set(k, [...(groups.get(k) ?? []), r])
  }
  const pts: Point[] = []
  for (const [k, runs] of groups) {
    const [setting, name] = k.split('\0')
    // Local-only has no global model: each client is scored on its own held-out data.
    const method = name === 'local-only' ? 'local-only (own data)' : name
    for (let i = 0; i < runs[0].rounds.length; i++) {
      const xs = runs.map((r) => metric(r, i)).filter((v) => Number.isFinite(v))
      if (xs.length === 0) continue
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length
      const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0
      pts.push({ setting, method, kind: runs[0].kind === 'reference' ? 'reference' : 'federated', round: runs[0].rounds[i].round, mean, lo: mean - std, hi: mean + std })
    }
  }
  return pts
}

async function render(spec: vl.TopLevelSpec): Promise<Uint8Array> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' })
  const svg = await view.toSVG()
  view.finalize()
  const png = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: 2 },
    background: 'white',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
  })
    .render()
    .asPng()
  return png
}

const CONFIG = { font: 'DejaVu Sans', view: { stroke: '#ccc' } } as const

/** One fixed color per method, so every plot and every run reads the same way. */
const METHOD_COLORS: ReadonlyArray<readonly [string, string]> = [
  ['flora-pd', '#e377c2'],
  ['flora', '#d62728'],
  ['fedit', '#1f77b4'],
  ['zero-padding', '#ff7f0e'],
  ['flexlora', '#2ca02c'],
  ['ffa', '#9467bd'],
  ['centralized', '#222222'],
  ['local-only', '#8c8c8c'],
]

function colorScale(methods: readonly string[]): { domain: string[]; range: string[] } {
  const extra = ['#17becf', '#bcbd22', '#e377c2', '#8c564b']
  const domain = [...new Set(methods)].sort((a, b) => order(a) - order(b) || (a < b ? -1 : 1))
  let e = 0
  const range = domain.map((m) => METHOD_COLORS.find(([n]) => m.startsWith(n))?.[1] ?? extra[e++ % extra.length])
  return { domain, range }
}

function order(method: string): number {
  const i = METHOD_COLORS.findIndex(([n]) => method.startsWith(n))
  return i < 0 ? METHOD_COLORS.length : i
}

function settingFacet(results: EvalResults): { field: string; type: 'nominal'; title: null; sort: string[]; header: { labelFontSize: number } } {
  return { field: 'setting', type: 'nominal', title: null, sort: [...results.config.settings], header: { labelFontSize: 13 } }
}

/** "a = b in setting" notes for methods whose curves coincide exactly (one hides the other). */
export function coincidingCurves(points: readonly Point[]): string[] {
  const by = new Map<string, string>()
  for (const p of points) by.set(`${p.setting}\0${p.method}`, `${by.get(`${p.setting}\0${p.method}`) ?? ''}${p.round}:${p.mean};`)
  const notes: string[] = []
  const keys = [...by.keys()]
  keys.forEach((a, i) => {
    for (const b of keys.slice(i + 1)) {
      const [sa, ma] = a.split('\0')
      const [sb, mb] = b.split('\0')
      if (sa === sb && by.get(a) === by.get(b)) notes.push(`${ma} and ${mb} coincide exactly in ${sa}`)
    }
  })
  return notes
}

function curveSpec(results: EvalResults, points: Point[], title: string, yTitle: string): vl.TopLevelSpec {
  const notes = coincidingCurves(points)
  const color = { field: 'method', type: 'nominal', title: 'method', scale: colorScale(points.map((p) => p.method)) } as const
  const zeroBased = false
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: notes.length > 0 ? { text: title, subtitle: `${notes.join('; ')} (one line hides the other)` } : title,
    data: { values: points },
    facet: { column: settingFacet(results) },
    spec: {
      width: 300,
      height: 240,
      // The line layer comes first so the shared color legend takes its (opaque) symbols.
      layer: [
        {
          mark: { type: 'line', point: true, strokeWidth: 2 },
          encoding: {
            x: { field: 'round', type: 'quantitative', title: 'round', axis: { tickMinStep: 1 } },
            y: { field: 'mean', type: 'quantitative', title: yTitle, scale: { zero: zeroBased } },
            color: { ...color, legend: { symbolType: 'stroke', symbolStrokeWidth: 3, labelLimit: 260 } },
            strokeDash: {
              field: 'kind',
              type: 'nominal',
              legend: null,
              scale: { domain: ['federated', 'reference'], range: [[1, 0], [5, 3]] },
            },
          },
        },
        {
          mark: { type: 'errorband', opacity: 0.15 },
          encoding: {
            x: { field: 'round', type: 'quantitative' },
            y: { field: 'lo', type: 'quantitative', title: yTitle, scale: { zero: zeroBased } },
            y2: { field: 'hi' },
            color,
          },
        },
      ],
    },
    resolve: { scale: { y: 'independent' } },
    config: CONFIG,
  }
}

/** Writes the plots into `dir`; returns their file names. */
export async function writePlots(results: EvalResults, dir: string): Promise<string[]> {
  const files: string[] = []
  const put = async (name: string, spec: vl.TopLevelSpec): Promise<void> => {
    await writeFile(join(dir, name), await render(spec))
    files.push(name)
  }
  const seeds = results.config.seeds
  const band = seeds > 1 ? `, mean ± std over ${seeds} seeds` : ''
  const x = mainScale(results)
  const scaleNote = x === 1 ? '' : `, global scale ${x}`
  const dashed = results.config.references ? '; dashed = references' : ''
  await put(
    'eval-loss.png',
    curveSpec(
      results,
      perRound(results, (r, i) => r.rounds[i].evalLoss.pooled),
      `Held-out loss per round (round 0 = base model${dashed}${band}${scaleNote})`,
      'held-out loss (pooled)',
    ),
  )
  await put(
    'token-accuracy.png',
    curveSpec(
      results,
      perRound(results, (r, i) => r.rounds[i].tokenAccuracy.pooled),
      `Held-out token accuracy per round (round 0 = base model${dashed}${band}${scaleNote})`,
      'token accuracy (pooled)',
    ),
  )
  if (results.base.exactMatch !== undefined) {
    await put(
      'exact-match.png',
      curveSpec(
        results,
        perRound(results, (r, i) => r.rounds[i].exactMatch?.pooled ?? NaN),
        `Held-out exact match per round (round 0 = base model${dashed}${band}${scaleNote})`,
        'exact match (share of questions)',
      ),
    )
  }
  if (seeds > 1 && results.runs.some((r) => r.method === 'flora' && r.applicable)) {
    const exact = results.base.exactMatch !== undefined
    const rows = results.config.settings.flatMap((setting) =>
      pairedDifferences(results, setting, 'flora', (x) => (exact ? (x.exactMatch?.pooled ?? NaN) * 100 : x.evalLoss.pooled))
        .filter((d) => d.diff.n > 1 && d.method !== 'local-only')
        .map((d) => ({ setting, method: d.method, mean: d.diff.mean, lo: d.diff.mean - ci95HalfWidth(d.diff), hi: d.diff.mean + ci95HalfWidth(d.diff) })),
    )
    const what = exact ? 'exact match (points)' : 'held-out loss'
    await put('paired-differences.png', {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: {
        text: `Final ${what}: method − FLoRA, same seed`,
        subtitle: `mean and 95% confidence interval over ${seeds} seeds (t distribution); an interval clear of 0 is a difference the seeds resolve`,
      },
      data: { values: rows },
      facet: { column: settingFacet(results) },
      spec: {
        width: 300,
        height: { step: 22 },
        layer: [
          { mark: { type: 'rule', color: '#888', strokeDash: [4, 3] }, encoding: { x: { datum: 0 } } },
          {
            mark: { type: 'rule', strokeWidth: 2 },
            encoding: {
              y: { field: 'method', type: 'nominal', title: null, sort: null },
              x: { field: 'lo', type: 'quantitative', title: `${what}, method − flora` },
              x2: { field: 'hi' },
              color: { field: 'method', type: 'nominal', legend: null, scale: colorScale(rows.map((r) => r.method)) },
            },
          },
          {
            mark: { type: 'point', filled: true, size: 60 },
            encoding: {
              y: { field: 'method', type: 'nominal', sort: null },
              x: { field: 'mean', type: 'quantitative' },
              color: { field: 'method', type: 'nominal', legend: null, scale: colorScale(rows.map((r) => r.method)) },
            },
          },
        ],
      },
      config: CONFIG,
    })
  }
  const aggRows = results.summary
    .filter((r) => r.kind === 'strategy' && r.globalScale === x)
    .map((r) => ({
      setting: r.setting,
      method: methodLabel(r.method, r.globalScale),
      value: r.applicable && r.aggError !== undefined ? Math.max(LOG_FLOOR, r.aggError.mean) : null,
      labelY: r.applicable && r.aggError !== undefined ? Math.max(LOG_FLOOR, r.aggError.mean) : LOG_FLOOR,
      label: !r.applicable ? 'n/a' : r.aggError === undefined ? '' : r.aggError.mean === 0 ? '0' : r.aggError.mean.toExponential(1),
    }))
  await put('agg-error.png', {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Aggregation error ||dW_agg − Σ p_k s_k B_k A_k|| / ||Σ p_k s_k B_k A_k||',
      subtitle: `mean over rounds and seeds; 0 and values below ${LOG_FLOOR} sit on the axis; n/a = refuses unequal ranks`,
    },
    data: { values: aggRows },
    facet: { column: settingFacet(results) },
    spec: {
      width: { step: 56 },
      height: 240,
      encoding: {
        x: { field: 'method', type: 'nominal', title: null, sort: null, axis: { labelAngle: -30 } },
      },
      layer: [
        {
          mark: { type: 'bar', width: { band: 0.7 } },
          encoding: {
            y: { field: 'value', type: 'quantitative', title: 'relative error (log)', scale: { type: 'log', domain: [LOG_FLOOR, 10] } },
            y2: { datum: LOG_FLOOR },
            color: { field: 'method', type: 'nominal', legend: null, scale: colorScale(aggRows.map((r) => r.method)) },
          },
        },
        {
          mark: { type: 'text', dy: -6, fontSize: 10 },
          encoding: {
            y: { field: 'labelY', type: 'quantitative' },
            text: { field: 'label' },
          },
        },
      ],
    },
    config: CONFIG,
  })
  const scales = results.config.globalScales
  if (scales.length > 1) {
    const rows = results.summary
      .filter((r) => r.kind === 'strategy' && r.applicable && r.evalLoss !== undefined)
      .map((r) => ({ setting: r.setting, method: r.method, scale: r.globalScale, loss: r.evalLoss?.mean ?? NaN }))
    await put('global-scale.png', {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: 'Final held-out loss vs. global update scale x (W ← W + x · update)',
      data: { values: rows },
      facet: { column: settingFacet(results) },
      spec: {
        width: 300,
        height: 240,
        mark: { type: 'line', point: true, strokeWidth: 2 },
        encoding: {
          x: {
            field: 'scale',
            type: 'quantitative',
            title: 'global scale x (log axis)',
            scale: { type: 'log', domain: [Math.min(...scales), Math.max(...scales)], nice: false },
            axis: { values: [...scales] },
          },
          y: { field: 'loss', type: 'quantitative', title: 'final held-out loss', scale: { zero: false } },
          color: { field: 'method', type: 'nominal', scale: colorScale(rows.map((r) => r.method)) },
        },
      },
      resolve: { scale: { y: 'independent' } },
      config: CONFIG,
    })
  }
  return files
}
