/** Gossip message bytes: canonical JSON of a signed envelope, decoded strictly. */
import { canonicalBytes, sha256Hex, toBase64, type CanonicalValue } from './canonical.js'
import { GossipMessageSchema, MAX_ANNOUNCEMENT_BYTES, MAX_MANIFEST_BYTES, type GossipMessage } from './messages.js'
import type { RejectReason } from './errors.js'

/**
 * The largest gossipsub RPC a flora host reads (gossipsub's `maxInboundDataLength`). flora's
 * gossip messages are small (an announcement ~0.5 KB; a manifest or commit ~4 KiB per member
 * of the round at most) and payloads travel on their own protocol, so 1 MiB covers honest
 * swarms of ~250 members with several messages batched in one RPC. A peer that sends a
 * larger RPC is refused (see FloraService).
 */
export const MAX_GOSSIP_RPC_BYTES = 1 << 20

/** The errors it-length-prefixed raises for a frame over the cap or a malformed length prefix (by `name`). */
export const LENGTH_PREFIX_ERRORS: ReadonlySet<string> = new Set(['InvalidDataLengthError', 'InvalidDataLengthLengthError', 'InvalidMessageLengthError'])

/**
 * gossipsub's fast message id (its `fastMsgIdFn` option), computed from a received RPC
 * message before anything is checked. flora's gossipsub signs messages (StrictSign), whose
 * id is (from, seqno): this is the same identity. gossipsub caches it only once a copy has
 * passed the signature check, and drops every later copy (one per mesh peer that relays
 * the message) as a duplicate before verifying its signature again. Without it every copy
 * is verified: with 48 peers on 2 cores a quarter of all CPU time went to verifying
 * signatures of copies of messages already seen. A forged copy (another `from`, or a bad
 * signature) is never cached, so it cannot shadow the real message.
 */
export function fastGossipMessageId(msg: { from?: Uint8Array; seqno?: Uint8Array; data?: Uint8Array }): string {
  if (msg.from != null && msg.seqno != null) return `${toBase64(msg.from)}:${toBase64(msg.seqno)}`
  return `data:${sha256Hex(msg.data ?? new Uint8Array(0))}`
}

export function encodeGossipMessage(msg: GossipMessage): Uint8Array {
  return canonicalBytes(msg as unknown as CanonicalValue)
}

export type DecodeResult = { ok: true; msg: GossipMessage } | { ok: false; reason: RejectReason; detail: string }

const decoder = new TextDecoder('utf-8', { fatal: true })

export function decodeGossipMessage(bytes: Uint8Array): DecodeResult {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    return { ok: false, reason: 'oversized', detail: `message of ${bytes.byteLength} bytes exceeds ${MAX_MANIFEST_BYTES}` }
  }
  let json: unknown
  try {
    json = JSON.parse(decoder.decode(bytes))
  } catch (err) {
    return { ok: false, reason: 'malformed', detail: `not UTF-8 JSON: ${(err as Error).message}` }
  }
  const parsed = GossipMessageSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    return { ok: false, reason: 'malformed', detail: `schema: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim() }
  }
  if (parsed.data.kind === 'announce' && bytes.byteLength > MAX_ANNOUNCEMENT_BYTES) {
    return { ok: false, reason: 'oversized', detail: `announcement of ${bytes.byteLength} bytes exceeds ${MAX_ANNOUNCEMENT_BYTES}` }
  }
  return { ok: true, msg: parsed.data }
}
