/**
 * `flora-peer`: one peer of a flora swarm, from the command line.
 *
 * Prints its own multiaddrs on start (others bootstrap to them), human lines on a TTY and
 * JSON lines otherwise (stdout: events, stderr: logs), and shuts down cleanly on Ctrl-C.
 */
import { writeFile, mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { Command, InvalidArgumentError, Option } from 'commander'
import { swarmIdOf } from './config.js'
import { createLogger } from './logger.js'
import { createPeer } from './peer.js'
import { defaultTrainerBackend, setupPeer, trainerBackends, type EvalScore } from './setup.js'
import { setupPeerInWorker } from './worker-trainer.js'
import type { RoundCompleteDetail, RoundStalledDetail } from './engine.js'
import { lastRecordedRound } from './round-log.js'
import { exportFederatedModel } from './export.js'
import type { WireCounter } from './wire-metrics.js'
import { listStrategies } from '../aggregation/index.js'
import { MODEL_TRAINER_DEFAULTS } from './model-defaults.js'
import { BACKEND_CHOICES, type BackendPreference } from '../model/backend-names.js'
import { readSwarmKey, swarmKeyFingerprint } from './swarm-key.js'
import { VERSION } from '../version.js'
import { parseCommandLine } from '../exit-codes.js'
import { fraction, intAtLeast, positiveNumber } from '../cli-options.js'
import { Registry } from 'prom-client'
import {
  DEFAULT_METRICS_HOST,
  METRICS_ADDRESS_FORMAT,
  MetricsAddressError,
  PeerMetrics,
  parseMetricsAddress,
  startMetricsServer,
  type MetricsAddress,
  type MetricsServer,
} from './metrics.js'
import { startPeerHttpServer, type PeerHttpServer } from './http.js'
import { StatusTracker } from './status.js'

export interface PeerReport {
  peerId: string
  swarmId: string
  multiaddrs: string[]
  trainer: string
  rank: number
  alpha: number
  samples: number
  /**
   * evalLoss (evalAccuracy, evalExactMatch): held-out loss (token accuracy, model trainer; exact
   * match of whole answers, skills suite) of the agreed weights (null: not evaluated, e.g. interrupted).
   */
  genesis: { stateHash: string; evalLoss: number | null; evalAccuracy?: number | null; evalExactMatch?: number }
  rounds: Array<{
    round: number
    stateHash: string
    parentStateHash: string
    proposer: string
    contributors: readonly string[]
    evalLoss: number | null
    evalAccuracy?: number | null
    evalExactMatch?: number
    metrics: RoundCompleteDetail['metrics']
  }>
  /** Set when a round could not be certified in time (the peer then exits non-zero). */
  stalled: RoundStalledDetail | null
  rejected: Record<string, number>
  stats: { payloadBytesReceived: number; payloadBytesSent: number; gossipBytesReceived: number; wireBytesIn: number; wireBytesOut: number }
  finished: boolean
}




function weightCap(value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0 || n > 1) throw new InvalidArgumentError('--max-weight must be in (0, 1]')
  return n
}

/** `--metrics [HOST:]PORT`: commander's argument parser over parseMetricsAddress. */
export function metricsAddress(value: string): MetricsAddress {
  try {
    return parseMetricsAddress(value)
  } catch (err) {
    if (err instanceof MetricsAddressError) throw new InvalidArgumentError(`Expected ${METRICS_ADDRESS_FORMAT}: ${err.reason}`)
    throw err
  }
}

function list(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)]
}

