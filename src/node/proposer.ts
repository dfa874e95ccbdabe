/**
 * Rotating proposer (DESIGN decision 3): for round r, members are ordered by
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
