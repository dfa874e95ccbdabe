/**
 * The per-round record: the signed manifest that decided the round and the state hash it
 * led to. Records chain by parentStateHash from the swarm's genesis state hash, so the log
 * is a verifiable history of who contributed what, and what a restarted or late peer
 * needs to catch up (a snapshot at some round plus the manifests since, each step checked
 * by hash; see docs/FEDERATION.md, "State sync").
 */
import { appendFile, mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { SignedManifest } from '../gossip/messages.js'

export interface RoundRecord {
  readonly round: number
  readonly parentStateHash: string
  readonly stateHash: string
  readonly manifest: SignedManifest
  /** Peer ids whose adapters the round merged, in canonical (manifest) order. */
  readonly contributors: readonly string[]
  readonly committedAt: number
}

export class RoundLog {
  readonly #records: RoundRecord[] = []
  readonly #file: string | undefined
  #writes: Promise<void> = Promise.resolve()

  /** @param file optional JSON-lines file that every commit and supersede is appended to */
  constructor(options: { file?: string } = {}) {
    this.#file = options.file
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

  /** Replaces the last record by a competing manifest of the same round (one-round rollback). */
  replaceLast(record: RoundRecord): void {
    const last = this.last
    if (last == null || last.round !== record.round || last.parentStateHash !== record.parentStateHash) {
      throw new Error(`round log: record ${record.round} cannot replace the last record`)
    }
    this.#records[this.#records.length - 1] = record
    this.#persist('supersede', record)
  }

  /** Resolves when every record so far is on disk. */
  async flush(): Promise<void> {
    await this.#writes
  }

  #persist(type: 'commit' | 'supersede', record: RoundRecord): void {
    const file = this.#file
    if (file == null) return
    const line = `${JSON.stringify({ type, ...record })}\n`
    this.#writes = this.#writes.then(async () => {
      await mkdir(dirname(file), { recursive: true })
      await appendFile(file, line)
    })
  }
}

/** Checks that records chain from `genesis` round by round; returns the first broken round or null. */
export function verifyChain(records: readonly RoundRecord[], genesis: string): number | null {
  let parent = genesis
  let round = records[0]?.round ?? 1
  for (const r of records) {
    if (r.round !== round || r.parentStateHash !== parent || r.manifest.body.newStateHash !== r.stateHash) return r.round
    if (r.manifest.body.parentStateHash !== r.parentStateHash || r.manifest.body.round !== r.round) return r.round
    parent = r.stateHash
    round++
  }
  return null
}
