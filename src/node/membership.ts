/**
 * Who counts: the swarm's membership as recorded on the chain, and the quorum a round's
 * certificate needs.
 *
 * Every certified round record carries the membership M_r, as a map from member to the
 * last round one of its adapters was merged. M_r is a pure function of M_{r-1} and the
 * round's entries: the authors of S_r join (or stay), and a member with no merged adapter
 * in the last MEMBER_TTL_ROUNDS rounds leaves. Round r's proposer order and quorum are
 * counted over M_{r-1}, never over a peer's connection view, so every peer on the chain
 * computes the same ones.
 *
 * Round 1 has no recorded membership: it *founds* the chain. A founding certificate needs
 * votes from authors of the founding proposal, at least a quorum of them and at least a
 * quorum of the swarm's `minPeers`; with `minPeers` above half the founders, two founding
 * groups cannot both found a chain.
 */
export const MEMBER_TTL_ROUNDS = 3

/**
 * `majority`: more than half the members (tolerates f < n/2 crashed, slow or partitioned
 * members). `two-thirds`: more than two thirds (also tolerates f < n/3 members that sign
 * conflicting votes).
 */
export type QuorumRule = 'majority' | 'two-thirds'

/** Votes needed out of `n` voters (n >= 1). */
export function quorumSize(n: number, rule: QuorumRule): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`quorum over ${n} voters`)
  return rule === 'majority' ? Math.floor(n / 2) + 1 : Math.floor((2 * n) / 3) + 1
}

/** Member -> last round one of its adapters was merged. */
export type Membership = Readonly<Record<string, number>>

export const EMPTY_MEMBERSHIP: Membership = Object.freeze({})

/** M_r from M_{r-1} and the authors merged in round r. Keys sorted, for canonical records. */
export function nextMembership(prev: Membership, round: number, authors: readonly string[]): Membership {
  const next = new Map<string, number>()
  for (const [id, last] of Object.entries(prev)) if (last > round - MEMBER_TTL_ROUNDS) next.set(id, last)
  for (const a of authors) next.set(a, round)
  const out: Record<string, number> = {}
  for (const id of [...next.keys()].sort()) out[id] = next.get(id) as number
  return out
}

export function memberIds(m: Membership): string[] {
  return Object.keys(m).sort()
}

/**
 * The voters whose votes count for a value, and how many of them it needs: over the
 * recorded membership, or (founding round, empty membership) over the value's authors.
 */
export function quorumFor(
  members: readonly string[],
  authors: readonly string[],
  rule: QuorumRule,
  minPeers: number,
): { eligible: ReadonlySet<string>; needed: number } {
  if (members.length > 0) return { eligible: new Set(members), needed: quorumSize(members.length, rule) }
  const eligible = new Set(authors)
  const needed = Math.max(quorumSize(Math.max(1, minPeers), rule), quorumSize(Math.max(1, eligible.size), rule))
  return { eligible, needed }
}
