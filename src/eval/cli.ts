/**
 * `npm run eval -- [options] --out DIR`: argument parsing (validated with zod at the edge),
 * backend creation, the run, and the output files (results.json, results.md, PNG plots).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import { Command, CommanderError, Option } from 'commander'
import { z } from 'zod'
import { listStrategies } from '../aggregation/strategy.js'
import { LINEAR_MODULES } from '../model/config.js'
import { writePlots } from './plots.js'
import { renderMarkdown } from './report.js'
import { DEFAULT_CONFIG, QUICK_OVERRIDES, SETTINGS } from './settings.js'
import { runEvaluation } from './simulate.js'
import { createToyBackend } from './toy.js'
import type { EvalConfig, EvalResults, SimBackend } from './types.js'
import { VERSION } from '../version.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from '../exit-codes.js'
import { applyConfigOption, ConfigFileError, jsonOption, jsonOutput, withEnvAndConfig } from '../cli-options.js'

import '../aggregation/index.js'

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
    'seq-len': posInt.optional(),
    'central-rank': posInt.optional(),
    'central-lr': z
      .string()
      .transform((s) => list(s).map(Number))
      .pipe(z.array(z.number().positive().finite()).min(1))
      .optional(),
    data: z.enum(['wordnet', 'skills']).optional(),
    targets: z
      .string()
      .transform(list)
      .pipe(z.array(z.enum(LINEAR_MODULES)).min(1))
      .optional(),
    'partition-seed': z.coerce.number().int().nonnegative().optional(),
    'shards-per-client': posInt.optional(),
    backend: z.enum(['model', 'toy']).optional(),
    model: z.string().min(1).optional(),
    quick: z.boolean().optional(),
    replot: z.boolean().optional(),
    out: z.string().min(1, 'is required'),
  })
  .strict()

export class UsageError extends Error {
  override readonly name = 'UsageError'
}

/** The eval command's flags (values checked by ArgsSchema; the names match the other CLIs'). */
export function buildEvalProgram(): Command {
  const program = new Command('npm run eval --')
    .description('Simulates K federated clients in one process and compares aggregation strategies; writes results.json, results.md and plots to --out.')
    .version(VERSION, '-V, --version')
    .option('--clients <n>', 'clients (default 10)')
    .option('--rounds <n>', 'federated rounds (default 3)')
    .option('--local-steps <n>', 'local training steps per client per round (default 5)')
    .option('--ranks <list>', 'homo16, hetero, or both as "homo16,hetero" (default both)')
    .option('--strategies <list>', `comma list of ${listStrategies().join(', ')} (default all)`)
    .option('--seeds <n>', 'training seeds 0..N-1 (default 3)')
    .option('--global-scale <list>', 'multiplier(s) x of the aggregated update, e.g. 1 or 0.5,1,2 (default 1)')
    .option('--references', 'run the centralized and local-only references (default)')
    .option('--no-references', 'skip the centralized and local-only references')
    .option('--train-examples <n>', 'training pool shared out to the clients (default 2000)')
    .option('--eval-examples <n>', 'held-out examples (default 120)')
    .option('--batch-size <n>', 'examples per step (default 4)')
    .option('--lr <x>', 'learning rate (default 3e-3)')
    .option('--seq-len <n>', 'tokens per example (default 64)')
    .addOption(new Option('--max-len <n>', 'old name of --seq-len').hideHelp())
    .option('--central-rank <n>', 'rank of the centralized reference (default 16)')
    .option('--central-lr <list>', 'learning rate(s) of the centralized reference, e.g. 1e-3,3e-3,1e-2: a sweep, each its own row (default: --lr)')
    .option('--data <task>', 'skills (the skills suite, scored by exact match; default) or wordnet (definitions)')
    .option('--targets <list>', `LoRA target modules, comma list of ${LINEAR_MODULES.join(', ')} (default all of them)`)
    .option('--partition-seed <n>', 'seed of the non-IID split (default 0)')
    .option('--shards-per-client <n>', 'category shards per client (default 2)')
    .addOption(new Option('--backend <name>', 'the bundled Llama (model, default) or the plain-JS toy task').choices(['model', 'toy']))
    .option('-m, --model <dir>', 'base model directory (default: the bundled models/flora-tiny)')
    .addOption(new Option('--model-dir <dir>', 'old name of --model').hideHelp())
    .option('--quick', 'tiny run for CI: 3 clients, 2 rounds, 2 steps, flora + fedit')
    .option('-o, --out <dir>', 'output directory (required)')
    .option('--replot', 'only re-render DIR/results.md and the plots from DIR/results.json')
    .option('--verbose', 'print stack traces of errors')
    .addOption(jsonOption())
    .allowExcessArguments(false)
  // Every option from a FLORA_EVAL_* variable too, and --config FILE.
  return withEnvAndConfig(program, 'FLORA_EVAL_')
}

