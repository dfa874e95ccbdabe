/**
 * The peer's state directory (`--state-dir`): what a peer needs to come back after a crash
 * at any instant with nothing lost and nothing half-written.
 *
 *   flora-state.json            which swarm, genesis and peer this directory belongs to
 *   LOCK                        pid of the process using it (a second one is refused)
 *   records.jsonl               the certified chain: one round record per line, fsynced
 *   heads/<round>.safetensors   head snapshots of the last two committed rounds
 *   payloads/<round>-<hash>     the adapters merged in the last `keepRounds` rounds
 *
 * On commit of round r the engine writes, in this order: the round's payloads, the record
 * (the commit point), the head snapshot. Every file but records.jsonl is written to a
 * temporary name, fsynced and renamed, so a reader sees the old file or the new one;
 * records.jsonl is appended and fsynced, and a torn last line is dropped on open. On
 * open, the newest head that verifies is loaded, records past it come back as `pending`
 * (the engine replays them from the kept payloads or syncs them; they stay in the file,
 * which the round log then does not append twice), and anything that does
 * not verify is refused with a message that says what and where, never loaded.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { z } from 'zod'
import { CommitMessageSchema, type CommitMessage } from '../gossip/messages.js'
import type { ModuleShape } from '../lora/types.js'
import type { RoundRecord } from './round-log.js'
import { acquirePidLock, PidLockBusy } from './pid-lock.js'
import { parseSnapshot, serializeSnapshot } from './snapshot.js'
import type { SwarmState } from './state.js'

export const STATE_DIR_FORMAT = 'flora-state'
export const STATE_DIR_VERSION = 1

export class StateDirError extends Error {
  override readonly name = 'StateDirError'
  constructor(
    readonly dir: string,
    detail: string,
  ) {
    super(`state dir ${dir}: ${detail}`)
  }
}

const MetaSchema = z.strictObject({
  format: z.literal(STATE_DIR_FORMAT),
  version: z.literal(STATE_DIR_VERSION),
  swarmId: z.string(),
  genesisStateHash: z.string(),
  peerId: z.string(),
  /** What `flora export` needs to read the state without the swarm config. */
  strategy: z.string(),
  targets: z.array(z.strictObject({ name: z.string(), inFeatures: z.number().int().positive(), outFeatures: z.number().int().positive() })),
  createdAt: z.string(),
})
export type StateDirMeta = z.infer<typeof MetaSchema>

const RecordSchema = z.object({
  type: z.literal('commit'),
  round: z.number().int().min(1),
  parentStateHash: z.string(),
  stateHash: z.string(),
  manifest: CommitMessageSchema.shape.manifest,
  certificate: CommitMessageSchema.shape.certificate,
  members: z.record(z.string(), z.number().int()),
  contributors: z.array(z.string()),
  committedAt: z.number(),
})

export interface StateDirIdentity {
  swarmId: string
  genesisStateHash: string
  peerId: string
}

/** What a new state dir records about its swarm (for `flora export`). */
export interface StateDirSwarm {
  strategy: string
  targets: readonly ModuleShape[]
}

/** Reads a state dir's flora-state.json (throws StateDirError when it is not one). */
export function readStateDirMeta(dir: string): StateDirMeta {
  try {
    const parsed = MetaSchema.safeParse(JSON.parse(readFileSync(join(dir, 'flora-state.json'), 'utf8')))
    if (!parsed.success) throw new Error(parsed.error.issues[0]?.message ?? 'bad fields')
    return parsed.data
  } catch (err) {
    throw new StateDirError(dir, `flora-state.json is missing or not a flora state file (${(err as Error).message})`)
  }
}

export interface LoadedState {
  /** The newest head snapshot that verifies (undefined: start from genesis). */
  head?: SwarmState
  /** Records up to the head's round, in order. */
  records: RoundRecord[]
  /** Certified commits recorded past the head (a crash between record and snapshot). */
  pending: CommitMessage[]
  /** Kept payloads: hash -> { round, bytes } (each verified against its hash). */
  payloads: Map<string, { round: number; bytes: Uint8Array }>
}

function writeAtomic(path: string, data: Uint8Array | string): void {
  const tmp = `${path}.tmp-${process.pid}`
  const fd = openSync(tmp, 'w')
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, path)
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r')
    try {
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch {
    // not supported on every platform; the rename is still atomic
  }
}

export class StateDir {
  readonly dir: string
  readonly #id: StateDirIdentity
  readonly #keepRounds: number
  #release: (() => void) | undefined

  private constructor(dir: string, id: StateDirIdentity, keepRounds: number) {
    this.dir = dir
    this.#id = id
    this.#keepRounds = keepRounds
  }

