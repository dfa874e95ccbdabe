/**
 * The swarm config: everything peers must agree on before they can merge each other's
 * adapters. Its canonical JSON hashes to the swarm id; a peer whose id differs (other base
 * model, targets, strategy, round policy, ...) is refused at the handshake.
 *
 * What is deliberately *not* here: a peer's own rank, alpha, data, learning rate, local
 * steps and how many rounds it stays for. Those are the peer's business (FLoRA's point
 * is that ranks may differ).
 */
import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { canonicalJson, sha256Hex, type CanonicalValue } from '../gossip/canonical.js'
import type { ModuleShape, WireDType } from '../lora/types.js'
import { maxEncodedAdapterSize } from '../lora/wire.js'

export const RoundPolicySchema = z.strictObject({
  /** Time from a peer's local round start until the first proposer closes the round anyway. */
  deadlineMs: z.number().int().min(100).max(7 * 24 * 3600 * 1000),
  /** Extra wait per fallback proposer: proposer k publishes at deadline + k * grace. */
  graceMs: z.number().int().min(50).max(24 * 3600 * 1000),
  /** Members (self included) a peer waits for before its first round; also the founding quorum's floor. */
  minPeers: z.number().int().min(1).max(10_000),
  /** Votes a round's certificate needs: more than half ('majority') or two thirds ('two-thirds') of the recorded members. */
  quorum: z.enum(['majority', 'two-thirds']),
})
export type RoundPolicy = z.infer<typeof RoundPolicySchema>

/**
 * Bounds on what one member can do to a round (see docs/FEDERATION.md, "Hostile members").
 * Applied deterministically by every peer to every manifest it replays, so they are part
 * of the state transition (and of the swarm id).
 */
export const ContributionPolicySchema = z.strictObject({
  /** How a contributor's weight p_k is set: by its declared sample count, or equal for all. */
  weighting: z.enum(['samples', 'equal']),
  /** Cap on any contributor's p_k (water-filled: the excess goes to the others); 1 = no cap. */
  maxWeight: z.number().gt(0).max(1),
  /**
   * Per module and contributor, ||s_k B_k A_k||_F is clipped to maxDeltaRatio x ||W||_F of
   * the round's parent weight (B_k scaled down): no single adapter moves a module by more.
   */
  maxDeltaRatio: z.number().gt(0).max(1e6),
})
export type ContributionPolicy = z.infer<typeof ContributionPolicySchema>

/**
 * Defaults measured on the bundled model: one round of local training moves a module by
 * 3-6% of its norm at rank 4-16 and up to 21% at rank 64 (docs/FEDERATION.md), so 0.5
 * leaves honest peers unclipped while a poisoned adapter moves a module by at most half its
 * norm x its capped weight (0.5): 25% per round, instead of to infinity.
 */
export const DEFAULT_CONTRIBUTION_POLICY: ContributionPolicy = { weighting: 'samples', maxWeight: 0.5, maxDeltaRatio: 0.5 }

// libp2p peer ids in their default base58btc text form.
const peerIdText = z.string().min(32).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/, 'expected a base58btc peer id')

const ModuleShapeSchema = z.strictObject({
  name: z.string().min(1).max(256),
  inFeatures: z.number().int().min(1).max(2 ** 24),
  outFeatures: z.number().int().min(1).max(2 ** 24),
})

