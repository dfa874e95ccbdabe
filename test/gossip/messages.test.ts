/** Canonical encoding, signatures, manifests and the gossip validator, without a network. */
import { describe, expect, it } from 'vitest'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { canonicalJson } from '../../src/gossip/canonical.js'
import { decodeGossipMessage, encodeGossipMessage } from '../../src/gossip/codec.js'
import type { AnnouncementBody, ManifestBody, VoteBody } from '../../src/gossip/messages.js'
import {
  announcementFromEntry,
  entryFromAnnouncement,
  manifestValueHash,
  signAnnouncement,
  signManifest,
  signVote,
  verifyAnnouncement,
  verifyManifest,
  verifyVote,
} from '../../src/gossip/sign.js'
import { PublisherRateLimit, validateGossipMessage } from '../../src/gossip/validator.js'
import { identityFromSeed } from '../../src/node/identity.js'

const SWARM = 'a1'.repeat(32)
const PARENT = 'b2'.repeat(32)

async function keyAndId(seed: string) {
  const key = await identityFromSeed(seed)
  return { key, id: peerIdFromPrivateKey(key).toString() }
}

function body(author: string, over: Partial<AnnouncementBody> = {}): AnnouncementBody {
  return {
    swarmId: SWARM,
    round: 3,
    parentStateHash: PARENT,
    author,
    rank: 8,
    alpha: 16,
    samples: 120,
    payloadHash: 'c3'.repeat(32),
    payloadSize: 4096,
    ...over,
  }
}

describe('canonical JSON', () => {
  it('sorts keys recursively and is stable under key order', () => {
    expect(canonicalJson({ b: 1, a: [{ d: true, c: null }], e: 'x' })).toBe('{"a":[{"c":null,"d":true}],"b":1,"e":"x"}')
    expect(canonicalJson({ x: 0.5, y: 1e21 })).toBe(canonicalJson({ y: 1e21, x: 0.5 }))
    expect(() => canonicalJson({ x: Number.NaN })).toThrow()
  })
})

describe('announcements', () => {
  it('sign and verify against the author peer id; any change breaks the signature', async () => {
    const a = await keyAndId('msg-a')
    const signed = await signAnnouncement(a.key, body(a.id))
    expect(await verifyAnnouncement(signed)).toBe(true)
    for (const change of [{ round: 4 }, { parentStateHash: 'd4'.repeat(32) }, { samples: 121 }, { rank: 4 }, { alpha: 8 }, { payloadSize: 4097 }]) {
      expect(await verifyAnnouncement({ ...signed, body: { ...signed.body, ...change } })).toBe(false)
    }
    const b = await keyAndId('msg-b')
    // Claiming another author with one's own key.
    expect(await verifyAnnouncement(await signAnnouncement(b.key, body(a.id)))).toBe(false)
  })

  it('round-trips through the codec and refuses malformed input', async () => {
    const a = await keyAndId('msg-a')
    const signed = await signAnnouncement(a.key, body(a.id))
    const decoded = decodeGossipMessage(encodeGossipMessage(signed))
    expect(decoded).toEqual({ ok: true, msg: signed })
    const bad = (x: unknown) => decodeGossipMessage(new TextEncoder().encode(JSON.stringify(x)))
    expect(bad({ ...signed, extra: 1 }).ok).toBe(false)
    expect(bad({ ...signed, body: { ...signed.body, round: 0 } }).ok).toBe(false)
    expect(bad({ ...signed, body: { ...signed.body, payloadHash: 'XYZ' } }).ok).toBe(false)
    expect(bad({ ...signed, body: { ...signed.body, samples: 1.5 } }).ok).toBe(false)
    expect(decodeGossipMessage(new Uint8Array([0xff, 0xfe])).ok).toBe(false)
  })
})

