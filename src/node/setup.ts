/**
 * The seam between the peer and a training backend: everything `flora-peer` needs to
 * join a swarm (the swarm config, the base target weights, the local trainer and a
 * held-out evaluation), resolved from CLI-level options.
 *
 * Backends register here by name. `synthetic` (built in) runs the least-squares task of
 * trainer.ts on a synthetic base and needs no tfjs. `model` (model-trainer.ts, loaded on
 * first use so that synthetic peers never load tfjs) fine-tunes a real checkpoint; it is
 * the default.
 */
import { readFile } from 'node:fs/promises'
import { peerIdFromString } from '@libp2p/peer-id'
import { parseSwarmConfig, SwarmConfigError, type ContributionPolicy, type RoundPolicy, type SwarmConfig } from './config.js'
import { syntheticSwarm } from './synthetic.js'
import { syntheticEvalLoss, syntheticTrainer, type Trainer } from './trainer.js'

/** A held-out evaluation of a state's weights. */
export interface EvalScore {
  /** Mean loss (lower is better): target-token cross-entropy (model trainer), squared error (synthetic). */
  readonly loss: number
  /** Share of target tokens predicted right by greedy decoding (model trainer only). */
  readonly accuracy?: number
}

export interface PeerSetup {
  readonly config: SwarmConfig
  readonly weights: ReadonlyMap<string, Float32Array>
  readonly trainer: Trainer
  /** Held-out loss (and accuracy, where it means something) of a state's target weights; rejects when `signal` aborts. */
  evaluate(weights: ReadonlyMap<string, Float32Array>, signal?: AbortSignal): Promise<EvalScore>
  /** Local training examples (n_k). */
  readonly samples: number
  /** One line for the logs. */
  readonly description: string
  /** The base model checkpoint directory (model trainer), for exporting the agreed model. */
  readonly baseModelDir?: string
  /**
   * Releases what the setup holds (setupPeerInWorker: terminates the training worker;
   * pending and later calls reject). Absent for in-thread setups, which hold nothing.
   */
  close?(): Promise<void>
}

export interface SetupOptions {
  /**
   * Model trainer: a PEFT adapter merged into the base's target weights before round 1
   * (e.g. one exported from an earlier federation). It is part of the genesis state, so
   * every peer of the swarm must start from the same one.
   */
  initAdapter?: string
  /** Backend name (default: 'model' if registered, else 'synthetic'). */
  trainer?: string
  /** A swarm config file; when given it is authoritative. */
  configFile?: string
  /**
   * A closed swarm: a file of the member peer ids (one per line, or a JSON array); sets the
   * config's `members` (with --config: must agree with the members the file has, if any).
   */
  membersFile?: string
  /** Swarm name (part of the swarm id). */
  name?: string
  strategy?: string
  round?: Partial<RoundPolicy>
  /** Contribution bounds (swarm-wide). */
  contribution?: Partial<ContributionPolicy>
  rank: number
  alpha: number
  /** Data spec: a JSONL path or a bundled task (model backend); `synthetic[:k]` (synthetic backend). */
  data?: string
  /** Model directory (model backend). */
  model?: string
  localSteps?: number
  /** Sample count override (synthetic backend). */
  samples?: number
  seed?: number
  /** Synthetic base size. */
  layers?: number
  hidden?: number
  // Model backend only (defaults: MODEL_TRAINER_DEFAULTS in model-trainer.ts).
  batchSize?: number
  seqLen?: number
  lr?: number
  loraDropout?: number
  /** Held-out examples evaluated after every round. */
  evalExamples?: number
  /** 'wordnet' (held-out synsets) or a JSONL file. */
  evalData?: string
  /** Cap on the training pool before it is split over the peers. */
  trainExamples?: number
  /** Linear layers to adapt (swarm-wide: part of the config's targets). */
  targets?: readonly string[]
  /** tfjs backend preference: auto, tensorflow-gpu, tensorflow, wasm, cpu. */
  backend?: 'auto' | 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu'
  /** Only the swarm config is needed (e.g. --print-config): skip loading data. */
  configOnly?: boolean
  /**
   * Synthetic backend: busy-block the training thread this many ms per round (a simulated
   * slow, synchronous training step; see SyntheticTrainerOptions.busyMs).
   */
  trainBusyMs?: number
  /**
   * Synthetic backend: wait this many ms per round before training (a peer whose training
   * takes time elsewhere, on its own machine or GPU, without occupying this one's CPU).
   */
  trainDelayMs?: number
  /** Called after every local training step. */
  onTrainStep?: (progress: TrainProgress) => void
}

/** Progress of local training after one step. */
export interface TrainProgress {
  round: number
  step: number
  steps: number
  loss: number
  elapsedMs: number
}

export type TrainerBackend = (options: SetupOptions) => Promise<PeerSetup>

const backends = new Map<string, TrainerBackend>()

/** Makes a training backend available to `flora-peer --trainer <name>`. */
export function registerTrainerBackend(name: string, backend: TrainerBackend): void {
  backends.set(name, backend)
}

export function trainerBackends(): string[] {
  return [...backends.keys()].sort()
}

export function defaultTrainerBackend(): string {
  return backends.has('model') ? 'model' : 'synthetic'
}

