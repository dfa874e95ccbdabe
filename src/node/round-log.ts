/**
 * The per-round record: the signed manifest that decided the round, the precommit
 * certificate that made it final, the state hash it led to and the membership it
 * recorded. Records chain by parentStateHash from the swarm's genesis state hash, so the
 * log is a verifiable history of who contributed what and who certified it, and what a
 * restarted or late peer needs to catch up (see docs/FEDERATION.md, "State sync").
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { SignedManifest, SignedVote } from '../gossip/messages.js'
import { manifestValueHash } from '../gossip/sign.js'
import { memberIds, quorumFor, type Membership, type QuorumRule } from './membership.js'

export interface RoundRecord {
  readonly round: number
  readonly parentStateHash: string
  readonly stateHash: string
  readonly manifest: SignedManifest
  /** Precommits of a quorum of the previous record's members for the manifest's value. */
  readonly certificate: readonly SignedVote[]
  /** The membership after this round (M_r): round r+1's voters and proposer order. */
  readonly members: Membership
  /** Peer ids whose adapters the round merged, in canonical (manifest) order. */
  readonly contributors: readonly string[]
  readonly committedAt: number
}

export class RoundLog {
  readonly #records: RoundRecord[] = []
  readonly #file: string | undefined
  readonly #mirror: string | undefined
  /** Last round already in each file (a restarted peer's files may hold rounds it replays again). */
  #fileLast = 0
  #mirrorLast = 0

  /**
   * @param options.file JSON-lines file every commit is appended to (the state dir's)
   * @param options.records records already on disk (a restarted peer's chain), in order
   * @param options.mirror a second JSON-lines file (`--records`) that gets each round once
   */
  constructor(options: { file?: string; records?: readonly RoundRecord[]; mirror?: string } = {}) {
    this.#file = options.file
    this.#mirror = options.mirror
    if (options.file != null) this.#fileLast = lastRecordedRoundSync(options.file)
    if (options.mirror != null) this.#mirrorLast = lastRecordedRoundSync(options.mirror)
    for (const r of options.records ?? []) {
      const last = this.last
      if (last != null && (r.round !== last.round + 1 || r.parentStateHash !== last.stateHash)) throw new Error(`round log: record ${r.round} does not extend ${last.round}`)
      this.#records.push(r)
    }
  }

  get last(): RoundRecord | undefined {
    return this.#records.at(-1)
  }

  get(round: number): RoundRecord | undefined {
    // Rounds are consecutive from the first record's round.
    const first = this.#records[0]
    if (first == null) return undefined
    return this.#records[round - first.round]
  }

  all(): readonly RoundRecord[] {
    return this.#records
  }

  append(record: RoundRecord): void {
    const last = this.last
    if (last != null && (record.round !== last.round + 1 || record.parentStateHash !== last.stateHash)) {
      throw new Error(`round log: record ${record.round} does not extend ${last.round} (${last.stateHash.slice(0, 12)})`)
    }
    this.#records.push(record)
    this.#persist('commit', record)
  }

  /** Records are written synchronously on commit; kept for callers that await it. */
  async flush(): Promise<void> {}

  /**
   * Appends the record and fsyncs it before the commit is announced to anyone (events,
   * the CLI's output): a peer killed right after a round completes still has it on disk.
   */
  #persist(type: 'commit', record: RoundRecord): void {
    const line = `${JSON.stringify({ type, ...record })}\n`
    if (this.#file != null && record.round > this.#fileLast) {
      appendSynced(this.#file, line)
      this.#fileLast = record.round
    }
    if (this.#mirror != null && record.round > this.#mirrorLast) {
      appendSynced(this.#mirror, line)
      this.#mirrorLast = record.round
    }
  }
}

function appendSynced(file: string, line: string): void {
  mkdirSync(dirname(file), { recursive: true })
  const fd = openSync(file, 'a')
  try {
    writeSync(fd, line)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * The last committed round in a records file (0 when there is none): a restarted peer
 * that had committed rounds must not found a new chain from genesis.
 */
export async function lastRecordedRound(file: string): Promise<number> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
  return lastRoundIn(text)
}

function lastRecordedRoundSync(file: string): number {
  try {
    return lastRoundIn(readFileSync(file, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
}

function lastRoundIn(text: string): number {
  let last = 0
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    try {
      const r = JSON.parse(line) as { round?: unknown }
      if (typeof r.round === 'number' && Number.isInteger(r.round)) last = Math.max(last, r.round)
    } catch {
      // a torn last line (crash mid-append): the rounds before it stand
    }
  }
  return last
}

/**
 * Checks that records chain from `genesis` round by round and that every round is
 * certified: precommits for the manifest's value from a quorum of the members the previous
 * record holds (founding round: of the manifest's authors, at least a quorum of minPeers).
 * Signatures are not checked here (verifyQuorumVotes does). Returns the first broken round or null.
 */
export function verifyChain(records: readonly RoundRecord[], genesis: string, policy: { quorum: QuorumRule; minPeers: number } = { quorum: 'majority', minPeers: 1 }): number | null {
  let parent = genesis
  let round = records[0]?.round ?? 1
  let members: readonly string[] = []
  for (const r of records) {
    if (r.round !== round || r.parentStateHash !== parent || r.manifest.body.newStateHash !== r.stateHash) return r.round
    if (r.manifest.body.parentStateHash !== r.parentStateHash || r.manifest.body.round !== r.round) return r.round
    const value = manifestValueHash(r.manifest.body)
    const views = new Set(r.certificate.map((v) => v.body.view))
    if (views.size !== 1) return r.round
    const { eligible, needed } = quorumFor(members, r.manifest.body.entries.map((e) => e.peerId), policy.quorum, policy.minPeers)
    const voters = new Set(
      r.certificate.filter((v) => v.body.phase === 'precommit' && v.body.valueHash === value && v.body.round === r.round && eligible.has(v.body.voter)).map((v) => v.body.voter),
    )
    if (voters.size < needed) return r.round
    members = memberIds(r.members)
    parent = r.stateHash
    round++
  }
  return null
}
