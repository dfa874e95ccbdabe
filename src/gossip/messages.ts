/**
 * Gossip message schemas (zod) and their typed forms.
 *
 * Two messages travel over gossipsub, both small and signed by their author's libp2p key:
 * - an announcement: "my adapter for round r, built on parent state h, is the payload
 *   with sha256 X and N bytes; rank, alpha and sample count are ..."
 * - a round manifest: "round r on parent h includes exactly these entries, sorted by
 *   peer id, and applying them gives state hash h'".
 * Each manifest entry carries the author's own announcement signature, so a manifest is
 * self-verifying: a peer that never saw an announcement (or replays the chain later, for
 * state sync) can still check every adapter in it was signed by its author.
 */
import { z } from 'zod'

export const ANNOUNCE_DOMAIN = 'flora:announce:v1\n'
export const MANIFEST_DOMAIN = 'flora:manifest:v2\n'
export const VOTE_DOMAIN = 'flora:vote:v1\n'

/** Structural caps, independent of the swarm config (which adds tighter ones). */
export const MAX_MANIFEST_ENTRIES = 4096
export const MAX_ANNOUNCEMENT_BYTES = 8 * 1024
export const MAX_MANIFEST_BYTES = 2 * 1024 * 1024

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits')
// libp2p peer ids in their default base58btc text form (Ed25519 ids start with 12D3Koo).
const peerIdText = z
  .string()
  .min(32)
  .max(128)
  .regex(/^[1-9A-HJ-NP-Za-km-z]+$/, 'expected a base58btc peer id')
const round = z.number().int().min(1).max(2 ** 31 - 1)
const rank = z.number().int().min(1).max(65_536)
const alpha = z.number().finite().positive().max(1e6)
const samples = z.number().int().min(1).max(2 ** 31 - 1)
const payloadSize = z.number().int().min(1).max(2 ** 40)
const signature = z
  .string()
  .min(1)
  .max(1024)
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'expected base64')

export const AnnouncementBodySchema = z.strictObject({
  swarmId: hex64,
  round,
  parentStateHash: hex64,
  author: peerIdText,
  rank,
  alpha,
  samples,
  payloadHash: hex64,
  payloadSize,
})
export type AnnouncementBody = z.infer<typeof AnnouncementBodySchema>

export const ManifestEntrySchema = z.strictObject({
  peerId: peerIdText,
  payloadHash: hex64,
  payloadSize,
  rank,
  alpha,
  samples,
  /** The author's signature over its announcement (reconstructible from manifest + entry). */
  sig: signature,
})
export type ManifestEntry = z.infer<typeof ManifestEntrySchema>

/** Consensus view within a round: view v's proposer is position v (mod members) of the order. */
const view = z.number().int().min(0).max(1_000_000)

export const VoteBodySchema = z.strictObject({
  swarmId: hex64,
  round,
  view,
  /** prevote: "I replayed this proposal and it is valid for me"; precommit: "I saw a prevote quorum for it". */
  phase: z.enum(['prevote', 'precommit']),
  voter: peerIdText,
  parentStateHash: hex64,
  newStateHash: hex64,
  /** manifestValueHash of the proposal voted for (what it merges, not who proposed it). */
  valueHash: hex64,
})
export type VoteBody = z.infer<typeof VoteBodySchema>

export const SignedVoteSchema = z.strictObject({
  kind: z.literal('vote'),
  body: VoteBodySchema,
  sig: signature,
})
export type SignedVote = z.infer<typeof SignedVoteSchema>

/** Votes in one certificate or justification (a quorum of at most this many members). */
export const MAX_QUORUM_VOTES = 1024

export const ManifestBodySchema = z.strictObject({
  swarmId: hex64,
  round,
  /** The view this proposal is for (its proposer must hold that view's turn). */
  view,
  parentStateHash: hex64,
  proposer: peerIdText,
  entries: z.array(ManifestEntrySchema).max(MAX_MANIFEST_ENTRIES),
  newStateHash: hex64,
  /** -1 for a fresh proposal; else the view of the prevote quorum in `justify` (a re-proposal of a locked value). */
  lockView: z.number().int().min(-1).max(1_000_000),
  /** Prevotes for this value at `lockView` (empty when lockView is -1). */
  justify: z.array(SignedVoteSchema).max(MAX_QUORUM_VOTES),
})
export type ManifestBody = z.infer<typeof ManifestBodySchema>

export const SignedAnnouncementSchema = z.strictObject({
  kind: z.literal('announce'),
  body: AnnouncementBodySchema,
  sig: signature,
})
export type SignedAnnouncement = z.infer<typeof SignedAnnouncementSchema>

export const SignedManifestSchema = z.strictObject({
  kind: z.literal('manifest'),
  body: ManifestBodySchema,
  sig: signature,
})
export type SignedManifest = z.infer<typeof SignedManifestSchema>

/**
 * A decided round, for a peer that missed the votes: the proposal and a quorum of
 * precommits for its value. Self-verifying (every part is signed), so it needs no
 * signature of its own.
 */
export const CommitMessageSchema = z.strictObject({
  kind: z.literal('commit'),
  manifest: SignedManifestSchema,
  certificate: z.array(SignedVoteSchema).min(1).max(MAX_QUORUM_VOTES),
})
export type CommitMessage = z.infer<typeof CommitMessageSchema>

export const GossipMessageSchema = z.discriminatedUnion('kind', [SignedAnnouncementSchema, SignedManifestSchema, SignedVoteSchema, CommitMessageSchema])
export type GossipMessage = z.infer<typeof GossipMessageSchema>

/** The round a gossip message is about. */
export function messageRound(msg: GossipMessage): number {
  return msg.kind === 'commit' ? msg.manifest.body.round : msg.body.round
}

/** The swarm a gossip message claims to belong to. */
export function messageSwarm(msg: GossipMessage): string {
  return msg.kind === 'commit' ? msg.manifest.body.swarmId : msg.body.swarmId
}

/** The peer that signed a gossip message (a commit is relayed: its proposer stands for it). */
export function messageSigner(msg: GossipMessage): string {
  switch (msg.kind) {
    case 'announce':
      return msg.body.author
    case 'manifest':
      return msg.body.proposer
    case 'vote':
      return msg.body.voter
    case 'commit':
      return msg.manifest.body.proposer
  }
}
