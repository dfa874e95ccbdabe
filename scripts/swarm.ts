/**
 * A real multi-process swarm on 127.0.0.1: N `flora-peer` processes (peer 0 first, the
 * rest bootstrap to it), heterogeneous ranks and a non-IID split by default. Writes
 * DIR/report.json (per round: contributors, every peer's state hash, held-out eval loss
 * and train loss; per peer: rank, samples, bytes) and exits non-zero if any round's hashes
 * disagree.
 *
 *   npm run swarm                  # default: 3 peers (ranks 16,8,4) fine-tune the bundled
 *                                  # model on the skills suite, non-IID by task type, 5 rounds
 *                                  # of 100 local steps -> runs/swarm
 *   npm run swarm -- --peers 4 --rounds 5 --ranks 16,8,4 --strategy flora --out runs/x
 *   npm run swarm -- --trainer synthetic --peers 8   # the synthetic task (no tfjs)
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createWriteStream } from 'node:fs'
import { join, resolve } from 'node:path'
import { availableParallelism } from 'node:os'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Command, InvalidArgumentError } from 'commander'
import cliProgress from 'cli-progress'
import type { PeerReport } from '../src/node/cli.js'
import { MODEL_TRAINER_DEFAULTS } from '../src/node/model-defaults.js'
import { VERSION } from '../src/version.js'
import { parseCommandLine } from '../src/exit-codes.js'
import { jsonOption, jsonOutput, withEnvAndConfig } from '../src/cli-options.js'

/** The FLoRA paper's heterogeneous ranks, cycled for larger swarms. */
export const PAPER_RANKS = [64, 32, 16, 16, 8, 8, 4, 4, 4, 4]

/**
 * `npm run swarm` with no arguments: the bundled model learns the skills suite's question
 * formats (each peer a few task types), scored by held-out exact match; a few minutes on 2 cores.
 */
export const MODEL_SWARM_DEFAULTS = { peers: 3, rounds: 5, ranks: [16, 8, 4], data: 'skills', localSteps: 100 } as const
/** The synthetic task's defaults (`--trainer synthetic`). */
export const SYNTHETIC_SWARM_DEFAULTS = { peers: 3, rounds: 5, ranks: PAPER_RANKS } as const
export const DEFAULT_OUT = join('runs', 'swarm')

export interface SwarmOptions {
  peers: number
  rounds: number
  ranks?: number[]
  strategy?: string
  trainer?: string
  out: string
  deadlineMs?: number
  graceMs?: number
  timeoutMs?: number
  /** Model trainer: base model directory (default: the bundled one). */
  model?: string
  /** Model trainer: 'wordnet' (default) or a JSONL file; peer i gets shard i of n of it. */
  data?: string
  localSteps?: number
  evalExamples?: number
  /** Extra flags for every peer. */
  peerArgs?: string[]
  /** Show progress (default: when stdout is a TTY). */
  progress?: boolean
}

export interface SwarmRoundReport {
  round: number
  contributors: readonly string[]
  proposer: string | null
  /** peer id -> state hash after the round (null: the peer did not finish it). */
  hashes: Record<string, string | null>
  /** peer id -> held-out loss of the agreed weights after the round. */
  evalLoss: Record<string, number | null>
  /** Exact match of greedy answers to held-out questions (the skills suite), as the first peer to report it measured; null otherwise. */
  exactMatch: number | null
  /** peer id -> mean loss of the peer's local training steps in the round. */
  trainLoss: Record<string, number | null>
  agree: boolean
}

export interface SwarmReport {
  swarmId: string | null
  options: { peers: number; rounds: number; ranks: number[]; strategy: string; trainer: string }
  durationMs: number
  agreement: boolean
  allFinished: boolean
  /** Round 0: the base model's target weights and their held-out loss. */
  genesis: { stateHash: string | null; evalLoss: number | null; exactMatch: number | null }
  rounds: SwarmRoundReport[]
  peers: Array<{
    index: number
    peerId: string | null
    rank: number
    samples: number | null
    bytesSent: number | null
    bytesReceived: number | null
    wireBytesIn: number | null
    wireBytesOut: number | null
    rejected: Record<string, number>
    exitCode: number | null
    finished: boolean
  }>
}

