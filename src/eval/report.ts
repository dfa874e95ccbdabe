/**
 * results.md: the tables of a run (mean ± std over seeds), written from results.json alone.
 */
import { stat } from './metrics.js'
import type { EvalResults, RunRecord, SettingName, Stat, SummaryRow } from './types.js'

/** Method label: the strategy name, with its global scale when that is not 1. */
export function methodLabel(method: string, globalScale: number): string {
  return globalScale === 1 ? method : `${method} ×${globalScale}`
}

export function formatStat(s: Stat | undefined, digits = 4): string {
  if (s === undefined || s.n === 0 || Number.isNaN(s.mean)) return '—'
  const m = s.mean.toFixed(digits)
  return s.n > 1 ? `${m} ± ${s.std.toFixed(digits)}` : m
}

export function formatSci(s: Stat | undefined): string {
  if (s === undefined || s.n === 0 || Number.isNaN(s.mean)) return '—'
  const m = s.mean === 0 ? '0' : s.mean.toExponential(2)
  return s.n > 1 && s.std !== 0 ? `${m} ± ${s.std.toExponential(1)}` : m
}

export function formatBytes(n: number): string {
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(2)} MiB`
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`
  return `${n} B`
}

function rowKey(r: Pick<SummaryRow, 'method' | 'globalScale'>): string {
  return methodLabel(r.method, r.globalScale)
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

/** Methods in a stable order: strategies as configured (by scale), then the references. */
function methodOrder(results: EvalResults): string[] {
  const seen: string[] = []
  for (const r of results.summary) {
    const k = rowKey(r)
    if (!seen.includes(k)) seen.push(k)
  }
  const refs: string[] = seen.filter((k) => k.startsWith('centralized') || k === 'local-only')
  return [...seen.filter((k) => !refs.includes(k)), ...refs]
}

/** Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then the normal's). */
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074,
  2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
]

/** Half-width of the 95% confidence interval of a mean (t distribution); NaN below 2 values. */
export function ci95HalfWidth(s: Stat): number {
  if (s.n < 2) return NaN
  return (T975[s.n - 2] ?? 1.96) * (s.std / Math.sqrt(s.n))
}

/** Whether the run set has exact match (a task with accepted answers). */
function hasExact(results: EvalResults): boolean {
  return results.base.exactMatch !== undefined
}

/**
 * The tuned centralized reference of a setting: among the centralized rows (one per swept
 * learning rate), the best final exact match (or, without it, the lowest final loss).
 */
export function tunedCentralized(results: EvalResults, setting: SettingName): SummaryRow | undefined {
  const rows = results.summary.filter((r) => r.setting === setting && r.method.startsWith('centralized') && r.applicable)
  const score = (r: SummaryRow): number => (hasExact(results) ? (r.exactMatch?.mean ?? -Infinity) : -(r.evalLoss?.mean ?? Infinity))
  return rows.reduce<SummaryRow | undefined>((best, r) => (best === undefined || score(r) > score(best) ? r : best), undefined)
}

function cell(results: EvalResults, setting: SettingName, key: string, f: (r: SummaryRow) => string): string {
  const row = results.summary.find((r) => r.setting === setting && rowKey(r) === key)
  if (row === undefined) return '—'
  if (!row.applicable) return 'not applicable'
  return f(row)
}

/** Mean over seeds of the pooled held-out loss per round, for one setting. */
export function lossCurves(results: EvalResults, setting: SettingName): Map<string, number[]> {
  const by = new Map<string, RunRecord[]>()
  for (const r of results.runs) {
    if (r.setting !== setting || !r.applicable) continue
    const k = methodLabel(r.method, r.globalScale)
    by.set(k, [...(by.get(k) ?? []), r])
  }
  const out = new Map<string, number[]>()
  for (const [k, runs] of by) {
    const n = runs[0].rounds.length
    out.set(
      k,
      Array.from({ length: n }, (_, i) => runs.reduce((a, r) => a + r.rounds[i].evalLoss.pooled, 0) / runs.length),
    )
  }
  return out
}