describe('manifests', () => {
  it('are self-verifying: each entry carries its author\'s announcement signature', async () => {
    const peers = await Promise.all(['m-1', 'm-2', 'm-3'].map(keyAndId))
    const anns = await Promise.all(peers.map((p, i) => signAnnouncement(p.key, body(p.id, { rank: 2 ** (i + 1), payloadHash: `${i}`.repeat(64) }))))
    const entries = anns.map(entryFromAnnouncement).sort((x, y) => (x.peerId < y.peerId ? -1 : 1))
    const mb: ManifestBody = { swarmId: SWARM, round: 3, view: 0, parentStateHash: PARENT, proposer: peers[0].id, entries, newStateHash: 'e5'.repeat(32), lockView: -1, justify: [] }
    const signed = await signManifest(peers[0].key, mb)
    expect(await verifyManifest(signed)).toEqual({ ok: true })
    // Entries reconstruct the exact signed announcements.
    for (const e of entries) expect(await verifyAnnouncement(announcementFromEntry(mb, e))).toBe(true)

    const unsorted = await signManifest(peers[0].key, { ...mb, entries: [...entries].reverse() })
    expect(await verifyManifest(unsorted)).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    const tampered = await signManifest(peers[0].key, { ...mb, entries: entries.map((e, i) => (i === 0 ? { ...e, samples: e.samples + 1 } : e)) })
    expect(await verifyManifest(tampered)).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    const dup = await signManifest(peers[0].key, { ...mb, entries: [entries[0], entries[0]] })
    expect(await verifyManifest(dup)).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    expect(await verifyManifest({ ...signed, body: { ...mb, newStateHash: 'f6'.repeat(32) } })).toMatchObject({ ok: false, reason: 'bad-signature' })
  })

  it('a re-proposal carries a prevote quorum for its value at its lockView, each vote signed by its voter', async () => {
    const peers = await Promise.all(['j-1', 'j-2', 'j-3'].map(keyAndId))
    const mb: ManifestBody = { swarmId: SWARM, round: 3, view: 2, parentStateHash: PARENT, proposer: peers[0].id, entries: [], newStateHash: 'e5'.repeat(32), lockView: 1, justify: [] }
    const vote = (p: (typeof peers)[number], over: Partial<VoteBody> = {}) =>
      signVote(p.key, { swarmId: SWARM, round: 3, view: 1, phase: 'prevote', voter: p.id, parentStateHash: PARENT, newStateHash: mb.newStateHash, valueHash: manifestValueHash(mb), ...over })
    const justify = [await vote(peers[1]), await vote(peers[2])]
    expect(await verifyManifest(await signManifest(peers[0].key, { ...mb, justify }))).toEqual({ ok: true })
    // lockView without votes, votes without lockView, a lockView not before the view
    expect(await verifyManifest(await signManifest(peers[0].key, mb))).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    expect(await verifyManifest(await signManifest(peers[0].key, { ...mb, lockView: -1, justify }))).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    expect(await verifyManifest(await signManifest(peers[0].key, { ...mb, view: 1, justify }))).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    // a vote for another value, view or phase; a vote twice; a forged vote
    for (const bad of [{ valueHash: 'ab'.repeat(32) }, { view: 0 }, { phase: 'precommit' as const }]) {
      const votes = [await vote(peers[1]), await vote(peers[2], bad)]
      expect(await verifyManifest(await signManifest(peers[0].key, { ...mb, justify: votes }))).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    }
    expect(await verifyManifest(await signManifest(peers[0].key, { ...mb, justify: [justify[0], justify[0]] }))).toMatchObject({ ok: false, reason: 'manifest-invalid' })
    const forged = { ...justify[1], body: { ...justify[1].body, voter: peers[0].id } }
    expect(await verifyManifest(await signManifest(peers[0].key, { ...mb, justify: [justify[0], forged] }))).toMatchObject({ ok: false, reason: 'bad-signature' })
    expect(await verifyVote(justify[0])).toBe(true)
    expect(await verifyVote(forged)).toBe(false)
  })
})