export function buildProgram(): Command {
  const program = new Command('flora-peer')
  program
    .version(VERSION, '-V, --version', 'print the version and exit')
    .description(
      'Join a flora swarm: fine-tune the shared base model with a LoRA of your own rank on your own data, ' +
        'exchange adapters with the other peers over libp2p, and merge every round bit-identically (FLoRA stacking).',
    )
    .addOption(new Option('-b, --bootstrap <multiaddr>', 'address of a running peer, as it printed it (/ip4/.../tcp/.../p2p/<id>); repeatable or comma-separated').argParser(list).env('FLORA_BOOTSTRAP'))
    .addOption(new Option('-l, --listen <multiaddr>', 'address to listen on; repeatable').argParser(list).env('FLORA_LISTEN'))
    .addOption(new Option('--announce <multiaddr>', 'address to announce instead of the listen address (public IP, NAT); repeatable').argParser(list).env('FLORA_ANNOUNCE'))
    .addOption(new Option('-r, --rank <n>', 'LoRA rank of this peer').argParser(intAtLeast('--rank', 1)).default(8).env('FLORA_RANK'))
    .addOption(new Option('--alpha <x>', 'LoRA alpha (default: 2 x rank, as in the FLoRA paper)').argParser(positiveNumber('--alpha')).env('FLORA_ALPHA'))
    .addOption(
      new Option(
        '-d, --data <spec>',
        "training data (model trainer): 'wordnet' (bundled task, default), 'skills' (the skills suite, scored by held-out exact match), a JSONL file of Alpaca/Dolly records, " +
          "either with ':i/n' to keep shard i of n of a non-IID split by category (seeded by the swarm seed), or just 'i/n' for a WordNet shard; " +
          'synthetic trainer: synthetic[:k]',
      ).env('FLORA_DATA'),
    )
    .addOption(new Option('-m, --model <dir>', 'base model directory: config.json, model.safetensors, tokenizer.json (model trainer; default: the bundled models/flora-tiny)').env('FLORA_MODEL'))
    .addOption(new Option('-n, --rounds <n>', 'rounds to take part in, then leave (default: until stopped)').argParser(intAtLeast('--rounds', 1)).env('FLORA_ROUNDS'))
    .addOption(new Option('--local-steps <n>', `local training steps per round (default: model ${MODEL_TRAINER_DEFAULTS.localSteps}, synthetic 5)`).argParser(intAtLeast('--local-steps', 1)).env('FLORA_LOCAL_STEPS'))
    .addOption(new Option('--batch-size <n>', `model trainer: examples per step (default ${MODEL_TRAINER_DEFAULTS.batchSize})`).argParser(intAtLeast('--batch-size', 1)).env('FLORA_BATCH_SIZE'))
    .addOption(new Option('--lr <x>', `model trainer: AdamW learning rate (default ${MODEL_TRAINER_DEFAULTS.lr})`).argParser(positiveNumber('--lr')).env('FLORA_LR'))
    .addOption(new Option('--seq-len <n>', `model trainer: examples are cut to this many tokens (default ${MODEL_TRAINER_DEFAULTS.seqLen})`).argParser(intAtLeast('--seq-len', 4)).env('FLORA_SEQ_LEN'))
    .addOption(new Option('--lora-dropout <x>', `model trainer: LoRA dropout (default ${MODEL_TRAINER_DEFAULTS.loraDropout})`).argParser(fraction('--lora-dropout')).env('FLORA_LORA_DROPOUT'))
    .addOption(new Option('--eval-examples <n>', `model trainer: held-out examples evaluated before round 1 and after every round (default ${MODEL_TRAINER_DEFAULTS.evalExamples})`).argParser(intAtLeast('--eval-examples', 1)).env('FLORA_EVAL_EXAMPLES'))
    .addOption(new Option('--eval-data <spec>', "model trainer: held-out set, 'wordnet' (held-out synsets, default), 'skills' (the suite's held-out questions; the default with --data skills) or a JSONL file; use the same on every peer").env('FLORA_EVAL_DATA'))
    .addOption(new Option('--train-examples <n>', `model trainer: cap on the training pool before it is split into shards (WordNet default ${MODEL_TRAINER_DEFAULTS.wordnetTrainExamples})`).argParser(intAtLeast('--train-examples', 1)).env('FLORA_TRAIN_EXAMPLES'))
    .addOption(new Option('--targets <modules>', `model trainer: linear layers to adapt, comma-separated (swarm-wide; default ${MODEL_TRAINER_DEFAULTS.targets.join(',')})`).argParser(list).env('FLORA_TARGETS'))
    .addOption(new Option('--backend <name>', 'model trainer: tfjs backend').choices(BACKEND_CHOICES).default('auto').env('FLORA_BACKEND'))
    .addOption(new Option('-s, --strategy <name>', `aggregation strategy (swarm-wide): ${listStrategies().join(', ')}`).env('FLORA_STRATEGY'))
    .addOption(new Option('-c, --config <file>', 'swarm config JSON (as printed by --print-config); overrides the swarm flags').env('FLORA_CONFIG'))
    .addOption(new Option('--print-config', 'print the swarm config these options define, and exit'))
    .addOption(new Option('-t, --trainer <name>', `training backend: ${trainerBackends().join(', ')}`).default(defaultTrainerBackend()).env('FLORA_TRAINER'))
    .addOption(new Option('--name <name>', 'swarm name (part of the swarm id)').env('FLORA_SWARM_NAME'))
    .addOption(new Option('--min-peers <n>', 'members (this peer included) to wait for before round 1 (swarm-wide)').argParser(intAtLeast('--min-peers', 1)).env('FLORA_MIN_PEERS'))
    .addOption(new Option('--deadline <ms>', 'round deadline in ms after a peer starts the round (swarm-wide)').argParser(intAtLeast('--deadline', 100)).env('FLORA_DEADLINE_MS'))
    .addOption(new Option('--grace <ms>', 'extra wait per fallback proposer in ms (swarm-wide)').argParser(intAtLeast('--grace', 50)).env('FLORA_GRACE_MS'))
    .addOption(new Option('--quorum <rule>', 'votes a round needs: majority (> 1/2 of the recorded members; tolerates crashed, slow or cut-off members) or two-thirds (> 2/3; also tolerates a member that signs conflicting votes) (swarm-wide)').choices(['majority', 'two-thirds']).env('FLORA_QUORUM'))
    .addOption(new Option('--weighting <rule>', "contributors' weights p_k: by declared sample count, or equal (swarm-wide; default samples)").choices(['samples', 'equal']).env('FLORA_WEIGHTING'))
    .addOption(new Option('--max-weight <p>', 'cap on any contributor\'s weight p_k in a round, in (0, 1] (swarm-wide; default 0.5)').argParser(weightCap).env('FLORA_MAX_WEIGHT'))
    .addOption(new Option('--max-delta-ratio <x>', 'per module, one adapter\'s update ||s B A||_F is clipped to x times the module\'s ||W||_F (swarm-wide; default 0.5, synthetic 2)').argParser(positiveNumber('--max-delta-ratio')).env('FLORA_MAX_DELTA_RATIO'))
    .addOption(new Option('--stall-timeout <ms>', 'give up (exit 3) when a round is not certified this long after it started (default: deadline + 10 x grace)').argParser(intAtLeast('--stall-timeout', 1)).env('FLORA_STALL_MS'))
    .addOption(new Option('--seed <n>', 'swarm seed (swarm-wide)').argParser(intAtLeast('--seed', 0)).env('FLORA_SEED'))
    .addOption(new Option('--layers <n>', 'synthetic base: layers').argParser(intAtLeast('--layers', 1)).env('FLORA_SYNTHETIC_LAYERS'))
    .addOption(new Option('--hidden <n>', 'synthetic base: hidden size').argParser(intAtLeast('--hidden', 1)).env('FLORA_SYNTHETIC_HIDDEN'))
    .addOption(new Option('--train-busy-ms <ms>', 'synthetic trainer: block the training thread this long per round (simulates a slow, synchronous training step)').argParser(intAtLeast('--train-busy-ms', 0)).env('FLORA_TRAIN_BUSY_MS'))
    .addOption(new Option('--train-delay-ms <ms>', 'synthetic trainer: take this long per round without using the CPU (a peer training on its own machine)').argParser(intAtLeast('--train-delay-ms', 0)).env('FLORA_TRAIN_DELAY_MS'))
    .addOption(new Option('--in-thread', 'train on the main thread instead of a worker (networking then stalls while a step runs)').env('FLORA_IN_THREAD'))
    .addOption(new Option('--samples <n>', 'synthetic trainer: reported sample count').argParser(intAtLeast('--samples', 1)).env('FLORA_SAMPLES'))
    .addOption(new Option('-i, --identity <file>', 'key file that keeps this peer\'s id across restarts (created if missing)').default('.flora/peer.key').env('FLORA_IDENTITY'))
    .addOption(new Option('--mdns', 'also discover peers on the local network (mDNS)').env('FLORA_MDNS'))
    .addOption(new Option('--swarm-key <file>', 'private network: only connect to hosts holding this swarm key (libp2p pnet; create one with: flora swarm-key <file>)').env('FLORA_SWARM_KEY'))
    .addOption(new Option('--members <file>', "closed swarm: the member peer ids, one per line or a JSON array (see: flora id); everyone else is refused (swarm-wide: part of the swarm config)").env('FLORA_MEMBERS'))
    .addOption(new Option('--init-adapter <dir>', 'model trainer: start the federation from the base with this PEFT adapter merged in (e.g. one a past federation exported); every peer must pass the same').env('FLORA_INIT_ADAPTER'))
    .addOption(new Option('--state-dir <dir>', 'persistent peer state (head snapshots, certified records, recent payloads); a restarted peer resumes from it (default: next to the identity file, <identity>.state)').env('FLORA_STATE_DIR'))
    .addOption(new Option('--no-state', 'keep no state on disk (a restarted peer catches up from the swarm from round 0)'))
    .addOption(new Option('-o, --out <dir>', 'after every committed round, write the agreed model there: model/ (Hugging Face model dir, or the target weights) and adapter/ (the cumulative update since genesis as a PEFT adapter)').env('FLORA_OUT'))
    .addOption(new Option('--records <file>', 'append every committed round record (manifest chain) to this JSON-lines file').env('FLORA_RECORDS'))
    .addOption(new Option('--report <file>', 'write a JSON summary of this peer\'s run here on exit').env('FLORA_REPORT'))
    .addOption(new Option('--linger <ms>', 'after the last round, keep serving payloads this long for slower peers (default: min(grace, 3000), then as long as members still run rounds, up to the stall timeout)').argParser(intAtLeast('--linger', 0)).env('FLORA_LINGER_MS'))
    .addOption(new Option('--merge-workers <n>', 'merge worker threads (0: main thread)').argParser(intAtLeast('--merge-workers', 0)).default(0).env('FLORA_MERGE_WORKERS'))
    .addOption(new Option('--http <[host:]port>', `serve a live status page at http://HOST:PORT/ (members, round and phase, hash agreement, loss per round, rejections), its data at /status.json and the Prometheus metrics at /metrics (host default ${DEFAULT_METRICS_HOST}; port 0: any free port)`).argParser(metricsAddress).env('FLORA_HTTP'))
    .addOption(new Option('--metrics <[host:]port>', `serve Prometheus metrics at http://HOST:PORT/metrics (host default ${DEFAULT_METRICS_HOST}; port 0: any free port; see docs/METRICS.md)`).argParser(metricsAddress).env('FLORA_METRICS'))
    .addOption(new Option('--log-level <level>', 'trace, debug, info, warn, error, silent').default('info').env('FLORA_LOG_LEVEL'))
    .addOption(new Option('--json', 'JSON lines even on a TTY').env('FLORA_JSON'))
    .addHelpText(
      'after',
      `
Every option has an environment variable (shown above); flags win over the environment.
Peers with a different swarm config (base model, targets, strategy, round policy, name)
are refused with a log line naming the differing fields.

The default trainer ('model') fine-tunes the bundled base model (models/flora-tiny) on
the bundled WordNet definition task; every peer evaluates the agreed weights on the same
held-out examples before round 1 and after every round.

Examples:
  # first peer: WordNet shard 0 of 2; note the /p2p/ address it prints
  flora-peer --rank 16 --data 0/2 --rounds 3 --listen /ip4/0.0.0.0/tcp/4001

  # another peer, on another machine, joining through the first one
  flora-peer --rank 8 --data 1/2 --rounds 3 \\
    --bootstrap /ip4/192.168.1.10/tcp/4001/p2p/12D3KooW...

  # your own instruction data (Alpaca/Dolly JSONL), shard 2 of 4
  flora-peer --rank 4 --data mydata.jsonl:2/4 --bootstrap ...

  # the synthetic task (no tfjs; tests and benchmarks)
  flora-peer --trainer synthetic --rank 4 --data synthetic:1 --rounds 5 --bootstrap ...

  # share one swarm config file instead of repeating the swarm flags
  flora-peer --print-config > swarm.json
  flora-peer --config swarm.json --rank 16 --bootstrap ...

  # a closed federation: a shared network key and a member list (see README)
  flora swarm-key swarm.key          # once; give it to every member securely
  flora id                           # each member: prints the id to put in members.txt
  flora-peer --swarm-key swarm.key --members members.txt --rank 8 --bootstrap ...
`,
    )
  return program
}