/**
 * Paired comparison with a reference method: per seed, (method's final pooled loss) minus
 * (reference's), which cancels what the seeds share (data order, initial adapters).
 */
export function pairedDifferences(
  results: EvalResults,
  setting: SettingName,
  reference: string,
  metric: (last: RunRecord['rounds'][number]) => number = (x) => x.evalLoss.pooled,
): Array<{ method: string; diff: Stat; lower: number; higher: number; seeds: number }> {
  const finalLoss = (r: RunRecord): number => metric(r.rounds[r.rounds.length - 1])
  const ref = new Map(
    results.runs.filter((r) => r.setting === setting && r.applicable && methodLabel(r.method, r.globalScale) === reference).map((r) => [r.seed, finalLoss(r)]),
  )
  if (ref.size === 0) return []
  const by = new Map<string, number[]>()
  for (const r of results.runs) {
    const label = methodLabel(r.method, r.globalScale)
    if (r.setting !== setting || !r.applicable || label === reference) continue
    const base = ref.get(r.seed)
    if (base === undefined) continue
    by.set(label, [...(by.get(label) ?? []), finalLoss(r) - base])
  }
  return [...by].map(([method, xs]) => ({ method, diff: stat(xs), lower: xs.filter((x) => x < 0).length, higher: xs.filter((x) => x > 0).length, seeds: xs.length }))
}

/** The method paired differences are taken from: flora when it ran. */
function reference(methods: readonly string[]): string | undefined {
  return methods.includes('flora') ? 'flora' : undefined
}

function pct(v: number): string {
  return Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '—'
}

/** A share over seeds as "mean ± std" in percent. */
export function formatPct(s: Stat | undefined): string {
  if (s === undefined || s.n === 0 || Number.isNaN(s.mean)) return '—'
  return s.n > 1 ? `${(s.mean * 100).toFixed(1)}% ± ${(s.std * 100).toFixed(1)}` : pct(s.mean)
}

