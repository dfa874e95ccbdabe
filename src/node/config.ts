/**
 * The swarm config: everything peers must agree on before they can merge each other's
 * adapters. Its canonical JSON hashes to the swarm id; a peer whose id differs (other base
 * model, targets, strategy, round policy, ...) is refused at the handshake.
 *
 * What is deliberately *not* here: a peer's own rank, alpha, data, learning rate, local
 * steps and how many rounds it stays for. Those are the peer's business (FLoRA's point
 * is that ranks may differ).
 */
import { z } from 'zod'
import { canonicalJson, sha256Hex, type CanonicalValue } from '../gossip/canonical.js'
import type { ModuleShape, WireDType } from '../lora/types.js'

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
    maxPayloadBytes: init.maxPayloadBytes ?? 1024 * 1024 * 1024,
    seed: init.seed ?? 0,
    round: { ...DEFAULT_ROUND_POLICY, ...init.round },
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
  return r.data
}

/** sha256 of the config's canonical JSON. */
export function swarmIdOf(config: SwarmConfig): string {
  return sha256Hex(canonicalJson(config as unknown as CanonicalValue))
}