/** The eval command's help text. */
export const USAGE = buildEvalProgram().helpInformation()

/** Parses argv (without node and script) into a config: defaults, then --quick, then flags. */
export function parseEvalArgs(argv: readonly string[]): EvalConfig {
  let errors = ''
  const program = buildEvalProgram()
    .exitOverride()
    .configureOutput({ writeErr: (text) => (errors += text), writeOut: () => {} })
  try {
    program.parse([...argv], { from: 'user' })
    applyConfigOption(program)
  } catch (err) {
    if (err instanceof CommanderError) throw new UsageError(errors.trim().replace(/^error: /, '') || err.message)
    if (err instanceof ConfigFileError) throw new UsageError(err.message)
    throw err
  }
  const o = program.opts<Record<string, string | boolean | undefined>>()
  const kebab = (k: string): string => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
  const values: Record<string, string | boolean> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined && k !== 'verbose' && k !== 'config' && k !== 'json') values[kebab(k)] = v
  // Old names (--max-len, --model-dir) still work; the new ones win.
  if (values['max-len'] !== undefined) values['seq-len'] ??= values['max-len']
  if (values['model-dir'] !== undefined) values.model ??= values['model-dir']
  delete values['max-len']
  delete values['model-dir']
  const parsed = { values }
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
    maxLen: pick(a['seq-len'], base.maxLen),
    partitionSeed: pick(a['partition-seed'], base.partitionSeed),
    shardsPerClient: pick(a['shards-per-client'], base.shardsPerClient),
    backend: pick(a.backend, base.backend),
    ...(a['central-rank'] !== undefined ? { centralRank: a['central-rank'] } : {}),
    ...(a['central-lr'] !== undefined ? { centralLrs: a['central-lr'] } : {}),
    ...(a.data !== undefined ? { data: a.data } : {}),
    ...(a.targets !== undefined ? { targets: a.targets } : {}),
    ...(a.model !== undefined ? { modelDir: a.model } : {}),
    quick: a.quick === true,
    out: a.out,
  }
  if (config.modelDir !== undefined && config.backend === 'model' && !existsSync(join(config.modelDir, 'config.json'))) {
    throw new UsageError(`--model ${config.modelDir}: not a model directory (no config.json there)`)
  }
  if (config.backend === 'toy' && (a.data !== undefined || a.targets !== undefined)) {
    throw new UsageError('--data and --targets apply to the model backend, not --backend toy')
  }
  if (config.trainExamples < config.clients * config.shardsPerClient) {
    throw new UsageError(`--train-examples must be at least clients × shards-per-client = ${config.clients * config.shardsPerClient}`)
  }
  if (config.backend === 'toy') {
    // The toy has its own task and modules: the model backend's fields would only mislead in results.json.
    const { data: _data, targets: _targets, ...toy } = config
    return toy
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

/** The whole command; returns the exit code (see src/exit-codes.ts). Errors are one line; --verbose adds the stack. */
export async function main(argv: readonly string[], log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE)
    return EXIT_OK
  }
  if (argv.includes('--version') || argv.includes('-V')) {
    process.stdout.write(`${VERSION}\n`)
    return EXIT_OK
  }
  let config: EvalConfig
  try {
    config = parseEvalArgs(argv)
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`eval: ${err.message} (npm run eval -- --help for usage)\n`)
      return EXIT_USAGE
    }
    throw err
  }
  try {
    const files = await run(config, argv.includes('--replot'), log)
    // Progress and the summary go to stderr; piped (or --json), stdout gets one JSON line.
    if (jsonOutput(argv.includes('--json'))) process.stdout.write(`${JSON.stringify({ event: 'eval:done', out: config.out, files: files.map((f) => join(config.out, f)) })}\n`)
    return EXIT_OK
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err))
    process.stderr.write(`eval: ${argv.includes('--verbose') ? (e.stack ?? e.message) : (e.message.split('\n')[0] ?? e.name)}\n`)
    return EXIT_FAILURE
  }
}

/** Runs (or re-plots) the evaluation; returns the files written into config.out. */
async function run(config: EvalConfig, replot: boolean, log: (line: string) => void): Promise<string[]> {
  if (replot) {
    const results = JSON.parse(await readFile(join(config.out, 'results.json'), 'utf8')) as EvalResults
    const plots = await writePlots(results, config.out)
    await writeFile(join(config.out, 'results.md'), renderMarkdown(results, plots) + '\n')
    log(`re-rendered results.md and ${plots.join(', ')} in ${config.out}`)
    return ['results.md', ...plots]
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
    return files
  } finally {
    await backend.dispose()
  }
}
