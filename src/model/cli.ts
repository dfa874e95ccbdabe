/**
 * `flora`: fine-tune and try out a LoRA on one machine, no network.
 *
 *   flora train [--data wordnet|file.jsonl] [--rank 8] [--steps 200] [--out DIR] ...
 *   flora generate [--model DIR] [--adapter DIR] --prompt "..."
 *
 * `train` prints the backend, the held-out loss before and after, a progress bar on a TTY
 * (JSON lines otherwise) and a few generations, then saves the PEFT adapter. Ctrl-C stops
 * it cleanly and saves nothing; a second Ctrl-C exits at once. Exit codes: 0 ok, 1 failure,
 * 2 bad usage, 130 interrupted.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import type { BackendPreference } from './backend.js'
import { LINEAR_MODULES } from './llama.js'
import { BACKEND_CHOICES, defaultModelDir, runGenerate, runTrain, TRAIN_DEFAULTS, TrainCommandError, type OutputStream } from './train-command.js'
import { TrainingAbortedError } from './trainer.js'
import { VERSION } from '../version.js'
import { commanderExitCode } from '../exit-codes.js'
import { applyConfigOption, ConfigFileError, fraction, intAtLeast, positiveNumber, withEnvAndConfig } from '../cli-options.js'



function targetList(value: string): string[] {
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
  if (items.length === 0) throw new InvalidArgumentError('--targets needs at least one module name')
  for (const t of items) {
    if (!(LINEAR_MODULES as readonly string[]).includes(t)) throw new InvalidArgumentError(`unknown module '${t}' (choose from ${LINEAR_MODULES.join(', ')})`)
  }
  return items
}

interface TrainFlags {
  model?: string
  data: string
  evalData?: string
  rank: number
  initAdapter?: string
  alpha?: number
  targets: string[]
  steps: number
  batchSize: number
  seqLen: number
  lr: number
  seed: number
  backend: BackendPreference
  maxTrain?: number
  maxEval?: number
  out: string
  save: boolean
  merge?: boolean
  samples: number
  json?: boolean
}

interface GenerateFlags {
  model?: string
  adapter?: string
  prompt: string
  input?: string
  raw?: boolean
  maxNewTokens: number
  topP?: number
  temperature?: number
  seed: number
  backend: BackendPreference
}

export interface CliIo {
  readonly stdout?: OutputStream
  readonly stderr?: OutputStream
  /** Abort signal to use instead of installing SIGINT/SIGTERM handlers (tests). */
  readonly signal?: AbortSignal
}

/** Install Ctrl-C handling: first signal aborts, a second exits at once. Returns the signal and an uninstaller. */
function interruptSignal(stderr: OutputStream): { signal: AbortSignal; dispose: () => void } {
  const ctl = new AbortController()
  const onSignal = (sig: NodeJS.Signals): void => {
    if (ctl.signal.aborted) {
      stderr.write(`\nflora: ${sig} again, exiting now\n`)
      process.exit(130)
    }
    stderr.write(`\nflora: ${sig}: stopping after the current step (Ctrl-C again to exit now); nothing will be saved\n`)
    ctl.abort(new Error(sig))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return {
    signal: ctl.signal,
    dispose: () => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    },
  }
}