interface CliOptions {
  bootstrap?: string[]
  listen?: string[]
  announce?: string[]
  rank: number
  alpha?: number
  data?: string
  model?: string
  rounds?: number
  localSteps?: number
  batchSize?: number
  lr?: number
  seqLen?: number
  loraDropout?: number
  evalExamples?: number
  evalData?: string
  trainExamples?: number
  targets?: string[]
  backend: BackendPreference
  strategy?: string
  config?: string
  printConfig?: boolean
  trainer: string
  name?: string
  minPeers?: number
  deadline?: number
  grace?: number
  quorum?: 'majority' | 'two-thirds'
  weighting?: 'samples' | 'equal'
  maxWeight?: number
  maxDeltaRatio?: number
  stallTimeout?: number
  seed?: number
  layers?: number
  hidden?: number
  samples?: number
  trainBusyMs?: number
  trainDelayMs?: number
  inThread?: boolean
  identity: string
  mdns?: boolean
  swarmKey?: string
  members?: string
  records?: string
  stateDir?: string
  initAdapter?: string
  state: boolean
  out?: string
  report?: string
  linger?: number
  mergeWorkers: number
  metrics?: MetricsAddress
  http?: MetricsAddress
  logLevel: string
  json?: boolean
}

/** A report's eval fields from an evaluation (accuracy only where the trainer measures it). */
function scoreFields(score: EvalScore | null): { evalLoss: number | null; evalAccuracy?: number | null; evalExactMatch?: number } {
  if (score == null) return { evalLoss: null }
  return {
    evalLoss: score.loss,
    ...(score.accuracy !== undefined ? { evalAccuracy: score.accuracy } : {}),
    ...(score.exactMatch !== undefined ? { evalExactMatch: score.exactMatch } : {}),
  }
}

