/**
 * Gossip validation, run by gossipsub as a topic validator *before* a message is
 * delivered or relayed, so an invalid message dies at the first honest hop.
 *
 * Order of checks (cheapest first): size and schema, swarm id, payload caps, publisher
 * equals the signed author/proposer, signature(s), then the round context (round window,
 * parent state hash) supplied by the round engine. Messages that may be honest but out of
 * step (wrong round, other parent) are ignored; the rest are rejected, which also lowers
 * the sender's gossipsub score. Every refusal is reported with its reason.
 */
import { TopicValidatorResult, type Message, type TopicValidatorFn } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { decodeGossipMessage } from './codec.js'
import type { RejectReason } from './errors.js'
import type { GossipMessage } from './messages.js'
import { verifyAnnouncement, verifyManifest } from './sign.js'

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
  checkContext?: ContextCheck
}

/** Validates one gossip message as received from `publisher` (the gossipsub `from`). */
export async function validateGossipMessage(
  data: Uint8Array,
  publisher: string | undefined,
  init: GossipValidationInit,
): Promise<Verdict> {
  const decoded = decodeGossipMessage(data)
  if (!decoded.ok) return { action: 'reject', reason: decoded.reason, detail: decoded.detail }
  const msg = decoded.msg
  if (msg.body.swarmId !== init.swarmId) {
    return { action: 'reject', reason: 'wrong-swarm', detail: `swarm ${msg.body.swarmId.slice(0, 12)} is not ours (${init.swarmId.slice(0, 12)})`, msg }
  }
  if (msg.kind === 'announce') {
    const b = msg.body
    if (b.payloadSize > init.maxPayloadBytes) {
      return { action: 'reject', reason: 'oversized', detail: `payload of ${b.payloadSize} bytes exceeds cap ${init.maxPayloadBytes}`, msg }
    }
    if (b.rank > init.maxRank) return { action: 'reject', reason: 'oversized', detail: `rank ${b.rank} exceeds max ${init.maxRank}`, msg }
    if (publisher !== undefined && publisher !== b.author) {
      return { action: 'reject', reason: 'forged-author', detail: `published by ${publisher} but claims author ${b.author}`, msg }
    }
    if (!(await verifyAnnouncement(msg))) {
      return { action: 'reject', reason: 'bad-signature', detail: `announcement signature does not verify for author ${b.author}`, msg }
    }
  } else {
    const b = msg.body
    for (const e of b.entries) {
      if (e.payloadSize > init.maxPayloadBytes || e.rank > init.maxRank) {
        return { action: 'reject', reason: 'oversized', detail: `manifest entry of ${e.peerId} exceeds the payload/rank caps`, msg }
      }
    }
    if (publisher !== undefined && publisher !== b.proposer) {
      return { action: 'reject', reason: 'forged-author', detail: `published by ${publisher} but claims proposer ${b.proposer}`, msg }
    }
    const check = await verifyManifest(msg)
    if (!check.ok) return { action: 'reject', reason: check.reason, detail: check.detail, msg }
  }
  const ctx = init.checkContext?.(msg)
  if (ctx != null) return { ...ctx, msg }
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

/** A gossipsub topic validator that reports every refusal through `onRefused`. */
export function createTopicValidator(init: GossipValidationInit & { onRefused: (info: RejectInfo) => void }): TopicValidatorFn {
  return async (propagationSource: PeerId, message: Message): Promise<TopicValidatorResult> => {
    const publisher = message.type === 'signed' ? message.from.toString() : undefined
    const v = await validateGossipMessage(message.data, publisher, init)
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
