/**
 * Signatures over canonical message bytes with the peer's libp2p key.
 *
 * signed bytes = utf8(domain) || canonicalJson(body); the domain string keeps an
 * announcement signature from ever verifying as a manifest signature and vice versa.
 * The verifying key is the one embedded in the author's peer id (Ed25519 and secp256k1
 * ids embed it; RSA ids do not and are refused).
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import { canonicalJson, fromBase64, toBase64, type CanonicalValue } from './canonical.js'
import {
  ANNOUNCE_DOMAIN,
  MANIFEST_DOMAIN,
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

async function verifyWith(peerId: string, domain: string, body: CanonicalValue, sig: string): Promise<boolean> {
  const key = publicKeyOf(peerId)
  if (key == null) return false
  try {
    return await key.verify(signedBytes(domain, body), fromBase64(sig))
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
  for (const entry of body.entries) {
    if (!(await verifyAnnouncement(announcementFromEntry(body, entry)))) {
      return { ok: false, reason: 'manifest-invalid', detail: `entry of ${entry.peerId} is not signed by its author` }
    }
  }
  return { ok: true }
}