/** Runs the CLI; resolves with the process exit code. */
export async function main(argv: readonly string[] = process.argv): Promise<number> {
  const program = buildProgram()
  const parsed = parseCommandLine(program, argv)
  if (parsed !== undefined) return parsed
  const o = program.opts<CliOptions>()
  const human = o.json !== true && process.stdout.isTTY === true
  const log = createLogger({ level: o.logLevel, human: o.json !== true && process.stderr.isTTY === true })
  const emit = (event: string, data: Record<string, unknown>, line: string): void => {
    process.stdout.write(human ? `${line}\n` : `${JSON.stringify({ event, time: new Date().toISOString(), ...data })}\n`)
  }

  const alpha = o.alpha ?? 2 * o.rank
  // Read first: a bad key file fails before a model is loaded.
  const swarmKey = o.swarmKey != null && o.printConfig !== true ? await readSwarmKey(o.swarmKey) : undefined
  // Training and evaluation run in a worker thread, so the peer keeps answering pings,
  // gossip, payload requests and votes however long a step takes (--in-thread: not).
  // The synthetic trainer's steps take microseconds: it runs in-thread unless it is told to
  // block (--train-busy-ms), which spares large local swarms a second module graph per peer.
  const inThread = o.inThread === true || (o.trainer === 'synthetic' && (o.trainBusyMs ?? 0) === 0)
  const setup = await (o.printConfig === true || inThread ? setupPeer : setupPeerInWorker)({
    trainer: o.trainer,
    configFile: o.config,
    ...(o.members != null ? { membersFile: o.members } : {}),
    name: o.name,
    strategy: o.strategy,
    round: {
      ...(o.minPeers != null ? { minPeers: o.minPeers } : {}),
      ...(o.deadline != null ? { deadlineMs: o.deadline } : {}),
      ...(o.grace != null ? { graceMs: o.grace } : {}),
      ...(o.quorum != null ? { quorum: o.quorum } : {}),
    },
    contribution: {
      ...(o.weighting != null ? { weighting: o.weighting } : {}),
      ...(o.maxWeight != null ? { maxWeight: o.maxWeight } : {}),
      ...(o.maxDeltaRatio != null ? { maxDeltaRatio: o.maxDeltaRatio } : {}),
    },
    rank: o.rank,
    alpha,
    ...(o.initAdapter != null ? { initAdapter: o.initAdapter } : {}),
    data: o.data,
    model: o.model,
    localSteps: o.localSteps,
    samples: o.samples,
    seed: o.seed,
    layers: o.layers,
    hidden: o.hidden,
    batchSize: o.batchSize,
    lr: o.lr,
    seqLen: o.seqLen,
    loraDropout: o.loraDropout,
    evalExamples: o.evalExamples,
    evalData: o.evalData,
    trainExamples: o.trainExamples,
    targets: o.targets,
    backend: o.backend,
    configOnly: o.printConfig === true,
    trainBusyMs: o.trainBusyMs,
    trainDelayMs: o.trainDelayMs,
    onTrainStep: (p) => {
      // JSON: every step (the swarm script shows them); human: about five lines a round.
      const every = Math.max(1, Math.round(p.steps / 5))
      if (!human || p.step % every === 0 || p.step === p.steps) {
        emit('train:step', { ...p }, `  round ${p.round} training  step ${p.step}/${p.steps}  loss ${p.loss.toFixed(4)}  ${(p.elapsedMs / 1000).toFixed(1)} s`)
      }
    },
  })
  if (o.printConfig === true) {
    process.stdout.write(`${JSON.stringify(setup.config, null, 2)}\n`)
    return 0
  }
  if (o.strategy != null && o.config != null && o.strategy !== setup.config.strategy) {
    log.error({ flag: o.strategy, config: setup.config.strategy }, '--strategy differs from the strategy in --config')
    return 2
  }

  if (swarmKey != null) log.info({ swarmKey: o.swarmKey, fingerprint: swarmKeyFingerprint(swarmKey) }, 'private network: only hosts with this swarm key can connect')

  const stop = new AbortController()
  let interrupted = false
  const onSignal = (sig: string): void => {
    if (stop.signal.aborted) {
      log.warn({ signal: sig }, 'second signal: exiting now')
      process.exit(130)
    }
    interrupted = true
    log.info({ signal: sig }, 'shutting down (press Ctrl-C again to force)')
    stop.abort(new Error(sig))
  }
  process.on('SIGINT', () => onSignal('SIGINT'))
  process.on('SIGTERM', () => onSignal('SIGTERM'))

  /** Held-out loss (and accuracy) of agreed weights; null when interrupted (or failed: logged). */
  const evaluate = (weights: ReadonlyMap<string, Float32Array>): Promise<EvalScore | null> =>
    setup.evaluate(weights, stop.signal).catch((err: Error) => {
      if (!stop.signal.aborted) log.error({ err: err.message }, 'evaluation failed')
      return null
    })

  const wire: WireCounter = { bytesIn: 0, bytesOut: 0 }
  const stateDir = o.state === false ? undefined : (o.stateDir ?? defaultStateDir(o.identity))
  // flora's and libp2p's metrics on one registry (--metrics, and /metrics of --http).
  const registry = o.metrics != null || o.http != null ? new Registry() : undefined
  const peer = await createPeer({
    config: setup.config,
    weights: setup.weights,
    rank: o.rank,
    alpha,
    trainer: setup.trainer,
    rounds: o.rounds,
    logger: log,
    identityFile: o.identity,
    listen: o.listen ?? ['/ip4/0.0.0.0/tcp/0'],
    announce: o.announce,
    bootstrap: o.bootstrap,
    mdns: o.mdns,
    recordsFile: o.records,
    stateDir,
    // Without a state dir, a records file still tells a restarted peer not to found a new chain.
    priorHead: stateDir == null && o.records != null ? await lastRecordedRound(o.records) : undefined,
    stallMs: o.stallTimeout,
    mergeWorkers: o.mergeWorkers,
    wireCounter: wire,
    metrics: registry,
    swarmKey,
  })
  const members = setup.config.members
  if (members != null && !members.includes(peer.peerId)) {
    log.error({ peerId: peer.peerId, identity: o.identity, members: members.length }, "this peer's id is not in the swarm's members: the others would refuse it")
    await peer.stop()
    await setup.close?.()
    return 2
  }
  const peerMetrics = registry != null ? new PeerMetrics(registry, peer) : undefined
  let metricsServer: MetricsServer | undefined
  if (o.metrics != null && registry != null) {
    try {
      metricsServer = await startMetricsServer({ ...o.metrics, registry })
    } catch (err) {
      log.error({ host: o.metrics.host, port: o.metrics.port, err: (err as Error).message }, 'could not start the metrics server (--metrics)')
      await peer.stop()
      await setup.close?.()
      return 1
    }
    log.info({ url: metricsServer.url }, `metrics on ${metricsServer.url}`)
  }
  const status = o.http != null ? new StatusTracker(peer, { rank: o.rank, rounds: o.rounds }) : undefined
  let httpServer: PeerHttpServer | undefined
  if (o.http != null) {
    try {
      httpServer = await startPeerHttpServer({ ...o.http, registry, status })
    } catch (err) {
      log.error({ host: o.http.host, port: o.http.port, err: (err as Error).message }, 'could not start the status server (--http)')
      await metricsServer?.close()
      await peer.stop()
      await setup.close?.()
      return 1
    }
    log.info({ url: `${httpServer.url}/` }, `status page on ${httpServer.url}/`)
  }
  const stopMetrics = async (): Promise<void> => {
    peerMetrics?.close()
    status?.close()
    await metricsServer?.close()
    await httpServer?.close()
  }

  const report: PeerReport = {
    peerId: peer.peerId,
    swarmId: swarmIdOf(setup.config),
    multiaddrs: [],
    trainer: o.trainer,
    rank: o.rank,
    alpha,
    samples: setup.samples,
    genesis: { stateHash: setup.config.genesisStateHash, ...scoreFields(await evaluate(peer.head.weights)) },
    rounds: [],
    stalled: null,
    rejected: {},
    stats: { payloadBytesReceived: 0, payloadBytesSent: 0, gossipBytesReceived: 0, wireBytesIn: 0, wireBytesOut: 0 },
    finished: false,
  }
  if (report.genesis.evalLoss != null) {
    peerMetrics?.recordEval(0, report.genesis.evalLoss, report.genesis.evalAccuracy ?? undefined)
    status?.recordEval(0, report.genesis.evalLoss, report.genesis.evalAccuracy ?? undefined)
  }
  const pending: Promise<void>[] = []
  const exporter = o.out != null ? new ModelExporter(peer, o.out, setup.baseModelDir, log) : undefined
  peer.addEventListener('round:complete', (e) => {
    const d = e.detail
    const weights = peer.head.weights
    // Rounds caught up in a batch: evaluate (and export) the newest only.
    const latest = d.round === peer.head.round
    if (latest) exporter?.schedule()
    pending.push(
      (latest ? evaluate(weights) : Promise.resolve(null)).then((score) => {
        const { evalLoss, evalAccuracy, evalExactMatch } = scoreFields(score)
        const scores = { evalLoss, ...(evalAccuracy !== undefined ? { evalAccuracy } : {}), ...(evalExactMatch !== undefined ? { evalExactMatch } : {}) }
        if (evalLoss != null) {
          peerMetrics?.recordEval(d.round, evalLoss, evalAccuracy ?? undefined)
          status?.recordEval(d.round, evalLoss, evalAccuracy ?? undefined)
        }
        report.rounds.push({ ...d, ...scores })
        const train = d.metrics.train?.loss
        emit(
          'round:complete',
          { ...d, ...scores },
          `round ${d.round}${o.rounds != null ? `/${o.rounds}` : ''} complete  state ${d.stateHash.slice(0, 16)}  ${d.contributors.length} contributor${d.contributors.length === 1 ? '' : 's'}  ` +
            `eval loss ${evalLoss?.toFixed(4) ?? '-'}${evalAccuracy != null ? `  accuracy ${evalAccuracy.toFixed(4)}` : ''}${evalExactMatch != null ? `  exact match ${(100 * evalExactMatch).toFixed(1)}%` : ''}${train != null ? `  (local train loss ${train.toFixed(4)})` : ''}  ${(d.metrics.roundMs / 1000).toFixed(1)} s`,
        )
      }),
    )
  })
  const stalled = new Promise<RoundStalledDetail>((resolve) => {
    peer.addEventListener('round:stalled', (e) => {
      report.stalled = e.detail
      emit('round:stalled', { ...e.detail }, `round ${e.detail.round} stalled after ${(e.detail.waitedMs / 1000).toFixed(1)} s: ${e.detail.reason}`)
      resolve(e.detail)
    })
  })
  peer.addEventListener('peer:rejected', (e) => {
    report.rejected[e.detail.reason] = (report.rejected[e.detail.reason] ?? 0) + 1
    emit('peer:rejected', { ...e.detail }, `rejected ${e.detail.peerId}: ${e.detail.reason} (${e.detail.detail})`)
  })
  peer.addEventListener('bootstrap:unreachable', (e) => {
    const d = e.detail
    emit('bootstrap:unreachable', { ...d }, `bootstrap ${d.addr} unreachable (attempt ${d.attempts}: ${d.error}); retrying in ${Math.round(d.retryInMs / 1000)} s`)
  })
  peer.addEventListener('member:join', (e) => emit('member:join', { ...e.detail }, `member joined: ${e.detail.peerId}`))
  peer.addEventListener('member:leave', (e) => emit('member:leave', { ...e.detail }, `member left: ${e.detail.peerId}`))

  try {
    await peer.start()
  } catch (err) {
    log.error({ err: (err as Error).message }, 'could not start the peer')
    await stopMetrics()
    return 1
  }
  report.multiaddrs = peer.multiaddrs()
  log.info({ trainer: o.trainer, setup: setup.description }, 'training backend')
  emit(
    'listening',
    { peerId: peer.peerId, swarmId: report.swarmId, multiaddrs: report.multiaddrs, rank: o.rank, alpha, ...(metricsServer != null ? { metrics: metricsServer.url } : {}), ...(httpServer != null ? { status: `${httpServer.url}/` } : {}) },
    `flora-peer ${peer.peerId}\nswarm ${report.swarmId}\nlistening on (bootstrap other peers to one of these):\n${report.multiaddrs.map((a) => `  ${a}`).join('\n')}` +
      (metricsServer != null ? `\nmetrics on ${metricsServer.url}` : '') +
      (httpServer != null ? `\nstatus page on ${httpServer.url}/` : ''),
  )

  const aborted = new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }))
  await Promise.race([peer.whenDone(), aborted, stalled])
  report.finished = o.rounds != null && peer.head.round >= o.rounds
  if (report.finished && !stop.signal.aborted) {
    const linger = o.linger ?? Math.min(setup.config.round.graceMs, 3000)
    log.info({ lingerMs: linger }, 'all rounds done; serving payloads a little longer for slower peers')
    await Promise.race([new Promise((resolve) => setTimeout(resolve, linger).unref()), aborted])
    // Members still in their rounds (slow, or catching up) may need our chain and payloads:
    // stay while any is, up to the stall timeout, unless --linger was given.
    const lingerMax = o.stallTimeout ?? setup.config.round.deadlineMs + 10 * setup.config.round.graceMs
    const until = Date.now() + lingerMax
    if (o.linger == null && !stop.signal.aborted && peer.service.runningMembers().length > 0) {
      log.info({ running: peer.service.runningMembers().length, maxMs: lingerMax }, 'members are still running rounds: serving them until they finish')
      while (!stop.signal.aborted && peer.service.runningMembers().length > 0 && Date.now() < until) {
        await Promise.race([new Promise((resolve) => setTimeout(resolve, 500).unref()), aborted])
      }
    }
  }
  // Stop first: an interrupted peer's training is aborted rather than waited for.
  await peer.stop()
  await stopMetrics()
  await Promise.all(pending)
  await exporter?.idle()
  await setup.close?.()
  const stats = peer.stats()
  report.stats = { ...stats, wireBytesIn: wire.bytesIn, wireBytesOut: wire.bytesOut }
  const last = report.rounds.at(-1)
  const l0 = report.genesis.evalLoss
  const evalLine = l0 != null && last?.evalLoss != null ? `; eval loss ${l0.toFixed(4)} (round 0) -> ${last.evalLoss.toFixed(4)}` : ''
  emit(
    'done',
    { round: last?.round ?? 0, stateHash: last?.stateHash ?? report.genesis.stateHash, finished: report.finished, evalLoss: last?.evalLoss ?? l0, stats: report.stats },
    `done after ${report.rounds.length} round(s); state ${(last?.stateHash ?? report.genesis.stateHash).slice(0, 16)}${evalLine}; received ${stats.payloadBytesReceived} payload bytes, sent ${stats.payloadBytesSent}`,
  )
  if (o.report != null) {
    await mkdir(dirname(o.report), { recursive: true })
    await writeFile(o.report, `${JSON.stringify(report, null, 2)}\n`)
  }
  if (interrupted) return 130
  if (o.rounds != null && !report.finished) {
    const why = report.stalled != null ? report.stalled.reason : 'the peer stopped before its rounds were certified'
    log.error({ round: peer.head.round, rounds: o.rounds }, `left the swarm without the certified chain: ${why}`)
    return 3
  }
  return 0
}