describe('validator', () => {
  const init = { swarmId: SWARM, maxPayloadBytes: 1 << 20, maxRank: 64 }

  it('accepts a good announcement and names the reason for each bad one', async () => {
    const a = await keyAndId('v-a')
    const m = await keyAndId('v-m')
    const enc = async (key: typeof a.key, b: AnnouncementBody) => encodeGossipMessage(await signAnnouncement(key, b))
    const verdict = async (data: Uint8Array, publisher: string) => (await validateGossipMessage(data, publisher, init))
    expect((await verdict(await enc(a.key, body(a.id)), a.id)).action).toBe('accept')
    expect(await verdict(await enc(m.key, body(a.id)), m.id)).toMatchObject({ action: 'reject', reason: 'forged-author' })
    expect(await verdict(await enc(m.key, body(a.id)), a.id)).toMatchObject({ action: 'reject', reason: 'bad-signature' })
    expect(await verdict(await enc(a.key, body(a.id, { swarmId: 'ff'.repeat(32) })), a.id)).toMatchObject({ action: 'reject', reason: 'wrong-swarm' })
    expect(await verdict(await enc(a.key, body(a.id, { payloadSize: (1 << 20) + 1 })), a.id)).toMatchObject({ action: 'reject', reason: 'oversized' })
    expect(await verdict(await enc(a.key, body(a.id, { rank: 65 })), a.id)).toMatchObject({ action: 'reject', reason: 'oversized' })
    expect(await verdict(new TextEncoder().encode('nope'), a.id)).toMatchObject({ action: 'reject', reason: 'malformed' })
    const ctx = await validateGossipMessage(await enc(a.key, body(a.id)), a.id, {
      ...init,
      checkContext: () => ({ action: 'ignore', reason: 'round-window', detail: 'test' }),
    })
    expect(ctx).toMatchObject({ action: 'ignore', reason: 'round-window' })
  })
})

describe('validator: closed swarms and floods', () => {
  const init = { swarmId: SWARM, maxPayloadBytes: 1 << 20, maxRank: 64 }

  it('rejects messages by, or naming, a peer not on the member list (before the signature)', async () => {
    const a = await keyAndId('allow-a')
    const x = await keyAndId('allow-x')
    const allowed = new Set([a.id])
    const good = encodeGossipMessage(await signAnnouncement(a.key, body(a.id)))
    expect((await validateGossipMessage(good, a.id, { ...init, allowed })).action).toBe('accept')
    // An outsider's message is refused as not-member even with a broken signature.
    const outsider = encodeGossipMessage({ ...(await signAnnouncement(x.key, body(x.id))), sig: 'AAAA' })
    expect(await validateGossipMessage(outsider, x.id, { ...init, allowed })).toMatchObject({ action: 'reject', reason: 'not-member' })
    // A member's manifest that includes an outsider's adapter is refused too.
    const entry = { peerId: x.id, payloadHash: 'c3'.repeat(32), payloadSize: 10, rank: 2, alpha: 4, samples: 1, sig: 'AAAA' }
    const mb: ManifestBody = { swarmId: SWARM, round: 3, view: 0, parentStateHash: PARENT, proposer: a.id, entries: [entry], newStateHash: 'e5'.repeat(32), lockView: -1, justify: [] }
    const manifest = encodeGossipMessage(await signManifest(a.key, mb))
    expect(await validateGossipMessage(manifest, a.id, { ...init, allowed })).toMatchObject({ action: 'reject', reason: 'not-member', detail: expect.stringContaining(x.id) })
  })

  it('PublisherRateLimit: a burst, then the refill rate, per publisher', () => {
    let now = 0
    const limit = new PublisherRateLimit(10, 5, () => now)
    for (let i = 0; i < 10; i++) expect(limit.take('p')).toBe(true)
    expect(limit.take('p')).toBe(false)
    expect(limit.take('q')).toBe(true)
    now += 1000
    for (let i = 0; i < 5; i++) expect(limit.take('p')).toBe(true)
    expect(limit.take('p')).toBe(false)
  })
})