const here = fileURLToPath(new URL('.', import.meta.url))
const BIN = resolve(here, '..', 'bin', 'flora-peer.js')

function lines(child: ChildProcess, onLine: (line: string) => void): void {
  if (child.stdout == null) return
  createInterface({ input: child.stdout }).on('line', onLine)
}

export async function runSwarm(options: SwarmOptions): Promise<SwarmReport> {
  const n = options.peers
  const ranks = Array.from({ length: n }, (_, i) => (options.ranks != null && options.ranks.length > 0 ? options.ranks[i % options.ranks.length] : PAPER_RANKS[i % PAPER_RANKS.length]))
  const strategy = options.strategy ?? 'flora'
  const trainer = options.trainer ?? 'model'
  const out = resolve(options.out)
  await mkdir(out, { recursive: true })
  // A reused output directory: drop the previous run's per-peer files and state dirs (a swarm
  // run is a fresh federation from genesis; keys stay, so peer ids do too).
  for (const f of await readdir(out)) {
    if (/^peer-\d+\.(json|log|events\.jsonl|records\.jsonl|state)$/.test(f) || f === 'report.json') await rm(join(out, f), { recursive: true, force: true })
  }
  const t0 = Date.now()
  const children: ChildProcess[] = []
  const exits: Array<Promise<number | null>> = []
  let completions = 0
  const showProgress = options.progress ?? process.stdout.isTTY === true
  const bar = showProgress
    ? new cliProgress.SingleBar({ format: 'swarm |{bar}| {value}/{total} peer-rounds {duration_formatted}  {status}', hideCursor: true }, cliProgress.Presets.shades_classic)
    : null
  bar?.start(n * options.rounds, 0, { status: 'starting' })
  const say = (msg: string): void => {
    if (bar == null) process.stderr.write(`${msg}\n`)
    else bar.update(completions, { status: msg })
  }
  // Per peer: what it is doing now (the bar's status line).
  const doing: string[] = Array.from({ length: n }, () => 'starting')
  const showDoing = (): void => {
    if (bar != null) bar.update(completions, { status: doing.map((d, i) => `p${i} ${d}`).join(' | ') })
  }
  const elapsed = (): string => `${((Date.now() - t0) / 1000).toFixed(0)} s`

  const common = [
    '--trainer', trainer,
    '--strategy', strategy,
    '--rounds', String(options.rounds),
    '--min-peers', String(n),
    '--listen', '/ip4/127.0.0.1/tcp/0',
    '--json',
    ...(options.deadlineMs != null ? ['--deadline', String(options.deadlineMs)] : []),
    ...(options.model != null ? ['--model', options.model] : []),
    ...(options.localSteps != null ? ['--local-steps', String(options.localSteps)] : []),
    ...(options.evalExamples != null ? ['--eval-examples', String(options.evalExamples)] : []),
    ...(options.graceMs != null ? ['--grace', String(options.graceMs)] : []),
    ...(options.peerArgs ?? []),
  ]
  const env = {
    ...process.env,
    // From source, peers run the source too (never a stale dist/), unless the caller says
    // FLORA_FROM_SOURCE=0 after `npm run build` (large swarms start ~3x faster compiled).
    FLORA_FROM_SOURCE: process.env.FLORA_FROM_SOURCE ?? (import.meta.url.endsWith('.ts') ? '1' : ''),
    // The peers train at the same time: share the cores among them rather than run
    // n x cores native threads (FLORA_THREADS set by the user wins).
    FLORA_THREADS: process.env.FLORA_THREADS ?? String(Math.max(1, Math.floor(availableParallelism() / n))),
  }

  const launch = (i: number, bootstrap: string | undefined): { child: ChildProcess; listening: Promise<string> } => {
    const args = [
      BIN,
      ...common,
      '--rank', String(ranks[i]),
      '--data', trainer === 'synthetic' ? `synthetic:${i}` : options.data == null || options.data === 'wordnet' ? `${i}/${n}` : `${options.data}:${i}/${n}`,
      '--identity', join(out, `peer-${i}.key`),
      '--report', join(out, `peer-${i}.json`),
      '--records', join(out, `peer-${i}.records.jsonl`),
      '--state-dir', join(out, `peer-${i}.state`),
      // Every peer ends on the same weights: one of them writes the federated model.
      ...(i === 0 ? ['--out', join(out, 'federated')] : []),
      ...(bootstrap != null ? ['--bootstrap', bootstrap] : []),
    ]
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stderr?.pipe(createWriteStream(join(out, `peer-${i}.log`)))
    const events = createWriteStream(join(out, `peer-${i}.events.jsonl`))
    let resolveAddr!: (a: string) => void
    let rejectAddr!: (e: Error) => void
    const listening = new Promise<string>((res, rej) => {
      resolveAddr = res
      rejectAddr = rej
    })
    lines(child, (line) => {
      events.write(`${line}\n`)
      let ev: { event?: string; multiaddrs?: string[]; round?: number; step?: number; steps?: number; stateHash?: string; evalLoss?: number; evalExactMatch?: number; contributors?: string[] }
      try {
        ev = JSON.parse(line) as typeof ev
      } catch {
        return
      }
      if (ev.event === 'listening' && ev.multiaddrs?.[0] != null) {
        resolveAddr(ev.multiaddrs[0])
        doing[i] = 'waiting for peers'
        showDoing()
      }
      if (ev.event === 'train:step') {
        doing[i] = `r${ev.round} step ${ev.step}/${ev.steps}`
        showDoing()
      }
      if (ev.event === 'round:complete') {
        completions++
        doing[i] = `r${ev.round} done`
        const line = `[${elapsed()}] peer ${i} finished round ${ev.round}: state ${ev.stateHash?.slice(0, 12) ?? '?'}, ${ev.contributors?.length ?? '?'} contributor${ev.contributors?.length === 1 ? '' : 's'}, eval loss ${ev.evalLoss?.toFixed(4) ?? '-'}${ev.evalExactMatch != null ? `, exact match ${(100 * ev.evalExactMatch).toFixed(1)}%` : ''}`
        if (bar == null) process.stderr.write(`${line}\n`)
        else showDoing()
      }
    })
    exits.push(
      new Promise((res) => {
        child.on('exit', (code) => {
          events.end()
          rejectAddr(new Error(`peer ${i} exited (${code}) before listening; see ${join(out, `peer-${i}.log`)}`))
          res(code)
        })
      }),
    )
    children.push(child)
    return { child, listening }
  }

  const stopAll = (signal: NodeJS.Signals): void => {
    for (const c of children) if (c.exitCode == null) c.kill(signal)
  }
  const onSigint = (): void => stopAll('SIGINT')
  process.on('SIGINT', onSigint)
  const timer = setTimeout(() => {
    say('timeout: stopping peers')
    stopAll('SIGTERM')
  }, options.timeoutMs ?? 15 * 60_000)
  try {
    const first = launch(0, undefined)
    say(`[${elapsed()}] starting ${n} ${trainer} peers (ranks ${ranks.join(',')}), ${options.rounds} rounds; logs in ${out}`)
    const addr = await first.listening
    say(`[${elapsed()}] peer 0 listening on ${addr}`)
    for (let i = 1; i < n; i++) launch(i, addr)
    const codes = await Promise.all(exits)
    bar?.update(completions, { status: 'done' })
    bar?.stop()
    return await buildReport(out, n, ranks, strategy, trainer, options.rounds, codes, Date.now() - t0)
  } finally {
    clearTimeout(timer)
    process.off('SIGINT', onSigint)
    stopAll('SIGKILL')
  }
}

