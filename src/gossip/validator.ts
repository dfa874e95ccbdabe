/**
 * Gossip validation, run by gossipsub as a topic validator *before* a message is
 * delivered or relayed, so an invalid message dies at the first honest hop.
 *
 * Order of checks (cheapest first): the publisher's message rate, size and schema, swarm
 * id, a closed swarm's allowlist, payload caps, publisher equals the signed
 * author/proposer/voter, the round context supplied by the round engine (round window,
 * turn, entries and votes no more than the swarm has members), and only then signature(s).
 * Messages that may be honest but out of step (wrong round, other parent) are ignored; the
 * rest are rejected, which also lowers the sender's gossipsub score (the service sets the
 * topic's invalid-message penalty). Every refusal is reported with its reason.
 */
import { TopicValidatorResult, type Message, type TopicValidatorFn } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { decodeGossipMessage } from './codec.js'
import type { RejectReason } from './errors.js'
import { messageSwarm, type GossipMessage } from './messages.js'
import { verifyAnnouncement, verifyCommit, verifyManifest, verifyVote } from './sign.js'

export interface Verdict {
  readonly action: 'accept' | 'ignore' | 'reject'
  readonly reason?: RejectReason
  readonly detail?: string
  readonly msg?: GossipMessage
}

/** Context check by the round engine; undefined means the message fits our state. */
export type ContextCheck = (msg: GossipMessage) => { action: 'ignore' | 'reject'; reason: RejectReason; detail: string } | undefined

export interface GossipValidationInit {
  swarmId: string
  maxPayloadBytes: number
  maxRank: number
  /** A closed swarm's members: messages by (or naming) anyone else are rejected. */
  allowed?: ReadonlySet<string>
  /** Largest message the swarm's size allows (checked before parsing); default: the structural caps only. */
  maxMessageBytes?: () => number
  checkContext?: ContextCheck
}

/** Every peer a message is signed by or names as an author. */
function namedPeers(msg: GossipMessage): string[] {
  switch (msg.kind) {
    case 'announce':
      return [msg.body.author]
    case 'manifest':
      return [msg.body.proposer, ...msg.body.entries.map((e) => e.peerId), ...msg.body.justify.map((v) => v.body.voter)]
    case 'vote':
      return [msg.body.voter]
    case 'commit':
      return [msg.manifest.body.proposer, ...msg.manifest.body.entries.map((e) => e.peerId), ...msg.certificate.map((v) => v.body.voter)]
  }
}

