/**
 * Rotating proposer (docs/FEDERATION.md, "Views"): for round r, members are ordered by
 * sha256(u32be(r) || utf8(peerId)). The order only depends on (r, peer id), so it rotates
 * pseudo-randomly every round and any two peers that know the same members agree on it.
 * The same key ranks competing manifests: the one whose proposer sorts first wins.
 */
import { createHash } from 'node:crypto'

export function proposerPriority(round: number, peerId: string): string {
  const r = Buffer.alloc(4)
  r.writeUInt32BE(round)
  return createHash('sha256').update(r).update(peerId, 'utf8').digest('hex')
}

/** Members in proposer order for a round (duplicates removed). */
export function proposerOrder(round: number, members: Iterable<string>): string[] {
  return [...new Set(members)]
    .map((id) => ({ id, key: proposerPriority(round, id) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id < b.id ? -1 : 1))
    .map((x) => x.id)
}

/** True when proposer `a`'s manifest beats proposer `b`'s for a round. */
export function proposerBeats(round: number, a: string, b: string): boolean {
  const ka = proposerPriority(round, a)
  const kb = proposerPriority(round, b)
  return ka < kb || (ka === kb && a < b)
}

/**
 * The founding round's proposer of a view: the candidate with the lowest
 * sha256(u32be(round) || u32be(view) || utf8(peerId)). Round 1 has no recorded membership,
 * so each peer knows its own set of candidates (the founders it met), and in a large swarm
 * forming over minutes these sets differ by a few peers. A position in a sorted order
 * (order[view mod n]) then names different proposers at different peers for nearly every
 * view; the lowest hash per view is the same at every peer whose set holds the overall
 * lowest, so peers whose sets differ slightly still agree on most views' proposers.
 */
export function foundingProposer(round: number, view: number, candidates: Iterable<string>): string {
  let best: { id: string; key: string } | undefined
  for (const id of new Set(candidates)) {
    const key = foundingKey(round, view, id)
    if (best == null || key < best.key || (key === best.key && id < best.id)) best = { id, key }
  }
  if (best == null) throw new RangeError('no founding candidates')
  return best.id
}

/** sha256(u32be(round) || u32be(view) || utf8(peerId)), hex: a founder's rank in a view (lowest first). */
export function foundingKey(round: number, view: number, peerId: string): string {
  const prefix = Buffer.alloc(8)
  prefix.writeUInt32BE(round, 0)
  prefix.writeUInt32BE(view >>> 0, 4)
  return createHash('sha256').update(prefix).update(peerId, 'utf8').digest('hex')
}

/**
 * Whether a founding proposal by `proposer` in `view` is in turn at a peer whose founding
 * proposer of that view is `turn` (foundingProposer over its candidates): the proposer
 * would be the view's proposer were it among those candidates, i.e. it ranks before
 * `turn`. A founder this peer has not heard from yet (its announcement, or its adapter,
 * still on the way: on a loaded machine, for many seconds) can then still propose in a
 * view whose lowest key is its own, instead of being refused by every peer whose set
 * lacks it; a proposer that ranks below a founder this peer knows is refused as before.
 */
export function foundingInTurn(round: number, view: number, proposer: string, turn: string): boolean {
  if (proposer === turn) return true
  const a = foundingKey(round, view, proposer)
  const b = foundingKey(round, view, turn)
  return a < b || (a === b && proposer < turn)
}
