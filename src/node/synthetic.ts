/**
 * A synthetic base model: small named Float32Array weights drawn from a seed, shaped like
 * a Llama's q_proj / v_proj. With the synthetic trainer it exercises the whole network and
 * round protocol without tfjs (tests, benchmarks, `--trainer synthetic`).
 */
import { canonicalJson, sha256Hex } from '../gossip/canonical.js'
import { createPrng } from '../lora/prng.js'
import type { ModuleShape } from '../lora/types.js'
import { makeSwarmConfig, type ContributionPolicy, type RoundPolicy, type SwarmConfig } from './config.js'
import { genesisState } from './state.js'

export interface SyntheticModelSpec {
  /** Transformer layers (default 2). */
  layers?: number
  /** Hidden size: q_proj and v_proj are [hidden, hidden] (default 64). */
  hidden?: number
  /** Module suffixes per layer (default q_proj, v_proj). */
  targets?: readonly string[]
  seed?: number
}

export function syntheticShapes(spec: SyntheticModelSpec = {}): ModuleShape[] {
  const layers = spec.layers ?? 2
  const hidden = spec.hidden ?? 64
  const targets = spec.targets ?? ['q_proj', 'v_proj']
  const out: ModuleShape[] = []
  for (let l = 0; l < layers; l++) {
    for (const t of targets) out.push({ name: `model.layers.${l}.self_attn.${t}`, inFeatures: hidden, outFeatures: hidden })
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : 1))
}

export function syntheticWeights(shapes: readonly ModuleShape[], seed = 0): Map<string, Float32Array> {
  const prng = createPrng(seed).fork('synthetic.base')
  const weights = new Map<string, Float32Array>()
  for (const s of shapes) {
    const w = new Float32Array(s.inFeatures * s.outFeatures)
    prng.fork(s.name).fillUniform(w, -0.05, 0.05)
    weights.set(s.name, w)
  }
  return weights
}

export interface SyntheticSwarmOptions extends SyntheticModelSpec {
  name?: string
  strategy?: string
  round?: Partial<RoundPolicy>
  /** Contribution bounds (default: the swarm defaults, but maxDeltaRatio 2: the synthetic trainer's toy steps move a module by up to ~90% of its norm). */
  contribution?: Partial<ContributionPolicy>
  /** A closed swarm's member ids. */
  members?: readonly string[]
  maxRank?: number
  maxPayloadBytes?: number
}

/** The synthetic swarm's default per-module norm bound (its trainer takes large toy steps). */
export const SYNTHETIC_MAX_DELTA_RATIO = 2

/** A swarm config over a synthetic base, and that base's weights. */
export function syntheticSwarm(options: SyntheticSwarmOptions = {}): { config: SwarmConfig; weights: Map<string, Float32Array> } {
  const shapes = syntheticShapes(options)
  const seed = options.seed ?? 0
  const weights = syntheticWeights(shapes, seed)
  const genesis = genesisState(weights, shapes)
  const config = makeSwarmConfig({
    name: options.name ?? 'synthetic',
    baseModelHash: sha256Hex(canonicalJson({ synthetic: 1, seed, shapes: shapes.map((s) => [s.name, s.outFeatures, s.inFeatures]) })),
    genesisStateHash: genesis.hash,
    targets: shapes,
    strategy: options.strategy ?? 'flora',
    seed,
    maxRank: options.maxRank,
    maxPayloadBytes: options.maxPayloadBytes,
    round: options.round,
    contribution: { maxDeltaRatio: SYNTHETIC_MAX_DELTA_RATIO, ...options.contribution },
    ...(options.members != null ? { members: options.members } : {}),
  })
  return { config, weights }
}
