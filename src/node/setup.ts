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
import { parseSwarmConfig, readSwarmConfig, SwarmConfigError } from './config.js'
import type { PeerSetup, SetupOptions, TrainerBackend } from './setup-types.js'
import { syntheticSwarm } from './synthetic.js'
import { syntheticEvalLoss, syntheticTrainer } from './trainer.js'

export type { EvalScore, PeerSetup, SetupOptions, TrainerBackend, TrainProgress } from './setup-types.js'
export { readSwarmConfig } from './config.js'

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