  /**
   * Opens (or creates) a state dir for this swarm and peer and takes its lock. Refuses a
   * directory of another swarm, genesis or peer id, or one another live process holds.
   */
  static open(dir: string, id: StateDirIdentity, options: { keepRounds?: number; swarm?: StateDirSwarm } = {}): StateDir {
    const sd = new StateDir(dir, id, Math.max(1, options.keepRounds ?? 8))
    mkdirSync(dir, { recursive: true })
    const metaPath = join(dir, 'flora-state.json')
    if (existsSync(metaPath)) {
      const meta = readStateDirMeta(dir)
      if (meta.swarmId !== id.swarmId || meta.genesisStateHash !== id.genesisStateHash) {
        throw new StateDirError(dir, `belongs to swarm ${meta.swarmId.slice(0, 12)}, this peer is configured for swarm ${id.swarmId.slice(0, 12)}: use another --state-dir, or remove this one to start over`)
      }
      if (meta.peerId !== id.peerId) {
        throw new StateDirError(dir, `belongs to peer ${meta.peerId}, this peer is ${id.peerId} (another --identity?): use the identity it was created with, or another --state-dir`)
      }
    } else {
      if (readdirSync(dir).some((f) => !f.startsWith('.'))) {
        throw new StateDirError(dir, 'is not empty and has no flora-state.json: refusing to write flora state into it')
      }
      const swarm = options.swarm ?? { strategy: 'flora', targets: [] }
      const meta: StateDirMeta = {
        format: STATE_DIR_FORMAT,
        version: STATE_DIR_VERSION,
        ...id,
        strategy: swarm.strategy,
        targets: swarm.targets.map((t) => ({ name: t.name, inFeatures: t.inFeatures, outFeatures: t.outFeatures })),
        createdAt: new Date().toISOString(),
      }
      writeAtomic(metaPath, `${JSON.stringify(meta, null, 2)}\n`)
    }
    sd.#lock()
    mkdirSync(join(dir, 'heads'), { recursive: true })
    mkdirSync(join(dir, 'payloads'), { recursive: true })
    for (const sub of ['', 'heads', 'payloads']) {
      for (const f of readdirSync(join(dir, sub))) if (f.includes('.tmp-')) rmSync(join(dir, sub, f), { force: true })
    }
    return sd
  }

