/**
 * `npm run eval -- [options] --out DIR`: argument parsing (validated with zod at the edge),
 * backend creation, the run, and the output files (results.json, results.md, PNG plots).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { z } from 'zod'
import { listStrategies } from '../aggregation/strategy.js'
import { writePlots } from './plots.js'
import { renderMarkdown } from './report.js'
import { DEFAULT_CONFIG, QUICK_OVERRIDES, SETTINGS } from './settings.js'
import { runEvaluation } from './simulate.js'
import { createToyBackend } from './toy.js'
import type { EvalConfig, EvalResults, SimBackend } from './types.js'

import '../aggregation/index.js'

export const USAGE = `Usage: npm run eval -- [options] --out DIR

  --clients N            clients (default 10)
  --rounds R             federated rounds (default 3)
  --local-steps S        local training steps per client per round (default 5)
  --ranks LIST           homo16, hetero, or both as "homo16,hetero" (default both)
  --strategies LIST      comma list of ${listStrategies().join(', ')} (default all)
  --seeds N              training seeds 0..N-1 (default 3)
  --global-scale LIST    multiplier(s) x of the aggregated update, e.g. 1 or 0.5,1,2 (default 1)
  --no-references        skip the centralized and local-only references
  --train-examples N     training pool shared out to the clients (default 2000)
  --eval-examples N      held-out examples (default 120)
  --batch-size N         (default 4)   --lr X (default 3e-3)   --max-len N (default 64)
  --central-rank N       rank of the centralized reference (default 16)
  --partition-seed N     seed of the non-IID split (default 0)
  --shards-per-client N  category shards per client (default 2)
  --backend model|toy    the bundled Llama (default) or the plain-JS toy task
  --model-dir DIR        model directory (default models/flora-tiny)
  --quick                tiny run for CI: 3 clients, 2 rounds, 2 steps, flora + fedit
  --out DIR              output directory (required)
  --replot               only re-render DIR/results.md and the plots from DIR/results.json
`

const list = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0)

const posInt = z.coerce.number().int().positive()

const ArgsSchema = z
  .object({
    clients: posInt.optional(),
    rounds: posInt.optional(),
    'local-steps': posInt.optional(),
    ranks: z
      .string()
      .transform(list)
      .pipe(z.array(z.enum(['homo16', 'hetero'])).min(1))
      .optional(),
    strategies: z
      .string()
      .transform(list)
      .pipe(
        z
          .array(z.string().refine((s) => listStrategies().includes(s), { message: `unknown strategy; known: ${listStrategies().join(', ')}` }))
          .min(1),
      )
      .optional(),
    seeds: posInt.optional(),
    'global-scale': z
      .string()
      .transform((s) => list(s).map(Number))
      .pipe(z.array(z.number().positive().finite()).min(1))
      .optional(),
    references: z.boolean().optional(),
    'train-examples': posInt.optional(),
    'eval-examples': posInt.optional(),
    'batch-size': posInt.optional(),
    lr: z.coerce.number().positive().finite().optional(),
    'max-len': posInt.optional(),
    'central-rank': posInt.optional(),
    'partition-seed': z.coerce.number().int().nonnegative().optional(),
    'shards-per-client': posInt.optional(),
    backend: z.enum(['model', 'toy']).optional(),
    'model-dir': z.string().min(1).optional(),
    quick: z.boolean().optional(),
    replot: z.boolean().optional(),
    out: z.string().min(1, 'is required'),
  })
  .strict()

export class UsageError extends Error {
  override readonly name = 'UsageError'
}

/** Parses argv (without node and script) into a config: defaults, then --quick, then flags. */
export function parseEvalArgs(argv: readonly string[]): EvalConfig {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      allowNegative: true,
      options: {
        clients: { type: 'string' },
        rounds: { type: 'string' },
        'local-steps': { type: 'string' },
        ranks: { type: 'string' },
        strategies: { type: 'string' },
        seeds: { type: 'string' },
        'global-scale': { type: 'string' },
        references: { type: 'boolean' },
        'train-examples': { type: 'string' },
        'eval-examples': { type: 'string' },
        'batch-size': { type: 'string' },
        lr: { type: 'string' },
        'max-len': { type: 'string' },
        'central-rank': { type: 'string' },
        'partition-seed': { type: 'string' },
        'shards-per-client': { type: 'string' },
        backend: { type: 'string' },
        'model-dir': { type: 'string' },
        quick: { type: 'boolean' },
        replot: { type: 'boolean' },
        out: { type: 'string' },
      },
    })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const res = ArgsSchema.safeParse(parsed.values)
  if (!res.success) {
    const issue = res.error.issues[0]
    throw new UsageError(`--${issue.path.join('.') || 'arguments'}: ${issue.message}`)
  }
  const a = res.data
  const base: Omit<EvalConfig, 'out'> = { ...DEFAULT_CONFIG, ...(a.quick === true ? QUICK_OVERRIDES : {}) }
  const pick = <T>(v: T | undefined, d: T): T => (v === undefined ? d : v)
  const config: EvalConfig = {
    ...base,
    clients: pick(a.clients, base.clients),
    rounds: pick(a.rounds, base.rounds),
    localSteps: pick(a['local-steps'], base.localSteps),
    settings: a.ranks === undefined ? base.settings : SETTINGS.filter((s) => a.ranks?.includes(s)),
    strategies: pick(a.strategies, base.strategies),
    seeds: pick(a.seeds, base.seeds),
    globalScales: pick(a['global-scale'], base.globalScales),
    references: pick(a.references, base.references),
    trainExamples: pick(a['train-examples'], base.trainExamples),
    evalExamples: pick(a['eval-examples'], base.evalExamples),
    batchSize: pick(a['batch-size'], base.batchSize),
    lr: pick(a.lr, base.lr),
    maxLen: pick(a['max-len'], base.maxLen),
    partitionSeed: pick(a['partition-seed'], base.partitionSeed),
    shardsPerClient: pick(a['shards-per-client'], base.shardsPerClient),
    backend: pick(a.backend, base.backend),
    ...(a['central-rank'] !== undefined ? { centralRank: a['central-rank'] } : {}),
    ...(a['model-dir'] !== undefined ? { modelDir: a['model-dir'] } : {}),
    quick: a.quick === true,
    out: a.out,
  }
  if (config.trainExamples < config.clients * config.shardsPerClient) {
    throw new UsageError(`--train-examples must be at least clients × shards-per-client = ${config.clients * config.shardsPerClient}`)
  }
  return config
}

