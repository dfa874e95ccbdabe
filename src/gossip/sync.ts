/**
 * `/flora/sync/1.0.0`: how a peer that is behind (restarted, late, the minority side of a
 * partition) learns the swarm's certified chain from any member. One request per stream:
 *
 *   {"type":"head"}                              -> {"status":"ok","round":R,"stateHash":H,"snapshots":[...]}
 *   {"type":"commits","from":r,"limit":n}        -> {"status":"ok","commits":[CommitMessage, ...]}
 *   {"type":"snapshot","round":r,"offset":o,"length":n}
 *                                                -> {"status":"ok","round":r,"total":T} then n bytes in frames
 *                                                 | {"status":"not-found"}
 *
 * Commits are the rounds' manifests with their precommit certificates, in round order
 * from `from`; everything else of a round record (parent, state hash, membership) follows
 * from them and the chain before. Nothing a server says is trusted: the client checks
 * shapes and caps here, and src/node/state-sync.ts checks every signature, quorum, hash
 * and replay before a byte of it is used. A snapshot is the serialized head state of a
 * round (src/node/snapshot.ts), fetched in chunks so memory stays bounded and a broken
 * transfer resumes where it stopped.
 */
import { z } from 'zod'
import type { PeerId, Stream } from '@libp2p/interface'
import { canonicalBytes } from './canonical.js'
import { PayloadTransferError } from './errors.js'
import { CommitMessageSchema, type CommitMessage } from './messages.js'
import type { StreamOpener } from './payload.js'
import { abortStreamOn, readFrames, sendFrame } from './stream-io.js'

export const SYNC_PROTOCOL = '/flora/sync/1.0.0'
/** Commits per response (a server may send fewer). */
export const MAX_SYNC_COMMITS = 64
/** Largest response frame: a batch of commits with their certificates. */
export const MAX_SYNC_FRAME_BYTES = 32 << 20
/** Largest snapshot chunk one request may ask for. */
export const MAX_SNAPSHOT_CHUNK_BYTES = 8 << 20
const DATA_FRAME_BYTES = 1 << 20
const MAX_REQUEST_FRAME = 1024

const hex64 = z.string().regex(/^[0-9a-f]{64}$/)
const round = z.number().int().min(0).max(2 ** 31 - 1)

const RequestSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('head') }),
  z.strictObject({ type: z.literal('commits'), from: round.min(1), limit: z.number().int().min(1).max(MAX_SYNC_COMMITS) }),
  z.strictObject({
    type: z.literal('snapshot'),
    round,
    offset: z.number().int().min(0).max(2 ** 48),
    length: z.number().int().min(1).max(MAX_SNAPSHOT_CHUNK_BYTES),
  }),
])
export type SyncRequest = z.infer<typeof RequestSchema>

const HeadResponseSchema = z.strictObject({
  status: z.literal('ok'),
  round,
  stateHash: hex64,
  /** Rounds whose head snapshot the server can send. */
  snapshots: z.array(round).max(16),
})
export type SyncHead = Omit<z.infer<typeof HeadResponseSchema>, 'status'>

const CommitsResponseSchema = z.strictObject({ status: z.literal('ok'), commits: z.array(CommitMessageSchema).max(MAX_SYNC_COMMITS) })
const SnapshotResponseSchema = z.discriminatedUnion('status', [
  z.strictObject({ status: z.literal('ok'), round, total: z.number().int().min(1).max(2 ** 48) }),
  z.strictObject({ status: z.literal('not-found') }),
])

/** What a member serves: its head, its certified commits, its head snapshots. */
export interface SyncSource {
  head(): SyncHead
  /** Certified commits from round `from` on, at most `limit`, in round order. */
  commits(from: number, limit: number): readonly CommitMessage[]
  /** A snapshot of the head state at `round`, if this peer still has it. */
  snapshot(round: number): Promise<SnapshotReader | undefined>
}

export interface SnapshotReader {
  readonly total: number
  read(offset: number, length: number): Promise<Uint8Array>
}

const decoder = new TextDecoder()
function parseJson<T>(schema: z.ZodType<T>, bytes: Uint8Array): T | null {
  try {
    const r = schema.safeParse(JSON.parse(decoder.decode(bytes)))
    return r.success ? r.data : null
  } catch {
    return null
  }
}

const encoder = new TextEncoder()