export async function setupPeer(options: SetupOptions): Promise<PeerSetup> {
  const name = options.trainer ?? defaultTrainerBackend()
  const backend = backends.get(name)
  if (backend == null) {
    throw new SwarmConfigError(`unknown trainer backend '${name}'; available: ${trainerBackends().join(', ')}`)
  }
  const setup = await backend(options)
  if (options.membersFile == null) return setup
  const members = await readMembersFile(options.membersFile)
  const had = setup.config.members
  if (had != null) {
    const want = [...new Set(members)].sort()
    if (had.length !== want.length || had.some((m, i) => m !== want[i])) {
      throw new SwarmConfigError(`--members ${options.membersFile} lists other peers than the members in ${options.configFile ?? 'the swarm config'}`)
    }
    return setup
  }
  // (The rest of the config is unchanged: the backend's weights and evaluation still apply.)
  return { ...setup, config: parseSwarmConfig({ ...setup.config, members }) }
}

/**
 * The peer ids of a members file: a JSON array of strings, or one id per line (blank
 * lines and '#' comments ignored; anything after the id on a line, e.g. a name, too).
 */
export function parseMembers(text: string, source = 'members'): string[] {
  let ids: string[]
  const trimmed = text.trim()
  if (trimmed.startsWith('[')) {
    let json: unknown
    try {
      json = JSON.parse(trimmed)
    } catch (err) {
      throw new SwarmConfigError(`${source}: not valid JSON: ${(err as Error).message}`)
    }
    if (!Array.isArray(json) || json.some((x) => typeof x !== 'string')) {
      throw new SwarmConfigError(`${source}: expected a JSON array of peer id strings`)
    }
    ids = (json as string[]).map((x, i) => checkPeerId(x.trim(), `${source}: entry ${i + 1}`))
  } else {
    ids = []
    text.split(/\r\n|\r|\n/).forEach((raw, i) => {
      const line = raw.replace(/#.*$/, '').trim()
      if (line === '') return
      ids.push(checkPeerId(line.split(/\s+/)[0], `${source}:${i + 1}`))
    })
  }
  if (ids.length === 0) throw new SwarmConfigError(`${source} lists no peer ids (one per line; see flora id)`)
  return [...new Set(ids)].sort()
}

/** The id in its canonical text form (base58btc, as libp2p prints it). */
function checkPeerId(id: string, where: string): string {
  try {
    return peerIdFromString(id).toString()
  } catch {
    throw new SwarmConfigError(`${where}: '${id.slice(0, 64)}' is not a peer id (expected e.g. 12D3KooW..., as flora id prints)`)
  }
}

/** Reads a members file (see parseMembers). */
export async function readMembersFile(file: string): Promise<string[]> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new SwarmConfigError(`cannot read members file ${file}: ${(err as Error).message}`)
  }
  return parseMembers(text, file)
}

/** Reads and validates a swarm config file. */
export async function readSwarmConfig(file: string): Promise<SwarmConfig> {
  let json: unknown
  try {
    json = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    throw new SwarmConfigError(`cannot read swarm config ${file}: ${(err as Error).message}`)
  }
  return parseSwarmConfig(json)
}

/** `synthetic` or `synthetic:<k>`: the k-th peer's private view of the synthetic task. */
export function parseSyntheticData(spec: string | undefined): number {
  if (spec == null || spec === '' || spec === 'synthetic') return 0
  const m = /^synthetic:(\d{1,9})$/.exec(spec)
  if (m == null) throw new SwarmConfigError(`--data ${spec}: the synthetic trainer takes 'synthetic' or 'synthetic:<k>'`)
  return Number(m[1])
}

registerTrainerBackend('synthetic', async (o) => {
  if (o.initAdapter != null) throw new SwarmConfigError('--init-adapter is for the model trainer (a PEFT adapter of a Hugging Face checkpoint)')
  const dataSeed = parseSyntheticData(o.data)
  const built = syntheticSwarm({
    name: o.name ?? 'synthetic',
    strategy: o.strategy,
    round: o.round,
    contribution: o.contribution,
    seed: o.seed,
    layers: o.layers,
    hidden: o.hidden,
  })
  let config = built.config
  if (o.configFile != null) {
    config = await readSwarmConfig(o.configFile)
    if (config.genesisStateHash !== built.config.genesisStateHash) {
      throw new SwarmConfigError(
        `${o.configFile} describes another base model than the synthetic one built from --seed/--layers/--hidden (genesis ${config.genesisStateHash.slice(0, 12)} vs ${built.config.genesisStateHash.slice(0, 12)})`,
      )
    }
  }
  const samples = o.samples ?? 100 + 20 * (dataSeed % 5)
  return {
    config,
    weights: built.weights,
    samples,
    trainer: syntheticTrainer({ samples, dataSeed, steps: o.localSteps ?? 5, busyMs: o.trainBusyMs, delayMs: o.trainDelayMs }),
    evaluate: async (weights) => ({ loss: syntheticEvalLoss(weights, config.targets, config.seed) }),
    description: `synthetic task (share ${dataSeed}, ${samples} samples) on a ${config.targets.length}-module synthetic base`,
  }
})

registerTrainerBackend('model', async (o) => {
  const { setupModelPeer } = await import('./model-trainer.js')
  return setupModelPeer(o)
})
