/**
 * Red team (issue 10, "Hostile members"): real honest `flora-peer` processes (synthetic
 * trainer) against attacking peers built from the same libp2p packages, one attack after
 * another, each on a fresh swarm. Per attack: inputs tried, the rejections honest peers
 * reported (with reasons), honest rounds lost, forks, honest RSS growth, and (poison) how
 * far the model moved against the swarm's bound. Prints a table, writes DIR/<attack>.json
 * and DIR/report.json, exits 1 when a target fails.
 *
 *   npm run redteam                                  # every attack -> .flora/redteam
 *   npm run redteam -- --only poison-adapter,payload-lies --out /tmp/rt
 *   npm run redteam -- --list
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import { ATTACKS, baseline } from './redteam/attacks.js'
import { medianRoundMs, runCase, type CaseResult, type RunOptions } from './redteam/run.js'
import { parseCommandLine } from '../src/exit-codes.js'
import { intAtLeast, jsonOption, jsonOutput, withEnvAndConfig } from '../src/cli-options.js'
import { VERSION } from '../src/version.js'

export const REDTEAM_DEFAULTS = {
  peers: 3,
  rounds: 8,
  seed: 1,
  deadlineMs: 3000,
  graceMs: 1000,
  trainDelayMs: 300,
  out: join('.flora', 'redteam'),
} as const

export interface RedteamOptions extends Omit<RunOptions, 'baselineLost' | 'baselineRoundMs'> {
  only?: string[]
  /** Skip the clean baseline swarm (lost rounds and round times are then not compared). */
  noBaseline?: boolean
}

export interface RedteamReport {
  options: Omit<RedteamOptions, 'log'>
  durationMs: number
  baseline: { roundsLost: number; medianRoundMs: number | null } | null
  attacks: Array<Pick<CaseResult, 'name' | 'ok' | 'inputs' | 'rejections' | 'rejectionsOfHonest' | 'roundsLost' | 'forks' | 'rssGrowthMb' | 'movement' | 'targets' | 'error'>>
  failed: string[]
  ok: boolean
}

export async function runRedteam(o: RedteamOptions): Promise<{ report: RedteamReport; results: CaseResult[] }> {
  const say = o.log ?? ((l: string) => process.stderr.write(`${l}\n`))
  const out = resolve(o.out)
  await mkdir(out, { recursive: true })
  const names = new Set(ATTACKS.map((a) => a.name))
  for (const n of o.only ?? []) if (!names.has(n) && n !== 'baseline') throw new Error(`unknown attack '${n}'; known: ${[...names].join(', ')}`)
  const chosen = ATTACKS.filter((a) => o.only == null || o.only.length === 0 || o.only.includes(a.name))
  const t0 = Date.now()
  const common: RunOptions = { ...o, out, log: say }
  let base: CaseResult | null = null
  if (o.noBaseline !== true) {
    say(`[redteam] baseline: ${o.peers} honest peers, ${o.rounds} rounds`)
    base = await runCase(baseline, common)
    say(`[redteam] baseline: ${base.roundsLost} rounds lost, median round ${medianRoundMs(base) ?? '?'} ms`)
  }
  const results: CaseResult[] = []
  for (const c of chosen) {
    say(`[redteam] ${c.name}: ${c.description}`)
    const r = await runCase(c, { ...common, baselineLost: base?.roundsLost ?? 0, baselineRoundMs: base != null ? medianRoundMs(base) : null })
    results.push(r)
    say(`[redteam] ${c.name}: ${r.ok ? 'PASS' : 'FAIL'} (${r.targets.filter((t) => !t.pass).map((t) => t.name).join('; ') || 'all targets met'})`)
  }
  const report: RedteamReport = {
    options: { ...o, log: undefined } as Omit<RedteamOptions, 'log'>,
    durationMs: Date.now() - t0,
    baseline: base != null ? { roundsLost: base.roundsLost, medianRoundMs: medianRoundMs(base) } : null,
    attacks: results.map((r) => ({
      name: r.name,
      ok: r.ok,
      inputs: r.inputs,
      rejections: r.rejections,
      rejectionsOfHonest: r.rejectionsOfHonest,
      roundsLost: r.roundsLost,
      forks: r.forks,
      rssGrowthMb: r.rssGrowthMb,
      movement: r.movement,
      targets: r.targets,
      error: r.error,
    })),
    failed: results.filter((r) => !r.ok).map((r) => r.name),
    ok: results.every((r) => r.ok),
  }
  await writeFile(join(out, 'report.json'), `${JSON.stringify(report, null, 2)}\n`)
  return { report, results }
}