/** Validates one gossip message as received from `publisher` (the gossipsub `from`). */
export async function validateGossipMessage(
  data: Uint8Array,
  publisher: string | undefined,
  init: GossipValidationInit,
): Promise<Verdict> {
  const most = init.maxMessageBytes?.()
  if (most !== undefined && data.byteLength > most) {
    return { action: 'reject', reason: 'oversized', detail: `message of ${data.byteLength} bytes, more than a swarm of this size ever sends (${most})` }
  }
  const decoded = decodeGossipMessage(data)
  if (!decoded.ok) return { action: 'reject', reason: decoded.reason, detail: decoded.detail }
  const msg = decoded.msg
  if (messageSwarm(msg) !== init.swarmId) {
    return { action: 'reject', reason: 'wrong-swarm', detail: `swarm ${messageSwarm(msg).slice(0, 12)} is not ours (${init.swarmId.slice(0, 12)})`, msg }
  }
  if (init.allowed != null) {
    const outsider = (publisher !== undefined && !init.allowed.has(publisher) ? publisher : undefined) ?? namedPeers(msg).find((p) => !(init.allowed as ReadonlySet<string>).has(p))
    if (outsider !== undefined) return { action: 'reject', reason: 'not-member', detail: `${outsider} is not a member of this closed swarm`, msg }
  }
  const caps = (e: { payloadSize: number; rank: number; peerId: string }): Verdict | undefined =>
    e.payloadSize > init.maxPayloadBytes || e.rank > init.maxRank
      ? { action: 'reject', reason: 'oversized', detail: `manifest entry of ${e.peerId} exceeds the payload/rank caps`, msg }
      : undefined
  switch (msg.kind) {
    case 'announce': {
      const b = msg.body
      if (b.payloadSize > init.maxPayloadBytes) {
        return { action: 'reject', reason: 'oversized', detail: `payload of ${b.payloadSize} bytes exceeds cap ${init.maxPayloadBytes}`, msg }
      }
      if (b.rank > init.maxRank) return { action: 'reject', reason: 'oversized', detail: `rank ${b.rank} exceeds max ${init.maxRank}`, msg }
      if (publisher !== undefined && publisher !== b.author) {
        return { action: 'reject', reason: 'forged-author', detail: `published by ${publisher} but claims author ${b.author}`, msg }
      }
      break
    }
    case 'manifest': {
      for (const e of msg.body.entries) {
        const bad = caps(e)
        if (bad != null) return bad
      }
      if (publisher !== undefined && publisher !== msg.body.proposer) {
        return { action: 'reject', reason: 'forged-author', detail: `published by ${publisher} but claims proposer ${msg.body.proposer}`, msg }
      }
      break
    }
    case 'vote': {
      if (publisher !== undefined && publisher !== msg.body.voter) {
        return { action: 'reject', reason: 'forged-author', detail: `published by ${publisher} but claims voter ${msg.body.voter}`, msg }
      }
      break
    }
    case 'commit': {
      for (const e of msg.manifest.body.entries) {
        const bad = caps(e)
        if (bad != null) return bad
      }
      break
    }
  }
  // Cheap context (round window, turn) before any signature is checked.
  const ctx = init.checkContext?.(msg)
  if (ctx != null) return { ...ctx, msg }
  switch (msg.kind) {
    case 'announce':
      if (!(await verifyAnnouncement(msg))) {
        return { action: 'reject', reason: 'bad-signature', detail: `announcement signature does not verify for author ${msg.body.author}`, msg }
      }
      break
    case 'manifest': {
      const check = await verifyManifest(msg)
      if (!check.ok) return { action: 'reject', reason: check.reason, detail: check.detail, msg }
      break
    }
    case 'vote':
      if (!(await verifyVote(msg))) {
        return { action: 'reject', reason: 'bad-signature', detail: `vote signature does not verify for voter ${msg.body.voter}`, msg }
      }
      break
    case 'commit': {
      const check = await verifyCommit(msg)
      if (!check.ok) return { action: 'reject', reason: check.reason === 'bad-signature' ? 'bad-signature' : 'bad-certificate', detail: check.detail, msg }
      break
    }
  }
  return { action: 'accept', msg }
}

export interface RejectInfo {
  readonly from: string
  readonly publisher: string | undefined
  readonly reason: RejectReason
  readonly detail: string
  readonly action: 'ignore' | 'reject'
  readonly msg?: GossipMessage
}

/**
 * Per-publisher token buckets: `burst` messages at once, refilled at `perSecond`. An honest
 * member publishes a handful of messages per round view (an announcement, two votes, maybe
 * a proposal or a commit); a peer far above that is flooding.
 */
export class PublisherRateLimit {
  readonly #buckets = new Map<string, { tokens: number; at: number }>()
  constructor(
    readonly burst = 200,
    readonly perSecond = 50,
    readonly now: () => number = Date.now,
  ) {}

  /** Takes one token; false when the publisher has none left. */
  take(publisher: string): boolean {
    const t = this.now()
    let b = this.#buckets.get(publisher)
    if (b == null) {
      if (this.#buckets.size >= 4096) this.#evictFull(t)
      b = { tokens: this.burst, at: t }
      this.#buckets.set(publisher, b)
    }
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond)
    b.at = t
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  #evictFull(t: number): void {
    for (const [k, b] of this.#buckets) if (b.tokens + ((t - b.at) / 1000) * this.perSecond >= this.burst) this.#buckets.delete(k)
    if (this.#buckets.size >= 4096) this.#buckets.clear()
  }
}

/** A gossipsub topic validator that reports every refusal through `onRefused`. */
export function createTopicValidator(init: GossipValidationInit & { onRefused: (info: RejectInfo) => void; rateLimit?: PublisherRateLimit }): TopicValidatorFn {
  const limit = init.rateLimit ?? new PublisherRateLimit()
  return async (propagationSource: PeerId, message: Message): Promise<TopicValidatorResult> => {
    const publisher = message.type === 'signed' ? message.from.toString() : undefined
    const v: Verdict =
      publisher !== undefined && !limit.take(publisher)
        ? { action: 'reject', reason: 'rate-limited', detail: `${publisher} publishes more than ${limit.perSecond} messages/s` }
        : await validateGossipMessage(message.data, publisher, init)
    if (v.action === 'accept') return TopicValidatorResult.Accept
    init.onRefused({
      from: propagationSource.toString(),
      publisher,
      reason: v.reason ?? 'malformed',
      detail: v.detail ?? '',
      action: v.action,
      msg: v.msg,
    })
    return v.action === 'ignore' ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject
  }
}