export async function buildReport(
  out: string,
  n: number,
  ranks: number[],
  strategy: string,
  trainer: string,
  rounds: number,
  codes: Array<number | null>,
  durationMs: number,
): Promise<SwarmReport> {
  const reports: Array<PeerReport | null> = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      try {
        return JSON.parse(await readFile(join(out, `peer-${i}.json`), 'utf8')) as PeerReport
      } catch {
        return null
      }
    }),
  )
  const ids = reports.map((r) => r?.peerId ?? null)
  const roundReports: SwarmRoundReport[] = []
  let agreement = true
  for (let r = 1; r <= rounds; r++) {
    const hashes: Record<string, string | null> = {}
    const evalLoss: Record<string, number | null> = {}
    const trainLoss: Record<string, number | null> = {}
    let contributors: readonly string[] = []
    let proposer: string | null = null
    let exactMatch: number | null = null
    reports.forEach((rep, i) => {
      const key = ids[i] ?? `peer-${i}`
      const rec = rep?.rounds.find((x) => x.round === r)
      hashes[key] = rec?.stateHash ?? null
      evalLoss[key] = rec?.evalLoss ?? null
      exactMatch ??= rec?.evalExactMatch ?? null
      trainLoss[key] = rec?.metrics?.train?.loss ?? null
      if (rec != null) {
        contributors = rec.contributors
        proposer = rec.proposer
      }
    })
    const seen = Object.values(hashes)
    const agree = seen.every((h) => h != null) && new Set(seen).size === 1
    if (!agree) agreement = false
    roundReports.push({ round: r, contributors, proposer, hashes, evalLoss, exactMatch, trainLoss, agree })
  }
  const report: SwarmReport = {
    swarmId: reports.find((r) => r != null)?.swarmId ?? null,
    options: { peers: n, rounds, ranks, strategy, trainer },
    durationMs,
    agreement,
    allFinished: reports.every((r) => r?.finished === true),
    genesis: {
      stateHash: reports[0]?.genesis.stateHash ?? null,
      evalLoss: reports[0]?.genesis.evalLoss ?? null,
      exactMatch: reports.find((rep) => rep?.genesis.evalExactMatch != null)?.genesis.evalExactMatch ?? null,
    },
    rounds: roundReports,
    peers: reports.map((rep, i) => ({
      index: i,
      peerId: rep?.peerId ?? null,
      rank: ranks[i],
      samples: rep?.samples ?? null,
      bytesSent: rep?.stats.payloadBytesSent ?? null,
      bytesReceived: rep?.stats.payloadBytesReceived ?? null,
      wireBytesIn: rep?.stats.wireBytesIn ?? null,
      wireBytesOut: rep?.stats.wireBytesOut ?? null,
      rejected: rep?.rejected ?? {},
      exitCode: codes[i],
      finished: rep?.finished ?? false,
    })),
  }
  await writeFile(join(out, 'report.json'), `${JSON.stringify(report, null, 2)}\n`)
  return report
}