/** The stream handler serving a SyncSource. */
export function syncHandler(source: SyncSource, options: { requestTimeoutMs?: number } = {}) {
  return async (stream: Stream): Promise<void> => {
    const signal = AbortSignal.timeout(options.requestTimeoutMs ?? 10_000)
    const detach = abortStreamOn(stream, signal)
    try {
      const frames = readFrames(stream, MAX_REQUEST_FRAME)
      const first = await frames.next()
      detach()
      const req = first.done === true ? null : parseJson(RequestSchema, first.value.subarray())
      if (req == null) {
        stream.abort(new Error('malformed sync request'))
        return
      }
      switch (req.type) {
        case 'head':
          await sendFrame(stream, canonicalBytes({ status: 'ok', ...source.head() } as never))
          break
        case 'commits': {
          // Plain JSON: commits hold floats (alpha) the canonical encoder need not accept.
          const commits: CommitMessage[] = []
          let bytes = 0
          for (const c of source.commits(req.from, req.limit)) {
            bytes += JSON.stringify(c).length
            if (bytes > MAX_SYNC_FRAME_BYTES - 1024 && commits.length > 0) break
            commits.push(c)
          }
          await sendFrame(stream, encoder.encode(JSON.stringify({ status: 'ok', commits })))
          break
        }
        case 'snapshot': {
          const snap = await source.snapshot(req.round)
          if (snap == null || req.offset >= snap.total) {
            await sendFrame(stream, canonicalBytes({ status: 'not-found' }))
            break
          }
          const end = Math.min(snap.total, req.offset + req.length)
          await sendFrame(stream, canonicalBytes({ status: 'ok', round: req.round, total: snap.total }))
          for (let off = req.offset; off < end; off += DATA_FRAME_BYTES) {
            await sendFrame(stream, await snap.read(off, Math.min(DATA_FRAME_BYTES, end - off)))
          }
          break
        }
      }
      await stream.close()
    } catch (err) {
      detach()
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }
}

async function request<T>(
  open: StreamOpener,
  peer: PeerId,
  req: SyncRequest,
  signal: AbortSignal,
  read: (frames: AsyncGenerator<{ subarray(): Uint8Array; byteLength: number } & Iterable<Uint8Array>, void, unknown>) => Promise<T>,
): Promise<T> {
  let stream: Stream
  try {
    stream = await open(peer, SYNC_PROTOCOL, { signal })
  } catch (err) {
    throw new PayloadTransferError('UNREACHABLE', `cannot open ${SYNC_PROTOCOL} to ${peer}: ${(err as Error).message}`, { cause: err })
  }
  const detach = abortStreamOn(stream, signal)
  try {
    await sendFrame(stream, canonicalBytes(req as never), signal)
    const out = await read(readFrames(stream, MAX_SYNC_FRAME_BYTES))
    await stream.close({ signal }).catch(() => {})
    return out
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    if (err instanceof PayloadTransferError) throw err
    if (signal.aborted) throw new PayloadTransferError('TIMEOUT', `sync ${req.type} request to ${peer} timed out or was aborted`)
    throw new PayloadTransferError('PROTOCOL', `sync ${req.type} request to ${peer} failed: ${(err as Error).message}`, { cause: err })
  } finally {
    detach()
  }
}

async function firstJson<T>(frames: AsyncGenerator<{ subarray(): Uint8Array }, void, unknown>, schema: z.ZodType<T>, peer: PeerId, what: string): Promise<T> {
  const head = await frames.next()
  const res = head.done === true ? null : parseJson(schema, head.value.subarray())
  if (res == null) throw new PayloadTransferError('PROTOCOL', `malformed sync ${what} response from ${peer}`)
  return res
}

/** A member's head: its last certified round and the snapshots it can send. */
export async function requestHead(open: StreamOpener, peer: PeerId, signal: AbortSignal): Promise<SyncHead> {
  return request(open, peer, { type: 'head' }, signal, async (frames) => {
    const { status: _status, ...head } = await firstJson(frames, HeadResponseSchema, peer, 'head')
    return head
  })
}

/** Certified commits from round `from` on (shape-checked only: verify before use). */
export async function requestCommits(open: StreamOpener, peer: PeerId, from: number, limit: number, signal: AbortSignal): Promise<CommitMessage[]> {
  return request(open, peer, { type: 'commits', from, limit: Math.min(limit, MAX_SYNC_COMMITS) }, signal, async (frames) => {
    const res = await firstJson(frames, CommitsResponseSchema, peer, 'commits')
    return res.commits
  })
}

/**
 * One chunk of a member's head snapshot of `round`: the bytes at [offset, offset+length)
 * (fewer at the end) and the snapshot's total size; undefined when it no longer has it.
 */
export async function requestSnapshotChunk(
  open: StreamOpener,
  peer: PeerId,
  req: { round: number; offset: number; length: number },
  signal: AbortSignal,
): Promise<{ total: number; bytes: Uint8Array } | undefined> {
  const length = Math.min(req.length, MAX_SNAPSHOT_CHUNK_BYTES)
  return request(open, peer, { type: 'snapshot', round: req.round, offset: req.offset, length }, signal, async (frames) => {
    const res = await firstJson(frames, SnapshotResponseSchema, peer, 'snapshot')
    if (res.status === 'not-found') return undefined
    if (res.round !== req.round) throw new PayloadTransferError('PROTOCOL', `${peer} answered a snapshot of round ${res.round}, asked ${req.round}`)
    const want = Math.min(length, res.total - req.offset)
    if (want <= 0) throw new PayloadTransferError('PROTOCOL', `${peer} has a ${res.total}-byte snapshot, asked from offset ${req.offset}`)
    const out = new Uint8Array(want)
    let got = 0
    for await (const frame of { [Symbol.asyncIterator]: () => frames }) {
      if (got + frame.byteLength > want) throw new PayloadTransferError('SIZE_MISMATCH', `${peer} sent more than the ${want} snapshot bytes asked`)
      for (const part of frame) {
        out.set(part, got)
        got += part.byteLength
      }
    }
    if (got !== want) throw new PayloadTransferError('SIZE_MISMATCH', `${peer} sent ${got} of ${want} snapshot bytes`)
    return { total: res.total, bytes: out }
  })
}