  #lock(): void {
    try {
      this.#release = acquirePidLock(join(this.dir, 'LOCK'))
    } catch (err) {
      if (!(err instanceof PidLockBusy)) throw err
      const who = err.holder === process.pid ? `process ${process.pid} (this one: another peer here holds it)` : `process ${err.holder} (another flora-peer?)`
      throw new StateDirError(this.dir, `is in use by ${who}; each peer needs its own --state-dir`)
    }
  }

  /** Releases the lock (the files stay). */
  close(): void {
    this.#release?.()
    this.#release = undefined
  }

  get recordsFile(): string {
    return join(this.dir, 'records.jsonl')
  }

  /**
   * Reads what is on disk. Heads are verified by their hash and against the record of
   * their round; records must chain from genesis (signatures and quorums are checked by
   * the caller, which knows the swarm's rules).
   */
  load(shapes: readonly ModuleShape[]): LoadedState {
    const records = this.#readRecords()
    const heads = this.#headRounds().sort((a, b) => b - a)
    let head: SwarmState | undefined
    const problems: string[] = []
    for (const round of heads) {
      if (round > (records.at(-1)?.round ?? 0)) {
        problems.push(`head ${round} has no record`)
        continue
      }
      try {
        const expect = records[round - 1]?.stateHash
        head = parseSnapshot(readFileSync(join(this.dir, 'heads', `${round}.safetensors`)), shapes, { swarmId: this.#id.swarmId, round, stateHash: expect })
        break
      } catch (err) {
        problems.push(`heads/${round}.safetensors: ${(err as Error).message}`)
      }
    }
    if (head == null && heads.length > 0) {
      throw new StateDirError(this.dir, `no head snapshot verifies (${problems.join('; ')}); refusing to load it: remove the directory to start over (the swarm's members can sync this peer)`)
    }
    const h = head?.round ?? 0
    const kept = records.slice(0, h)
    // Records past the head stay on disk (the round log does not write them twice).
    const pending = records.slice(h).map((r): CommitMessage => ({ kind: 'commit', manifest: r.manifest, certificate: [...r.certificate] }))
    return { head, records: kept, pending, payloads: this.#readPayloads() }
  }

  #readRecords(): RoundRecord[] {
    let text: string
    try {
      text = readFileSync(this.recordsFile, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    const lines = text.split('\n')
    const records: RoundRecord[] = []
    let torn = false
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]
      if (line.trim() === '') continue
      let rec: RoundRecord
      try {
        const parsed = RecordSchema.safeParse(JSON.parse(line))
        if (!parsed.success) throw new Error(parsed.error.issues[0]?.message)
        const { type: _t, ...r } = parsed.data
        rec = r as RoundRecord
      } catch (err) {
        // A torn last line is a crash mid-append: the rounds before it stand.
        if (lines.slice(i + 1).every((l) => l.trim() === '')) {
          torn = true
          break
        }
        throw new StateDirError(this.dir, `records.jsonl line ${i + 1} is corrupt (${(err as Error).message}); refusing to load it`)
      }
      const prev = records.at(-1)
      const parent = prev?.stateHash ?? this.#id.genesisStateHash
      if (rec.round !== (prev?.round ?? 0) + 1 || rec.parentStateHash !== parent || rec.manifest.body.newStateHash !== rec.stateHash) {
        throw new StateDirError(this.dir, `records.jsonl line ${i + 1} (round ${rec.round}) does not extend the chain before it; refusing to load it`)
      }
      records.push(rec)
    }
    if (torn) {
      // Drop the torn tail so the next append starts on a fresh line.
      writeAtomic(this.recordsFile, records.map((r) => `${JSON.stringify({ type: 'commit', ...r })}\n`).join(''))
    }
    return records
  }

  #headRounds(): number[] {
    return readdirSync(join(this.dir, 'heads'))
      .map((f) => /^(\d+)\.safetensors$/.exec(f))
      .filter((m): m is RegExpExecArray => m != null)
      .map((m) => Number(m[1]))
  }

  #readPayloads(): Map<string, { round: number; bytes: Uint8Array }> {
    const out = new Map<string, { round: number; bytes: Uint8Array }>()
    for (const f of readdirSync(join(this.dir, 'payloads'))) {
      const m = /^(\d+)-([0-9a-f]{64})$/.exec(f)
      if (m == null) continue
      const bytes = new Uint8Array(readFileSync(join(this.dir, 'payloads', f)))
      if (createHash('sha256').update(bytes).digest('hex') !== m[2]) {
        rmSync(join(this.dir, 'payloads', f), { force: true }) // corrupt: it can be fetched again
        continue
      }
      out.set(m[2], { round: Number(m[1]), bytes })
    }
    return out
  }

  /** Keeps a payload merged in `round` (idempotent). */
  savePayload(round: number, hash: string, bytes: Uint8Array): void {
    const path = join(this.dir, 'payloads', `${round}-${hash}`)
    if (existsSync(path)) return
    writeAtomic(path, bytes)
  }

  /** Writes the head snapshot of a committed round and drops older ones and old payloads. */
  saveHead(state: SwarmState): void {
    writeAtomic(join(this.dir, 'heads', `${state.round}.safetensors`), serializeSnapshot(state, this.#id.swarmId))
    fsyncDir(join(this.dir, 'heads'))
    for (const r of this.#headRounds()) if (r < state.round - 1) rmSync(join(this.dir, 'heads', `${r}.safetensors`), { force: true })
    const keepFrom = state.round - this.#keepRounds + 1
    for (const f of readdirSync(join(this.dir, 'payloads'))) {
      const m = /^(\d+)-/.exec(f)
      if (m != null && Number(m[1]) < keepFrom) rmSync(join(this.dir, 'payloads', f), { force: true })
    }
  }

  /** Keeps the cumulative update since genesis (CumulativeUpdate.serialize()). */
  saveUpdate(bytes: Uint8Array): void {
    writeAtomic(join(this.dir, 'update.safetensors'), bytes)
  }

  /** The kept cumulative update, if any. */
  loadUpdate(): Uint8Array | undefined {
    try {
      return new Uint8Array(readFileSync(join(this.dir, 'update.safetensors')))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  /** A head snapshot file of `round` still on disk, for serving (size and path). */
  headFile(round: number): { path: string; size: number } | undefined {
    const path = join(this.dir, 'heads', `${round}.safetensors`)
    try {
      return { path, size: statSync(path).size }
    } catch {
      return undefined
    }
  }

  /** Rounds of head snapshots on disk. */
  headRounds(): number[] {
    return this.#headRounds().sort((a, b) => a - b)
  }

  /** Where a snapshot being fetched is written (resumable across restarts). */
  partialSnapshotFile(round: number): string {
    return join(this.dir, 'heads', `sync-${round}.part`)
  }
}