/** The default state dir: next to the identity file (`.flora/peer.key` -> `.flora/peer.state`). */
export function defaultStateDir(identity: string): string {
  return identity.replace(/\.key$/, '') + '.state'
}

/**
 * Writes the agreed model after committed rounds, one export at a time; rounds that
 * commit while one is written are folded into the next (the newest head wins).
 */
class ModelExporter {
  #running: Promise<void> | undefined
  #again = false

  constructor(
    private readonly peer: Awaited<ReturnType<typeof createPeer>>,
    private readonly out: string,
    private readonly baseModelDir: string | undefined,
    private readonly log: ReturnType<typeof createLogger>,
  ) {}

  schedule(): void {
    if (this.#running != null) {
      this.#again = true
      return
    }
    this.#running = this.#run().finally(() => {
      this.#running = undefined
      if (this.#again) {
        this.#again = false
        this.schedule()
      }
    })
  }

  async idle(): Promise<void> {
    while (this.#running != null) await this.#running
  }

  async #run(): Promise<void> {
    const head = this.peer.head
    const update = this.peer.service.engine.cumulativeUpdate
    try {
      const t0 = performance.now()
      await exportFederatedModel(this.out, {
        round: head.round,
        stateHash: head.hash,
        swarmId: this.peer.swarmId,
        strategy: this.peer.service.config.strategy,
        weights: head.weights,
        shapes: this.peer.service.config.targets,
        update: update != null && update.round === head.round ? update : undefined,
        global: head.global,
        baseModelDir: this.baseModelDir,
      })
      this.log.info({ round: head.round, out: this.out, ms: Math.round(performance.now() - t0) }, 'exported the agreed model')
    } catch (err) {
      this.log.error({ round: head.round, out: this.out, err: (err as Error).message }, 'export failed')
    }
  }
}