export function buildProgram(run: { code: number }, io: CliIo = {}): Command {
  const stdout = io.stdout ?? process.stdout
  const stderr = io.stderr ?? process.stderr
  const program = new Command('flora')
  program
    .version(VERSION, '-V, --version', 'print the version and exit')
    .description('Fine-tune a LoRA adapter on one machine (no network) and generate with it. For the peer-to-peer swarm, see flora-peer.')
    .exitOverride()
    .configureOutput({ writeOut: (s) => void stdout.write(s), writeErr: (s) => void stderr.write(s) })
    .addHelpText('after', "\nAlso: flora export --state-dir DIR --out DIR  writes the model a swarm peer agreed on (see flora export --help).")

  const train = program
    .command('train')
    .summary('fine-tune a LoRA adapter: held-out loss before/after, progress, samples, saved PEFT adapter')
    .description(
      'Fine-tune a fresh LoRA adapter on the base model: prints the held-out loss and perplexity before and after, ' +
        'a progress bar on a TTY (JSON lines otherwise), a few greedy generations for held-out prompts, and saves the PEFT adapter. ' +
        'Every option can also be set by the FLORA_* environment variable shown, or in a JSON --config file (a flag wins over the variable, the variable over the file), as for every flora command.',
    )
    .addOption(new Option('-m, --model <dir>', 'base model directory: config.json, model.safetensors, tokenizer.json (default: the bundled models/flora-tiny)').env('FLORA_MODEL'))
    .addOption(new Option('-d, --data <spec>', "'wordnet' (bundled WordNet 3.1 definition task), 'skills' (the skills suite, scored by held-out exact match) or a JSONL file of Alpaca {instruction, input, output} or Dolly {instruction, context, response} records").default(TRAIN_DEFAULTS.data).env('FLORA_DATA'))
    .addOption(new Option('--eval-data <file>', 'held-out JSONL file (default: WordNet\'s held-out synsets, or a seeded 5% of --data)').env('FLORA_EVAL_DATA'))
    .addOption(new Option('-r, --rank <n>', 'LoRA rank').argParser(intAtLeast('--rank', 1)).default(TRAIN_DEFAULTS.rank).env('FLORA_RANK'))
    .addOption(new Option('--alpha <x>', 'LoRA alpha (default: 2 x rank)').argParser(positiveNumber('--alpha')).env('FLORA_ALPHA'))
    .addOption(new Option('--targets <list>', `comma-separated linear layers to adapt: ${LINEAR_MODULES.join(', ')}`).argParser(targetList).default([...TRAIN_DEFAULTS.targets], TRAIN_DEFAULTS.targets.join(',')).env('FLORA_TARGETS'))
    .addOption(new Option('-s, --steps <n>', 'training steps').argParser(intAtLeast('--steps', 1)).default(TRAIN_DEFAULTS.steps).env('FLORA_STEPS'))
    .addOption(new Option('-b, --batch-size <n>', 'examples per step').argParser(intAtLeast('--batch-size', 1)).default(TRAIN_DEFAULTS.batchSize).env('FLORA_BATCH_SIZE'))
    .addOption(new Option('--seq-len <n>', 'tokens per example (longer ones are cut)').argParser(intAtLeast('--seq-len', 4)).default(TRAIN_DEFAULTS.seqLen).env('FLORA_SEQ_LEN'))
    .addOption(new Option('--lr <x>', 'AdamW learning rate').argParser(positiveNumber('--lr')).default(TRAIN_DEFAULTS.lr).env('FLORA_LR'))
    .addOption(new Option('--lora-dropout <x>', 'LoRA dropout while training').argParser(fraction('--lora-dropout')).default(TRAIN_DEFAULTS.loraDropout).env('FLORA_LORA_DROPOUT'))
    .addOption(new Option('--seed <n>', 'seed of the adapter init, batch order and holdout').argParser(intAtLeast('--seed', 0)).default(TRAIN_DEFAULTS.seed).env('FLORA_SEED'))
    .addOption(new Option('--backend <name>', 'tfjs backend; auto picks the best available').choices(BACKEND_CHOICES).default(TRAIN_DEFAULTS.backend).env('FLORA_BACKEND'))
    .addOption(new Option('--max-train <n>', `cap on training examples (wordnet default: max(${TRAIN_DEFAULTS.wordnetMinTrain}, steps x batch size))`).argParser(intAtLeast('--max-train', 1)).env('FLORA_MAX_TRAIN'))
    .addOption(new Option('--max-eval <n>', `cap on held-out examples (wordnet default: ${TRAIN_DEFAULTS.wordnetMaxEval})`).argParser(intAtLeast('--max-eval', 1)).env('FLORA_MAX_EVAL'))
    .addOption(new Option('-o, --out <dir>', 'save the PEFT adapter here (replaced if it holds an earlier adapter)').default('runs/train').env('FLORA_OUT'))
    .addOption(new Option('--no-save', 'do not save the adapter'))
    .addOption(new Option('--init-adapter <dir>', 'start from this PEFT adapter (e.g. a federation\'s export adapter/) instead of a fresh one; its rank, alpha and targets replace --rank, --alpha, --targets').env('FLORA_INIT_ADAPTER'))
    .addOption(new Option('--merge', 'also save the merged model (W + s B A, loadable with --model) into <out>/merged'))
    .addOption(new Option('--samples <n>', 'greedy generations to show for held-out prompts').argParser(intAtLeast('--samples', 0)).default(TRAIN_DEFAULTS.samples).env('FLORA_SAMPLES'))
    .addOption(new Option('--json', 'JSON lines on stdout (events and every step) instead of text and a bar; the default when stdout is not a terminal').env('FLORA_JSON'))
  // Every option from a FLORA_* variable too, and --config FILE (e.g. {"rank": 16, "targets": ["q_proj", "v_proj"]}).
  withEnvAndConfig(train, 'FLORA_', 'FLORA_TRAIN_CONFIG')
    .hook('preAction', (cmd) => applyConfigOption(cmd))
    .addHelpText(
      'after',
      `
Examples:
  flora train --steps 200                                   # bundled model, WordNet definitions
  flora train --data my.jsonl --rank 16 --targets q_proj,k_proj,v_proj,o_proj --out runs/mine
  flora generate --adapter runs/train --prompt "Define the word harbor (noun)."
`,
    )
    .action(async (flags: TrainFlags) => {
      if (flags.merge === true && !flags.save) throw new TrainCommandError('--merge cannot be combined with --no-save')
      const own = io.signal === undefined ? interruptSignal(stderr) : undefined
      try {
        await runTrain({
          model: flags.model,
          data: flags.data,
          evalData: flags.evalData,
          rank: flags.rank,
          alpha: flags.alpha,
          targets: flags.targets,
          steps: flags.steps,
          batchSize: flags.batchSize,
          seqLen: flags.seqLen,
          lr: flags.lr,
          seed: flags.seed,
          backend: flags.backend,
          maxTrain: flags.maxTrain,
          maxEval: flags.maxEval,
          out: flags.save ? flags.out : undefined,
          initAdapter: flags.initAdapter,
          merge: flags.merge,
          samples: flags.samples,
          // JSON lines on stdout whenever stdout is not a terminal (piped, redirected), as flora-peer does.
          json: flags.json === true || (stdout as { isTTY?: boolean }).isTTY !== true,
          signal: io.signal ?? own?.signal,
          stdout,
          stderr,
        })
        run.code = 0
      } finally {
        own?.dispose()
      }
    })

  const generate = program
    .command('generate')
    .summary('generate a reply for one prompt, with or without an adapter')
    .description('Generate a reply for one prompt with a base model and, optionally, a PEFT adapter (greedy unless --top-p).')
    .addOption(new Option('-m, --model <dir>', 'base model directory (default: the bundled models/flora-tiny)'))
    .addOption(new Option('-a, --adapter <dir>', 'PEFT adapter directory (e.g. the --out of flora train)'))
    .addOption(new Option('-p, --prompt <text>', 'the instruction (wrapped in the training template unless --raw)').makeOptionMandatory())
    .addOption(new Option('--input <text>', 'context for the instruction (the template\'s Input section)'))
    .addOption(new Option('--raw', 'feed the prompt as is, without the instruction template'))
    .addOption(new Option('-n, --max-new-tokens <n>', 'tokens to generate at most').argParser(intAtLeast('--max-new-tokens', 1)).default(64))
    .addOption(new Option('--top-p <p>', 'nucleus sampling with this mass instead of greedy decoding').argParser(positiveNumber('--top-p')))
    .addOption(new Option('--temperature <t>', 'sampling temperature (with --top-p)').argParser(positiveNumber('--temperature')))
    .addOption(new Option('--seed <n>', 'sampling seed (with --top-p)').argParser(intAtLeast('--seed', 0)).default(0))
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(BACKEND_CHOICES).default('auto'))
    .action(async (flags: GenerateFlags) => {
      const own = io.signal === undefined ? interruptSignal(stderr) : undefined
      try {
        const r = await runGenerate({ ...flags, signal: io.signal ?? own?.signal })
        stdout.write(`${r.text}\n`)
        run.code = 0
      } finally {
        own?.dispose()
      }
    })
  withEnvAndConfig(generate, 'FLORA_', 'FLORA_GENERATE_CONFIG').hook('preAction', (cmd) => applyConfigOption(cmd))
  return program
}

/** Runs the CLI; resolves with the process exit code. */
export async function main(argv: readonly string[] = process.argv, io: CliIo = {}): Promise<number> {
  const stderr = io.stderr ?? process.stderr
  const run = { code: 1 }
  const program = buildProgram(run, io)
  try {
    await program.parseAsync([...argv])
    return run.code
  } catch (err) {
    // --help and --version exit 0; bad flags and no command: 2 (see src/exit-codes.ts).
    if (err instanceof CommanderError) return commanderExitCode(err)
    if (err instanceof TrainingAbortedError) {
      stderr.write(`flora: interrupted after ${err.stepsCompleted} training step(s); nothing was saved\n`)
      return 130
    }
    if (err instanceof TrainCommandError || err instanceof ConfigFileError) {
      stderr.write(`flora: ${err.message}\n`)
      return 2
    }
    stderr.write(`flora: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
}

export { defaultModelDir }

// `tsx src/model/cli.ts train ...` (npm run train): run when this file is the entry point.
function isEntryPoint(): boolean {
  const entry = process.argv[1]
  if (entry === undefined) return false
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  const code = await main(process.argv)
  process.exit(code)
}
