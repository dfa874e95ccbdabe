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
  const refs: string[] = seen.filter((k) => k === 'centralized' || k === 'local-only')
  return [...seen.filter((k) => !refs.includes(k)), ...refs]
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
): Array<{ method: string; diff: Stat; lower: number; seeds: number }> {
  const finalLoss = (r: RunRecord): number => r.rounds[r.rounds.length - 1].evalLoss.pooled
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
  return [...by].map(([method, xs]) => ({ method, diff: stat(xs), lower: xs.filter((x) => x < 0).length, seeds: xs.length }))
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
  out.push('## Final held-out loss (pooled over all clients\' held-out data, lower is better)')
  out.push('')
  out.push(table(['method', ...settings], methods.map((m) => [m, ...settings.map((s) => cell(results, s, m, (r) => formatStat(r.evalLoss)))])))
  out.push('')
  const reference = methods.includes('flora') ? 'flora' : undefined
  if (reference !== undefined && c.seeds > 1) {
    out.push(`## Paired differences from ${reference} (same seed: same data order and initial adapters)`)
    out.push('')
    out.push(
      `Final pooled held-out loss of the method minus ${reference}'s, mean ± std over seeds; negative = better than ${reference}; ` +
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
          return `${sign}${d.diff.mean.toFixed(4)} ± ${d.diff.std.toFixed(4)} (lower in ${d.lower}/${d.seeds})`
        }),
      ])
    }
    out.push(table(['method', ...settings], rows))
    out.push('')
  }
  out.push('## Final token accuracy on held-out definitions (teacher forcing, higher is better)')
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
    const cross = settings.map((s) => `${s} ${cell(results, s, 'local-only', (r) => formatStat(r.crossEvalLoss))}`).join(', ')
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