/** The backend a config asks for. The model backend (tfjs) is loaded only when used. */
export async function createBackend(config: EvalConfig): Promise<SimBackend> {
  if (config.backend === 'toy') {
    return createToyBackend({
      trainExamples: config.trainExamples,
      evalExamples: config.evalExamples,
      batchSize: config.batchSize,
      // The toy classifier is far from a pretrained LLM: its useful step size is ~2x larger.
      lr: config.lr * 2,
    })
  }
  const { createModelBackend } = await import('./model-backend.js')
  return createModelBackend(config)
}

/** Writes results.json, the plots and results.md into config.out; returns the file names. */
export async function writeOutputs(results: EvalResults, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'results.json'), JSON.stringify(results, null, 2) + '\n')
  const plots = await writePlots(results, dir)
  await writeFile(join(dir, 'results.md'), renderMarkdown(results, plots) + '\n')
  return ['results.json', 'results.md', ...plots]
}

/** The whole command; returns the exit code. */
export async function main(argv: readonly string[], log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE)
    return 0
  }
  let config: EvalConfig
  try {
    config = parseEvalArgs(argv)
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`eval: ${err.message}\n\n${USAGE}`)
      return 2
    }
    throw err
  }
  if (argv.includes('--replot')) {
    const results = JSON.parse(await readFile(join(config.out, 'results.json'), 'utf8')) as EvalResults
    const plots = await writePlots(results, config.out)
    await writeFile(join(config.out, 'results.md'), renderMarkdown(results, plots) + '\n')
    log(`re-rendered results.md and ${plots.join(', ')} in ${config.out}`)
    return 0
  }
  const backend = await createBackend(config)
  try {
    log(`backend: ${Object.entries(backend.description).map(([k, v]) => `${k}=${v}`).join(' ')}`)
    await mkdir(config.out, { recursive: true })
    const partial = join(config.out, 'results.partial.json')
    const results = await runEvaluation(config, backend, {
      log,
      // A long run keeps what it finished: every completed run is saved as it lands.
      onRun: (_run, runs) => writeFile(partial, JSON.stringify({ config, runs }, null, 2) + '\n'),
    })
    await rm(partial, { force: true })
    const files = await writeOutputs(results, config.out)
    log(`wrote ${files.map((f) => join(config.out, f)).join(', ')} in ${(results.seconds / 60).toFixed(1)} min`)
  } finally {
    await backend.dispose()
  }
  return 0
}