function positive(name: string) {
  return (v: string): number => {
    const x = Number(v)
    if (!Number.isInteger(x) || x < 1) throw new InvalidArgumentError(`${name} must be a positive integer`)
    return x
  }
}

function splitArgs(v: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...v.split(/\s+/).filter((x) => x.length > 0)]
}

async function cli(): Promise<void> {
  const program = new Command('swarm')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .description(
      "Run a local multi-process flora swarm on 127.0.0.1 and check that every round's state hashes agree. " +
        'With no arguments: 3 peers (ranks 16,8,4) fine-tune the bundled model on a non-IID split of the WordNet task for 3 rounds.',
    )
    .option('-t, --trainer <name>', "training backend of every peer: 'model' (the bundled or --model checkpoint) or 'synthetic'", 'model')
    .option('-p, --peers <n>', `number of peer processes (default ${MODEL_SWARM_DEFAULTS.peers})`, positive('--peers'))
    .option('-r, --rounds <n>', `rounds (default: model ${MODEL_SWARM_DEFAULTS.rounds}, synthetic ${SYNTHETIC_SWARM_DEFAULTS.rounds})`, positive('--rounds'))
    .option('--ranks <list>', `comma-separated ranks, cycled over peers (default: model ${MODEL_SWARM_DEFAULTS.ranks.join(',')}; synthetic: the FLoRA paper's ${PAPER_RANKS.join(',')})`, (v) =>
      v.split(',').map((x) => positive('--ranks')(x.trim())),
    )
    .option('-s, --strategy <name>', 'aggregation strategy', 'flora')
    .option('-m, --model <dir>', 'model trainer: base model directory (default: models/flora-tiny)')
    .option('-d, --data <spec>', "model trainer: 'skills' (the skills suite, scored by held-out exact match), 'wordnet' or a JSONL file; peer i trains on shard i of n (non-IID by category)", MODEL_SWARM_DEFAULTS.data)
    .option('--local-steps <n>', `model trainer: local steps per round (default ${MODEL_SWARM_DEFAULTS.localSteps})`, positive('--local-steps'))
    .option('--eval-examples <n>', `model trainer: held-out examples (default ${MODEL_TRAINER_DEFAULTS.evalExamples})`, positive('--eval-examples'))
    .option('--peer-args <flags>', "extra flags for every flora-peer, e.g. '--lr 3e-3 --batch-size 4' (repeatable)", splitArgs)
    .option('-o, --out <dir>', 'output directory', DEFAULT_OUT)
    .option('--deadline <ms>', 'round deadline', positive('--deadline'))
    .option('--grace <ms>', 'grace per fallback proposer', positive('--grace'))
    .option('--timeout <s>', 'stop everything after this many seconds', positive('--timeout'), 900)
    .option('--no-progress', 'no progress bar')
    .option('--no-samples', 'model trainer: skip the held-out questions answered by the base and the federated model at the end')
    .addOption(jsonOption())
    .allowExcessArguments(false)
  withEnvAndConfig(program, 'FLORA_SWARM_')
  const usage = parseCommandLine(program, process.argv)
  if (usage !== undefined) process.exit(usage)
  const o = program.opts<{
    trainer: string
    peers?: number
    rounds?: number
    ranks?: number[]
    strategy: string
    model?: string
    data: string
    localSteps?: number
    evalExamples?: number
    peerArgs?: string[]
    out: string
    deadline?: number
    grace?: number
    timeout: number
    progress: boolean
    samples: boolean
    json?: boolean
  }>()
  // The summary below is text on a terminal; piped, stdout carries the report as one JSON line.
  const json = jsonOutput(o.json)
  const text = json ? process.stderr : process.stdout
  const defaults = o.trainer === 'synthetic' ? SYNTHETIC_SWARM_DEFAULTS : MODEL_SWARM_DEFAULTS
  if (o.trainer === 'synthetic' && (o.model != null || o.localSteps != null || o.evalExamples != null || o.data !== MODEL_SWARM_DEFAULTS.data)) {
    throw new Error('--model, --data, --local-steps and --eval-examples are for the model trainer')
  }
  const out = o.out
  const report = await runSwarm({
    peers: o.peers ?? defaults.peers,
    rounds: o.rounds ?? defaults.rounds,
    ranks: o.ranks ?? [...defaults.ranks],
    strategy: o.strategy,
    trainer: o.trainer,
    model: o.model,
    data: o.trainer === 'synthetic' ? undefined : o.data,
    localSteps: o.localSteps ?? (o.trainer === 'synthetic' ? undefined : MODEL_SWARM_DEFAULTS.localSteps),
    evalExamples: o.evalExamples,
    peerArgs: o.peerArgs,
    out,
    deadlineMs: o.deadline,
    graceMs: o.grace,
    timeoutMs: o.timeout * 1000,
    progress: o.progress && process.stdout.isTTY === true,
  })
  const values = (r: Record<string, number | null>): number[] => Object.values(r).filter((x): x is number => x != null)
  const lossOf = (r: SwarmRoundReport): string => {
    const v = values(r.evalLoss)
    if (v.length === 0) return '-'
    const l0 = report.genesis.evalLoss
    const delta = l0 != null ? ` (${v[0] - l0 <= 0 ? '' : '+'}${(v[0] - l0).toFixed(4)} vs round 0)` : ''
    return `${v[0].toFixed(4)}${new Set(v).size > 1 ? ` (peers differ: ${v.map((x) => x.toFixed(4)).join(', ')})` : ''}${delta}`
  }
  const trainOf = (r: SwarmRoundReport): string => {
    const v = values(r.trainLoss)
    return v.length === 0 ? '' : `, train loss ${(v.reduce((a, b) => a + b, 0) / v.length).toFixed(4)} (peer mean)`
  }
  text.write(`swarm ${report.swarmId ?? '?'}: ${report.options.peers} ${report.options.trainer} peers, ranks ${report.options.ranks.join(',')}, ${report.options.strategy}\n`)
  const exactOf = (x: number | null): string => (x != null ? `, held-out exact match ${(100 * x).toFixed(1)}%` : '')
  text.write(`round 0: state ${report.genesis.stateHash?.slice(0, 12) ?? '?'}, eval loss ${report.genesis.evalLoss?.toFixed(4) ?? '-'}${exactOf(report.genesis.exactMatch)}\n`)
  for (const r of report.rounds) {
    const hashes = new Set(Object.values(r.hashes))
    text.write(
      `round ${r.round}: ${r.agree ? 'hashes agree' : 'HASHES DISAGREE'} (${[...hashes].map((h) => h?.slice(0, 12) ?? 'missing').join(', ')}), ${r.contributors.length} contributor${r.contributors.length === 1 ? '' : 's'}, eval loss ${lossOf(r)}${exactOf(r.exactMatch)}${trainOf(r)}\n`,
    )
  }
  text.write(`report: ${join(resolve(out), 'report.json')} (${(report.durationMs / 1000).toFixed(1)} s)\n`)
  const federatedModel = join(resolve(out), 'federated', 'model')
  if (existsSync(join(resolve(out), 'federated', 'flora.json'))) {
    text.write(`federated model: ${join(resolve(out), 'federated')} (model/: the agreed weights; adapter/: the cumulative update as a PEFT adapter)\n`)
    // tfjs is loaded only here, for the samples.
    const samples = o.trainer === 'model' && o.samples && report.agreement && existsSync(federatedModel) ? await import('./swarm-samples.js') : undefined
    if (samples !== undefined && samples.hasSampleQuestions(o.data)) {
      const { sampleAnswers } = samples
      text.write('held-out questions, greedy answers of the base and the federated model:\n')
      for (const s of await sampleAnswers(o.model, federatedModel, o.data)) {
        text.write(`  > ${s.question}\n    reference: ${s.reference}\n    base:      ${s.base || '(nothing)'}\n    federated: ${s.federated || '(nothing)'}\n`)
      }
    }
  }
  if (json) process.stdout.write(`${JSON.stringify({ event: 'swarm:report', report: join(resolve(out), 'report.json'), ...report })}\n`)
  const failed = report.peers.filter((p) => p.exitCode !== 0)
  if (!report.agreement || failed.length > 0 || !report.allFinished) {
    process.stderr.write(
      `swarm FAILED: ${!report.agreement ? 'state hashes disagree; ' : ''}${failed.length > 0 ? `peers ${failed.map((p) => p.index).join(',')} exited non-zero (see ${join(resolve(out), `peer-${failed[0].index}.log`)}); ` : ''}${!report.allFinished ? 'not every peer finished' : ''}\n`,
    )
    process.exit(1)
  }
}

if (process.argv[1] != null && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  cli().catch((err: unknown) => {
    process.stderr.write(`swarm: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  })
}
