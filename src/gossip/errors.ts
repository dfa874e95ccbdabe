/**
 * Named errors and rejection reasons of the gossip layer. Callers branch on `err.name`
 * and then `err.code`; messages are for humans.
 */

/**
 * Why a message, payload or peer was refused. Every rejection is logged with one of these
 * and surfaced as a `peer:rejected` event, so an operator can tell a bug from an attack.
 */
export type RejectReason =
  | 'malformed' // not valid JSON, or fails the schema
  | 'oversized' // message or declared payload larger than the caps
  | 'wrong-swarm' // swarm id differs from ours (other config or base model)
  | 'round-window' // round too far from ours to be considered
  | 'forged-author' // gossipsub publisher differs from the signed author/proposer
  | 'bad-signature' // signature does not verify against the author's peer id
  | 'wrong-parent' // built on a parent state hash other than the agreed one
  | 'equivocation' // a second, different announcement by one author for one round
  | 'malformed-payload' // payload bytes are not a valid adapter for this swarm
  | 'payload-mismatch' // payload decodes, but rank/alpha differ from the announcement
  | 'payload-unavailable' // no peer could serve the payload in time
  | 'manifest-invalid' // manifest entries unsorted, duplicated or badly signed
  | 'manifest-hash-mismatch' // replaying the manifest gives another state hash
  | 'not-your-turn' // a proposal from a member whose view it is not (or before its view opened)
  | 'censorship' // a fresh proposal omits an adapter we held well before it (voters refuse it)
  | 'bad-certificate' // a commit's votes are not a quorum of the round's members
  | 'locked' // a proposal conflicts with the value this peer is locked on
  | 'bad-sync' // state sync data (commits, certificates, payloads, snapshot) that does not verify
  | 'not-member' // a closed swarm's allowlist does not name the peer
  | 'rate-limited' // the peer sends more messages than any honest member does
  | 'too-many-entries' // a manifest or certificate longer than the swarm has members
  | 'flood' // a peer kept delivering rejected messages: disconnected and refused for a while

export type PayloadTransferErrorCode =
  | 'NOT_FOUND' // the remote does not hold the payload
  | 'TOO_LARGE' // declared or received size above the cap
  | 'SIZE_MISMATCH' // received size differs from the declared one
  | 'HASH_MISMATCH' // received bytes do not hash to the requested sha256
  | 'PROTOCOL' // malformed frame
  | 'TIMEOUT'
  | 'SILENT' // the stream opened, but no response header came within the first-byte timeout
  | 'ABORTED'
  | 'UNREACHABLE' // no connection or stream could be opened

/** A payload could not be fetched from one peer (or from any, for `fetchFromAny`). */
export class PayloadTransferError extends Error {
  override readonly name = 'PayloadTransferError'
  readonly code: PayloadTransferErrorCode
  constructor(code: PayloadTransferErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options)
    this.code = code
  }
}

/** A gossip message or manifest failed validation. */
export class MessageRejectedError extends Error {
  override readonly name = 'MessageRejectedError'
  readonly reason: RejectReason
  constructor(reason: RejectReason, message: string) {
    super(`${reason}: ${message}`)
    this.reason = reason
  }
}
