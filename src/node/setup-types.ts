/**
 * The types of the seam between the peer and a training backend (setup.ts): what a backend
 * is given (SetupOptions) and what it returns (PeerSetup). Apart from setup.ts so that the
 * backends it loads (model-trainer.ts) depend on this file and not on their loader.
 */
import type { ContributionPolicy, RoundPolicy, SwarmConfig } from './config.js'
import type { Trainer } from './trainer.js'
import type { BackendPreference } from '../model/backend-names.js'

/** A held-out evaluation of a state's weights. */
export interface EvalScore {
  /** Mean loss (lower is better): target-token cross-entropy (model trainer), squared error (synthetic). */
  readonly loss: number
  /** Share of target tokens predicted right by greedy decoding (model trainer only). */
  readonly accuracy?: number
  /** Share of held-out questions whose whole greedy answer is right (the skills suite only). */
  readonly exactMatch?: number
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
  /** tfjs backend preference: auto, tensorflow-gpu, webgpu, tensorflow, wasm, cpu. */
  backend?: BackendPreference
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
