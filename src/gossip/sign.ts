/**
 * Signatures over canonical message bytes with the peer's libp2p key.
 *
 * signed bytes = utf8(domain) || canonicalJson(body); the domain string keeps an
 * announcement signature from ever verifying as a manifest signature and vice versa.
 * The verifying key is the one embedded in the author's peer id (Ed25519 and secp256k1
 * ids embed it; RSA ids do not and are refused).
 */
import { createHash, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import { canonicalJson, fromBase64, sha256Hex, toBase64, type CanonicalValue } from './canonical.js'
import {
  ANNOUNCE_DOMAIN,
  MANIFEST_DOMAIN,
  VOTE_DOMAIN,
  type CommitMessage,
  type SignedVote,
  type VoteBody,
  type AnnouncementBody,
  type ManifestBody,
  type ManifestEntry,
  type SignedAnnouncement,
  type SignedManifest,
} from './messages.js'
import type { RejectReason } from './errors.js'

const encoder = new TextEncoder()

function signedBytes(domain: string, body: CanonicalValue): Uint8Array {
  return encoder.encode(domain + canonicalJson(body))
}

const keyCache = new Map<string, PublicKey | null>()

/** The public key a peer id commits to, or null when the id does not embed one. */
export function publicKeyOf(peerId: string): PublicKey | null {
  const cached = keyCache.get(peerId)
  if (cached !== undefined) return cached
  let key: PublicKey | null = null
  try {
    key = peerIdFromString(peerId).publicKey ?? null
  } catch {
    key = null
  }
  if (keyCache.size > 10_000) keyCache.clear()
  keyCache.set(peerId, key)
  return key
}

const ed25519Keys = new Map<string, KeyObject>()

/**
 * An Ed25519 key as a node KeyObject, made once per peer: libp2p's `verify` imports the key
 * from JWK on every call, which cost as much as the verification itself in a 48-peer swarm.
 */
function ed25519KeyObject(peerId: string, key: PublicKey): KeyObject {
  let obj = ed25519Keys.get(peerId)
  if (obj === undefined) {
    obj = createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(key.raw).toString('base64url') } })
    if (ed25519Keys.size > 10_000) ed25519Keys.clear()
    ed25519Keys.set(peerId, obj)
  }
  return obj
}

/**
 * Signatures that verified, by sha256 of (peer, signed bytes, signature): the same vote
 * arrives on its own, inside proposals' justifications and inside certificates, and every
 * message is said again while its round is open (gossipsub delivers each repeat as a new
 * message). A hit means these exact bytes verified before. Oldest entries go first.
 */
const verified = new Set<string>()
const VERIFIED_CACHE_SIZE = 1 << 16

function verifiedKey(peerId: string, bytes: Uint8Array, sig: string): string {
  return createHash('sha256').update(peerId).update('\0').update(bytes).update('\0').update(sig).digest('base64')
}

async function verifyWith(peerId: string, domain: string, body: CanonicalValue, sig: string): Promise<boolean> {
  const key = publicKeyOf(peerId)
  if (key == null) return false
  try {
    const bytes = signedBytes(domain, body)
    const cacheKey = verifiedKey(peerId, bytes, sig)
    if (verified.has(cacheKey)) return true
    const signature = fromBase64(sig)
    const ok =
      key.type === 'Ed25519'
        ? signature.byteLength === 64 && verifySignature(null, bytes, ed25519KeyObject(peerId, key), signature)
        : await key.verify(bytes, signature)
    if (ok) {
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.values().next().value as string)
      verified.add(cacheKey)
    }
    return ok
  } catch {
    return false
  }
}

export async function signAnnouncement(privateKey: PrivateKey, body: AnnouncementBody): Promise<SignedAnnouncement> {
  const sig = await privateKey.sign(signedBytes(ANNOUNCE_DOMAIN, body))
  return { kind: 'announce', body, sig: toBase64(sig) }
}

export async function verifyAnnouncement(signed: SignedAnnouncement): Promise<boolean> {
  return verifyWith(signed.body.author, ANNOUNCE_DOMAIN, signed.body, signed.sig)
}

export async function signManifest(privateKey: PrivateKey, body: ManifestBody): Promise<SignedManifest> {
  const sig = await privateKey.sign(signedBytes(MANIFEST_DOMAIN, body))
  return { kind: 'manifest', body, sig: toBase64(sig) }
}

/** The manifest entry that stands for a signed announcement. */
export function entryFromAnnouncement(signed: SignedAnnouncement): ManifestEntry {
  const b = signed.body
  return {
    peerId: b.author,
    payloadHash: b.payloadHash,
    payloadSize: b.payloadSize,
    rank: b.rank,
    alpha: b.alpha,
    samples: b.samples,
    sig: signed.sig,
  }
}