export const SwarmConfigSchema = z.strictObject({
  version: z.literal(1),
  /** Human label; part of the id, so two swarms on one LAN can share a base model. */
  name: z.string().max(128),
  /** Identity of the full base model (e.g. a hash of its checkpoint); see docs/FEDERATION.md. */
  baseModelHash: z.string().regex(/^[0-9a-f]{64}$/),
  /** State hash of the target weights at round 0: the root of the manifest chain. */
  genesisStateHash: z.string().regex(/^[0-9a-f]{64}$/),
  /** The adapted modules with their shapes, sorted by name. */
  targets: z.array(ModuleShapeSchema).min(1).max(100_000),
  strategy: z.string().min(1).max(64),
  rslora: z.boolean(),
  wireDType: z.enum(['f32', 'f16', 'bf16']),
  maxRank: z.number().int().min(1).max(65_536),
  maxPayloadBytes: z.number().int().min(1024).max(2 ** 40),
  /** Root of every peer's per-round training seed. */
  seed: z.number().int().min(0).max(2 ** 32 - 1),
  round: RoundPolicySchema,
  contribution: ContributionPolicySchema,
  /** A closed swarm: only these peer ids (sorted, unique) are members; absent = anyone may join. */
  members: z.array(peerIdText).min(1).max(10_000).optional(),
})
export type SwarmConfig = z.infer<typeof SwarmConfigSchema>

export const DEFAULT_ROUND_POLICY: RoundPolicy = { deadlineMs: 120_000, graceMs: 15_000, minPeers: 2, quorum: 'majority' }

export interface SwarmConfigInit {
  name?: string
  baseModelHash: string
  genesisStateHash: string
  targets: readonly ModuleShape[]
  strategy?: string
  rslora?: boolean
  wireDType?: WireDType
  maxRank?: number
  maxPayloadBytes?: number
  seed?: number
  round?: Partial<RoundPolicy>
  contribution?: Partial<ContributionPolicy>
  /** Peer ids allowed to join (a closed swarm); omit for an open one. */
  members?: readonly string[]
}

/** A validated config with defaults filled in and targets in canonical order. */
export function makeSwarmConfig(init: SwarmConfigInit): SwarmConfig {
  return parseSwarmConfig({
    version: 1,
    name: init.name ?? 'flora',
    baseModelHash: init.baseModelHash,
    genesisStateHash: init.genesisStateHash,
    targets: [...init.targets]
      .map((t) => ({ name: t.name, inFeatures: t.inFeatures, outFeatures: t.outFeatures }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    strategy: init.strategy ?? 'flora',
    rslora: init.rslora ?? false,
    wireDType: init.wireDType ?? 'f32',
    maxRank: init.maxRank ?? 256,
    maxPayloadBytes: init.maxPayloadBytes ?? Math.max(1024, maxEncodedAdapterSize(init.targets, init.maxRank ?? 256, init.wireDType ?? 'f32')),
    seed: init.seed ?? 0,
    round: { ...DEFAULT_ROUND_POLICY, ...init.round },
    contribution: { ...DEFAULT_CONTRIBUTION_POLICY, ...init.contribution },
    ...(init.members != null ? { members: [...new Set(init.members)].sort() } : {}),
  })
}

export class SwarmConfigError extends Error {
  override readonly name = 'SwarmConfigError'
}

/** Parses untrusted config JSON (a file, a CLI flag). */
export function parseSwarmConfig(json: unknown): SwarmConfig {
  const r = SwarmConfigSchema.safeParse(json)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new SwarmConfigError(`invalid swarm config at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`)
  }
  const names = r.data.targets.map((t) => t.name)
  for (let i = 1; i < names.length; i++) {
    if (!(names[i - 1] < names[i])) throw new SwarmConfigError(`targets must be sorted by name and unique (at ${names[i]})`)
  }
  const members = r.data.members ?? []
  for (let i = 1; i < members.length; i++) {
    if (!(members[i - 1] < members[i])) throw new SwarmConfigError(`members must be sorted and unique (at ${members[i]})`)
  }
  return r.data
}

/**
 * The largest payload (encoded adapter) this swarm accepts: the config's maxPayloadBytes,
 * or less when no adapter of the swarm's targets at maxRank could be that large.
 */
export function payloadCap(config: SwarmConfig): number {
  return Math.min(config.maxPayloadBytes, maxEncodedAdapterSize(config.targets, config.maxRank, config.wireDType))
}

/** sha256 of the config's canonical JSON. */
export function swarmIdOf(config: SwarmConfig): string {
  return sha256Hex(canonicalJson(config as unknown as CanonicalValue))
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