export function renderMarkdown(results: EvalResults, plots: readonly string[] = []): string {
  const c = results.config
  const settings = c.settings
  const methods = methodOrder(results)
  const out: string[] = []
  out.push('# flora evaluation results')
  out.push('')
  out.push(
    `${c.clients} clients, ${c.rounds} rounds × ${c.localSteps} local steps (batch ${c.batchSize}, lr ${c.lr}), ` +
      `${c.seeds} seed${c.seeds === 1 ? '' : 's'}, non-IID split by category (${c.shardsPerClient} shards per client), ` +
      `${c.trainExamples} training / ${c.evalExamples} held-out examples${c.quick ? ' — **quick mode**' : ''}.`,
  )
  out.push('')
  out.push(`Backend: ${Object.entries(results.backend).map(([k, v]) => `${k} ${v}`).join(', ')}.`)
  out.push('')
  out.push(
    `Machine: ${results.machine.cpu}, ${results.machine.cores} cores, ${results.machine.memoryGiB} GiB, ` +
      `${results.machine.platform}, Node ${results.machine.node}. Wall time ${(results.seconds / 60).toFixed(1)} min ` +
      `(${results.cacheHits} training jobs reused from identical earlier jobs).`,
  )
  out.push('')
  out.push(
    `Base model before training: held-out loss ${results.base.evalLoss.pooled.toFixed(4)}, ` +
      `token accuracy ${results.base.tokenAccuracy.pooled.toFixed(4)}.`,
  )
  out.push('')
  if (hasExact(results)) {
    const base = results.base.exactMatch?.pooled ?? NaN
    out.push(
      `Exact match of the base model: ${pct(base)}; the answer that ignores the question (each task's commonest training answer): ` +
        `${results.ignoreQuestionBaseline === undefined ? '—' : pct(results.ignoreQuestionBaseline)}.`,
    )
    out.push('')
    out.push('## Final held-out exact match (share of questions answered exactly, higher is better)')
    out.push('')
    out.push(table(['method', ...settings], methods.map((m) => [m, ...settings.map((s) => cell(results, s, m, (r) => formatPct(r.exactMatch)))])))
    out.push('')
    for (const s of settings) {
      const t = tunedCentralized(results, s)
      if (t !== undefined && methods.filter((m) => m.startsWith('centralized')).length > 1) out.push(`Tuned centralized (${s}): ${t.method}, ${formatPct(t.exactMatch)}.`)
    }
    out.push('')
    if (reference(methods) !== undefined && c.seeds > 1) {
      const ref = reference(methods) as string
      out.push(`## Paired differences in exact match from ${ref}, with 95% confidence intervals`)
      out.push('')
      out.push(
        `Per seed (same data order and initial adapters), the method's final exact match minus ${ref}'s, in points; ` +
          `mean [95% CI, t distribution over seeds]; an interval that excludes 0 is a difference the seeds resolve. ` +
          `"ahead in" counts the seeds where the method scored higher.`,
      )
      out.push('')
      const rows: string[][] = []
      for (const m of methods.filter((x) => x !== ref)) {
        rows.push([
          m,
          ...settings.map((s) => {
            const d = pairedDifferences(results, s, ref, (x) => x.exactMatch?.pooled ?? NaN).find((x) => x.method === m)
            if (d === undefined || d.diff.n === 0) return cell(results, s, m, () => '—')
            const h = ci95HalfWidth(d.diff) * 100
            const mean = d.diff.mean * 100
            return `${mean > 0 ? '+' : ''}${mean.toFixed(1)} [${(mean - h).toFixed(1)}, ${(mean + h).toFixed(1)}] (ahead in ${d.higher}/${d.seeds})`
          }),
        ])
      }
      out.push(table(['method', ...settings], rows))
      out.push('')
    }
  }
  out.push('## Final held-out loss (pooled over all clients\' held-out data, lower is better)')
  out.push('')
  out.push(table(['method', ...settings], methods.map((m) => [m, ...settings.map((s) => cell(results, s, m, (r) => formatStat(r.evalLoss)))])))
  out.push('')
  const lossRef = reference(methods)
  if (lossRef !== undefined && c.seeds > 1) {
    const reference = lossRef
    out.push(`## Paired differences from ${reference} (same seed: same data order and initial adapters)`)
    out.push('')
    out.push(
      `Final pooled held-out loss of the method minus ${reference}'s, mean [95% CI over seeds, t distribution]; negative = better than ${reference}; ` +
        `"lower in" counts the seeds where the method's loss was lower.`,
    )
    out.push('')
    const rows: string[][] = []
    for (const m of methods.filter((x) => x !== reference)) {
      rows.push([
        m,
        ...settings.map((s) => {
          const d = pairedDifferences(results, s, reference).find((x) => x.method === m)
          if (d === undefined) return cell(results, s, m, () => '—')
          const sign = d.diff.mean > 0 ? '+' : ''
          const h = ci95HalfWidth(d.diff)
          return `${sign}${d.diff.mean.toFixed(4)} [${(d.diff.mean - h).toFixed(4)}, ${(d.diff.mean + h).toFixed(4)}] (lower in ${d.lower}/${d.seeds})`
        }),
      ])
    }
    out.push(table(['method', ...settings], rows))
    out.push('')
  }
  out.push(`## Final token accuracy on held-out ${hasExact(results) ? 'answers' : 'definitions'} (teacher forcing, higher is better)`)
  out.push('')
  out.push(
    table(['method', ...settings], methods.map((m) => [m, ...settings.map((s) => cell(results, s, m, (r) => formatStat(r.tokenAccuracy)))])),
  )
  out.push('')
  out.push('## Best round and worst client')
  out.push('')
  out.push(
    table(
      ['method', ...settings.flatMap((s) => [`${s}: best-round loss`, `${s}: worst client (final)`])],
      methods.map((m) => [
        m,
        ...settings.flatMap((s) => [
          cell(results, s, m, (r) => formatStat(r.bestEvalLoss)),
          cell(results, s, m, (r) => formatStat(r.worstClientLoss)),
        ]),
      ]),
    ),
  )
  out.push('')
  if (results.runs.some((r) => r.method === 'local-only')) {
    const cross = settings
      .map((s) => `${s} ${cell(results, s, 'local-only', (r) => formatStat(r.crossEvalLoss) + (r.crossExactMatch !== undefined ? ` (exact match ${formatPct(r.crossExactMatch)})` : ''))}`)
      .join(', ')
    out.push(
      "Local-only is scored per client on that client's own held-out data; the same models scored on the whole " +
        `held-out set give (mean over clients): ${cross}.`,
    )
    out.push('')
  }
  out.push('## Aggregation error and communication per client per round')
  out.push('')
  out.push(
    'Aggregation error: ||dW_agg − Σ p_k s_k B_k A_k||_F / ||Σ p_k s_k B_k A_k||_F over all adapted modules, mean over rounds. ' +
      'Start error: Σ p_k ||s_k B′_k A′_k − G||_F / ||G||_F, how far the adapters clients restart from are from the global update G. ' +
      'Bytes: f32 factors; "p2p in" is what a peer fetches in the serverless exchange (every other adapter), "server out" what a server would send.',
  )
  out.push('')
  const strategyRows: string[][] = []
  for (const s of settings) {
    for (const m of methods) {
      const row = results.summary.find((r) => r.setting === s && rowKey(r) === m && r.kind === 'strategy')
      if (row === undefined) continue
      if (!row.applicable) {
        strategyRows.push([s, m, 'not applicable', '—', '—', '—', '—'])
        continue
      }
      const b = row.bytes
      strategyRows.push([
        s,
        m,
        formatSci(row.aggError),
        formatSci(row.startError),
        b === undefined ? '—' : formatBytes(b.up),
        b === undefined ? '—' : formatBytes(b.downP2P),
        b === undefined ? '—' : formatBytes(b.downServer),
      ])
    }
  }
  out.push(table(['setting', 'strategy', 'aggregation error', 'start error', 'up', 'p2p in', 'server out'], strategyRows))
  out.push('')
  const na = results.summary.filter((r) => !r.applicable)
  if (na.length > 0) {
    out.push('Not applicable:')
    out.push('')
    for (const r of na) out.push(`- ${r.setting} / ${rowKey(r)}: ${r.reason ?? 'refused'}`)
    out.push('')
  }
  out.push('## Held-out loss per round (mean over seeds; round 0 is the base model)')
  out.push('')
  for (const s of settings) {
    const curves = lossCurves(results, s)
    if (curves.size === 0) continue
    const n = Math.max(...[...curves.values()].map((v) => v.length))
    out.push(`### ${s}`)
    out.push('')
    out.push(
      table(
        ['method', ...Array.from({ length: n }, (_, i) => `r${i}`)],
        [...curves].map(([k, v]) => [k, ...v.map((x) => x.toFixed(4))]),
      ),
    )
    out.push('')
  }
  out.push('## Clients')
  out.push('')
  out.push(
    table(
      ['client', 'train', 'held-out', 'largest categories'],
      results.clients.map((cl) => [cl.id, String(cl.trainSize), String(cl.evalSize), cl.topCategories.map(([n, v]) => `${n} (${v})`).join(', ')]),
    ),
  )
  out.push('')
  if (plots.length > 0) {
    out.push('## Plots')
    out.push('')
    for (const p of plots) out.push(`![${p}](${p})`)
    out.push('')
  }
  return out.join('\n')
}