/** The author's announcement that a manifest entry stands for (its signature included). */
export function announcementFromEntry(manifest: ManifestBody, entry: ManifestEntry): SignedAnnouncement {
  return {
    kind: 'announce',
    body: {
      swarmId: manifest.swarmId,
      round: manifest.round,
      parentStateHash: manifest.parentStateHash,
      author: entry.peerId,
      rank: entry.rank,
      alpha: entry.alpha,
      samples: entry.samples,
      payloadHash: entry.payloadHash,
      payloadSize: entry.payloadSize,
    },
    sig: entry.sig,
  }
}

export type ManifestCheck = { ok: true } | { ok: false; reason: RejectReason; detail: string }

export async function signVote(privateKey: PrivateKey, body: VoteBody): Promise<SignedVote> {
  const sig = await privateKey.sign(signedBytes(VOTE_DOMAIN, body))
  return { kind: 'vote', body, sig: toBase64(sig) }
}

export async function verifyVote(signed: SignedVote): Promise<boolean> {
  return verifyWith(signed.body.voter, VOTE_DOMAIN, signed.body, signed.sig)
}

/**
 * What a proposal merges, independent of who proposed it and in which view: the hash
 * votes are cast on. A re-proposal of a locked value in a later view has the same value.
 */
export function manifestValueHash(body: Pick<ManifestBody, 'swarmId' | 'round' | 'parentStateHash' | 'entries' | 'newStateHash'>): string {
  return sha256Hex(
    canonicalJson({
      swarmId: body.swarmId,
      round: body.round,
      parentStateHash: body.parentStateHash,
      entries: body.entries,
      newStateHash: body.newStateHash,
    } as unknown as CanonicalValue),
  )
}

/**
 * Checks that a set of votes could stand for one quorum of `phase` votes on a manifest's
 * value at `view`: every vote signed by its voter, for this swarm, round, view, parent,
 * state and value, one per voter. Whether the voters are enough, and members, is the
 * round engine's business (it knows the membership).
 */
export async function verifyQuorumVotes(
  body: ManifestBody,
  votes: readonly SignedVote[],
  phase: VoteBody['phase'],
  view: number,
): Promise<ManifestCheck> {
  const value = manifestValueHash(body)
  const voters = new Set<string>()
  for (const v of votes) {
    const b = v.body
    if (b.swarmId !== body.swarmId || b.round !== body.round || b.view !== view || b.phase !== phase) {
      return { ok: false, reason: 'manifest-invalid', detail: `a ${b.phase} of ${b.voter} is for round ${b.round} view ${b.view}, expected a ${phase} for round ${body.round} view ${view}` }
    }
    if (b.valueHash !== value || b.newStateHash !== body.newStateHash || b.parentStateHash !== body.parentStateHash) {
      return { ok: false, reason: 'manifest-invalid', detail: `a ${phase} of ${b.voter} is for another value` }
    }
    if (voters.has(b.voter)) return { ok: false, reason: 'manifest-invalid', detail: `two votes of ${b.voter}` }
    voters.add(b.voter)
  }
  for (const v of votes) {
    if (!(await verifyVote(v))) return { ok: false, reason: 'bad-signature', detail: `vote signature does not verify for voter ${v.body.voter}` }
  }
  return { ok: true }
}

/** Signatures of a commit message: its manifest (with entries) and its precommits. */
export async function verifyCommit(msg: CommitMessage): Promise<ManifestCheck> {
  const m = await verifyManifest(msg.manifest)
  if (!m.ok) return m
  const view = msg.certificate[0]?.body.view ?? 0
  return verifyQuorumVotes(msg.manifest.body, msg.certificate, 'precommit', view)
}

/**
 * Checks a manifest on its own: proposer signature, entries strictly sorted by peer id
 * (so no duplicates), and every entry signed by its author for this round and parent.
 * Whether its round/parent fit our state and its new state hash replays is the round
 * engine's business.
 */
export async function verifyManifest(signed: SignedManifest): Promise<ManifestCheck> {
  const body = signed.body
  if (!(await verifyWith(body.proposer, MANIFEST_DOMAIN, body, signed.sig))) {
    return { ok: false, reason: 'bad-signature', detail: `manifest signature does not verify for proposer ${body.proposer}` }
  }
  for (let i = 1; i < body.entries.length; i++) {
    if (!(body.entries[i - 1].peerId < body.entries[i].peerId)) {
      return { ok: false, reason: 'manifest-invalid', detail: `entries not strictly sorted by peer id at index ${i}` }
    }
  }
  if ((body.lockView < 0) !== (body.justify.length === 0) || body.lockView >= body.view) {
    return { ok: false, reason: 'manifest-invalid', detail: `lockView ${body.lockView} with ${body.justify.length} justifying votes in view ${body.view}` }
  }
  for (const entry of body.entries) {
    if (!(await verifyAnnouncement(announcementFromEntry(body, entry)))) {
      return { ok: false, reason: 'manifest-invalid', detail: `entry of ${entry.peerId} is not signed by its author` }
    }
  }
  if (body.lockView >= 0) return verifyQuorumVotes(body, body.justify, 'prevote', body.lockView)
  return { ok: true }
}
