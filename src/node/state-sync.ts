/**
 * Verifying what a peer that is behind learns from others (src/gossip/sync.ts carries it).
 *
 * A commit (manifest + precommit certificate) for round r is accepted only if, against the
 * chain this peer already holds up to r-1:
 *  - it is for this swarm, round r, and builds on the state hash of r-1;
 *  - its manifest and every entry are signed by their authors, and every vote by its voter;
 *  - its precommits are for the manifest's value, in one view, from a quorum of the
 *    membership recorded at r-1 (founding round: of its authors, and of minPeers).
 * Then the membership after r follows from the chain. The new state itself is either
 * replayed (payloads fetched by hash, merged, hash compared) or, past the kept payloads,
 * taken from a head snapshot whose hash must equal the certified one. A member whose
 * data fails any of these checks is reported and not asked again.
 */
import type { CommitMessage } from '../gossip/messages.js'
import { manifestValueHash, verifyCommit } from '../gossip/sign.js'
import { memberIds, nextMembership, quorumFor, type Membership, type QuorumRule } from './membership.js'

export interface ChainTip {
  readonly round: number
  readonly stateHash: string
  readonly members: Membership
}

export interface SyncPolicy {
  readonly swarmId: string
  readonly quorum: QuorumRule
  readonly minPeers: number
}

export type CommitCheck =
  | { ok: true; members: Membership; contributors: string[]; view: number; voters: string[] }
  | { ok: false; detail: string }

/** Checks a certified commit for round tip.round + 1 (signatures included). */
export async function verifyCertifiedCommit(c: CommitMessage, tip: ChainTip, policy: SyncPolicy): Promise<CommitCheck> {
  const b = c.manifest.body
  const round = tip.round + 1
  if (b.swarmId !== policy.swarmId) return { ok: false, detail: `commit of swarm ${b.swarmId.slice(0, 12)}` }
  if (b.round !== round) return { ok: false, detail: `commit for round ${b.round}, expected ${round}` }
  if (b.parentStateHash !== tip.stateHash) {
    return { ok: false, detail: `round ${round} builds on ${b.parentStateHash.slice(0, 12)}, the chain has ${tip.stateHash.slice(0, 12)}` }
  }
  const views = new Set(c.certificate.map((v) => v.body.view))
  if (views.size !== 1) return { ok: false, detail: `round ${round}: certificate votes span ${views.size} views` }
  const sigs = await verifyCommit(c)
  if (!sigs.ok) return { ok: false, detail: `round ${round}: ${sigs.detail}` }
  const contributors = b.entries.map((e) => e.peerId)
  const { eligible, needed } = quorumFor(memberIds(tip.members), contributors, policy.quorum, policy.minPeers)
  const value = manifestValueHash(b)
  const voters = [...new Set(c.certificate.filter((v) => v.body.phase === 'precommit' && v.body.valueHash === value && eligible.has(v.body.voter)).map((v) => v.body.voter))]
  if (voters.length < needed) {
    return { ok: false, detail: `round ${round}: ${voters.length} precommits of members, a quorum is ${needed}` }
  }
  return { ok: true, members: nextMembership(tip.members, round, contributors), contributors, view: [...views][0] as number, voters: voters.sort() }
}