const fmtCount = (r: Record<string, number>): string =>
  Object.entries(r)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}:${v}`)
    .join(' ') || '-'

/** The table printed at the end (one line per attack, failed targets below it). */
export function formatTable(results: CaseResult[], base: RedteamReport['baseline']): string {
  const rows = results.map((r) => [
    r.ok ? 'PASS' : 'FAIL',
    r.name,
    String(Object.values(r.inputs).reduce((a, b) => a + b, 0)),
    fmtCount(r.rejections),
    String(r.roundsLost),
    String(r.forks),
    r.rssGrowthMb.toFixed(1),
    r.movement.maxRatio == null ? '-' : r.movement.maxRatio === Number.POSITIVE_INFINITY ? 'inf' : r.movement.maxRatio.toPrecision(3),
  ])
  const head = ['', 'attack', 'inputs', 'honest rejections (reason:count)', 'lost', 'forks', 'RSS+MB', 'move']
  const widths = head.map((h, i) => Math.min(i === 3 ? 60 : 40, Math.max(h.length, ...rows.map((r) => r[i].length))))
  const line = (cells: string[]): string => cells.map((c, i) => (c.length > widths[i] ? `${c.slice(0, widths[i] - 1)}…` : c.padEnd(widths[i]))).join('  ')
  const out = [line(head), line(widths.map((w) => '-'.repeat(w)))]
  for (let i = 0; i < results.length; i++) {
    out.push(line(rows[i]))
    for (const t of results[i].targets.filter((x) => !x.pass)) out.push(`      x ${t.name}: ${t.detail}`)
  }
  if (base != null) out.push(`baseline: ${base.roundsLost} rounds lost, median round ${base.medianRoundMs ?? '?'} ms; move = max per-module ||dW||/||W|| of a round (bound: the swarm's maxDeltaRatio)`)
  return out.join('\n')
}

async function cli(): Promise<void> {
  const program = new Command('redteam')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .description('Attack a local swarm of honest flora-peer processes with hostile peers, one attack after another; print a table, write DIR/<attack>.json and DIR/report.json, exit 1 when a target fails.')
    .option('--only <names>', 'comma-separated attacks to run (default: all)', (v: string) => v.split(',').map((s) => s.trim()).filter((s) => s.length > 0))
    .option('--list', 'list the attacks and exit')
    .option('-o, --out <dir>', 'output directory', REDTEAM_DEFAULTS.out)
    .option('--seed <n>', 'seed (identities, adapters, swarm seed)', intAtLeast('--seed', 0), REDTEAM_DEFAULTS.seed)
    .option('-p, --peers <n>', 'honest peers', intAtLeast('--peers', 2), REDTEAM_DEFAULTS.peers)
    .option('-r, --rounds <n>', 'rounds per attack (cases may set their own)', intAtLeast('--rounds', 1), REDTEAM_DEFAULTS.rounds)
    .option('--deadline <ms>', 'round deadline', intAtLeast('--deadline', 100), REDTEAM_DEFAULTS.deadlineMs)
    .option('--grace <ms>', 'grace per fallback proposer', intAtLeast('--grace', 50), REDTEAM_DEFAULTS.graceMs)
    .option('--train-ms <ms>', 'synthetic training time per round, off the CPU', intAtLeast('--train-ms', 0), REDTEAM_DEFAULTS.trainDelayMs)
    .option('--no-baseline', 'skip the clean baseline swarm')
    .option('--keep', 'keep the honest state dirs')
    .addOption(jsonOption())
  withEnvAndConfig(program, 'FLORA_REDTEAM_')
  const usage = parseCommandLine(program, process.argv)
  if (usage !== undefined) process.exit(usage)
  const o = program.opts<{ only?: string[]; list?: boolean; out: string; seed: number; peers: number; rounds: number; deadline: number; grace: number; trainMs: number; baseline: boolean; keep?: boolean; json?: boolean }>()
  // Text on a terminal; piped, the text goes to stderr and stdout carries JSON lines.
  const json = jsonOutput(o.json)
  const text = json ? process.stderr : process.stdout
  if (o.list === true) {
    for (const a of ATTACKS) process.stdout.write(json ? `${JSON.stringify({ attack: a.name, description: a.description })}\n` : `${a.name.padEnd(18)} ${a.description}\n`)
    return
  }
  const stop = (): void => {
    process.stderr.write('redteam: interrupted\n')
    process.exit(130)
  }
  process.on('SIGINT', stop)
  const { report, results } = await runRedteam({
    out: o.out,
    seed: o.seed,
    peers: o.peers,
    rounds: o.rounds,
    deadlineMs: o.deadline,
    graceMs: o.grace,
    trainDelayMs: o.trainMs,
    only: o.only,
    noBaseline: !o.baseline,
    keep: o.keep,
  })
  text.write(`${formatTable(results, report.baseline)}\n`)
  text.write(`report: ${join(resolve(o.out), 'report.json')} (${(report.durationMs / 1000).toFixed(0)} s)\n`)
  if (json) process.stdout.write(`${JSON.stringify({ event: 'redteam:report', report: join(resolve(o.out), 'report.json'), ...report })}\n`)
  if (!report.ok) {
    process.stderr.write(`redteam: targets failed in ${report.failed.join(', ')}\n`)
    process.exit(1)
  }
}

if (process.argv[1] != null && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  cli().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`redteam: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
      process.exit(1)
    },
  )
}
