/**
 * `/flora/payload/1.0.0`: content-addressed payload transfer over a dedicated stream.
 *
 *   client -> server  frame: {"hash": "<sha256 hex>"}
 *   server -> client  frame: {"status":"ok","size":N} | {"status":"not-found"}
 *                     then ceil(N / chunk) frames of raw bytes, then close
 *
 * Any peer that holds a payload serves it, whoever authored it. The client checks the size
 * against the announced one and the swarm's cap, buffers only what arrives, and checks the sha256 of what arrived
 * against the hash it asked for; nothing unverified leaves `fetchPayload`. gossipsub could
 * not carry these bytes (4 MiB cap, and every mesh link would carry a copy).
 */
import { createHash } from 'node:crypto'
import { z } from 'zod'
import type { PeerId, Stream } from '@libp2p/interface'
import { canonicalBytes } from './canonical.js'
import { PayloadTransferError } from './errors.js'
import { abortStreamOn, readFrames, sendFrame } from './stream-io.js'

export const PAYLOAD_PROTOCOL = '/flora/payload/1.0.0'
/** Data frame size: large enough to amortise framing, small enough to interleave streams. */
export const PAYLOAD_CHUNK_BYTES = 1 << 20
const MAX_CONTROL_FRAME = 1024

const RequestSchema = z.strictObject({ hash: z.string().regex(/^[0-9a-f]{64}$/) })
const ResponseSchema = z.discriminatedUnion('status', [
  z.strictObject({ status: z.literal('ok'), size: z.number().int().min(0).max(2 ** 40) }),
  z.strictObject({ status: z.literal('not-found') }),
])

const decoder = new TextDecoder()
function parseFrame<T>(schema: z.ZodType<T>, bytes: Uint8Array): T | null {
  try {
    const r = schema.safeParse(JSON.parse(decoder.decode(bytes)))
    return r.success ? r.data : null
  } catch {
    return null
  }
}

interface StoredPayload {
  readonly bytes: Uint8Array
  /** Round the payload belongs to, for pruning. */
  readonly round: number
}

/** The payloads this peer holds and serves, by sha256 hex. */
export class PayloadStore {
  readonly #items = new Map<string, StoredPayload>()

  /** Stores bytes under their sha256 (computed here, never trusted from the caller). */
  put(bytes: Uint8Array, round: number): string {
    const hash = createHash('sha256').update(bytes).digest('hex')
    if (!this.#items.has(hash)) this.#items.set(hash, { bytes, round })
    return hash
  }

  /** Stores bytes already verified against `hash` by the caller (the fetch path). */
  putVerified(hash: string, bytes: Uint8Array, round: number): void {
    if (!this.#items.has(hash)) this.#items.set(hash, { bytes, round })
  }

  get(hash: string): Uint8Array | undefined {
    return this.#items.get(hash)?.bytes
  }

  has(hash: string): boolean {
    return this.#items.has(hash)
  }

  /** Drops payloads of rounds before `minRound`. */
  prune(minRound: number): void {
    for (const [hash, item] of this.#items) if (item.round < minRound) this.#items.delete(hash)
  }

  get size(): number {
    return this.#items.size
  }
}

export interface PayloadServerOptions {
  /** Time a client has to send its request. */
  requestTimeoutMs?: number
  chunkBytes?: number
  /** Called with the number of payload bytes written, for accounting. */
  onServed?: (peer: PeerId, hash: string, bytes: number) => void
}

/** The stream handler that serves payloads from a store. */
export function payloadHandler(store: PayloadStore, options: PayloadServerOptions = {}) {
  const chunk = options.chunkBytes ?? PAYLOAD_CHUNK_BYTES
  return async (stream: Stream, connection: { remotePeer: PeerId }): Promise<void> => {
    const signal = AbortSignal.timeout(options.requestTimeoutMs ?? 10_000)
    const detach = abortStreamOn(stream, signal)
    try {
      const frames = readFrames(stream, MAX_CONTROL_FRAME)
      const first = await frames.next()
      detach()
      const req = first.done === true ? null : parseFrame(RequestSchema, first.value.subarray())
      if (req == null) {
        stream.abort(new Error('malformed payload request'))
        return
      }
      const bytes = store.get(req.hash)
      if (bytes == null) {
        await sendFrame(stream, canonicalBytes({ status: 'not-found' }))
        await stream.close()
        return
      }
      await sendFrame(stream, canonicalBytes({ status: 'ok', size: bytes.byteLength }))
      for (let off = 0; off < bytes.byteLength; off += chunk) {
        await sendFrame(stream, bytes.subarray(off, Math.min(bytes.byteLength, off + chunk)))
      }
      await stream.close()
      options.onServed?.(connection.remotePeer, req.hash, bytes.byteLength)
    } catch (err) {
      detach()
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }
}

/** A payload server answers a request's header at once (it holds the bytes or it does not); the first attempt waits this long, later ones longer (see PayloadFetcher). */
export const DEFAULT_FIRST_BYTE_TIMEOUT_MS = 1000

export type StreamOpener = (peer: PeerId, protocol: string, options: { signal: AbortSignal }) => Promise<Stream>

export interface FetchPayloadOptions {
  hash: string
  /** Size announced for the payload; a different size is refused before any data is read. */
  expectedSize?: number
  /** Hard cap on the payload size. */
  maxBytes: number
  signal?: AbortSignal
  /** Whole-transfer timeout. */
  timeoutMs?: number
  /** Time for the response header to arrive once the request is sent (default 1 s): a server that says nothing is SILENT. */
  firstByteTimeoutMs?: number
}

/** Fetches one payload from one peer and verifies it. Throws PayloadTransferError. */
export async function fetchPayload(open: StreamOpener, peer: PeerId, options: FetchPayloadOptions): Promise<Uint8Array> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 60_000)
  const signal = options.signal == null ? timeout : AbortSignal.any([options.signal, timeout])
  const fail = (): PayloadTransferError =>
    options.signal?.aborted === true
      ? new PayloadTransferError('ABORTED', `fetch of ${options.hash.slice(0, 12)} from ${peer} aborted`)
      : new PayloadTransferError('TIMEOUT', `fetch of ${options.hash.slice(0, 12)} from ${peer} timed out`)

  let stream: Stream
  try {
    stream = await open(peer, PAYLOAD_PROTOCOL, { signal })
  } catch (err) {
    if (signal.aborted) throw fail()
    throw new PayloadTransferError('UNREACHABLE', `cannot open ${PAYLOAD_PROTOCOL} to ${peer}: ${(err as Error).message}`, { cause: err })
  }
  const detach = abortStreamOn(stream, signal)
  try {
    await sendFrame(stream, canonicalBytes({ hash: options.hash }), signal)
    const frames = readFrames(stream, Math.max(PAYLOAD_CHUNK_BYTES, 4 << 20))
    const firstByte = options.firstByteTimeoutMs ?? DEFAULT_FIRST_BYTE_TIMEOUT_MS
    let silent: NodeJS.Timeout | undefined
    const head = await Promise.race([
      frames.next(),
      new Promise<never>((_, reject) => {
        // On expiry, let pending I/O run first (setImmediate follows the poll phase): an
        // answer already in our socket buffer is not silence, however busy this process is.
        silent = setTimeout(
          () => setImmediate(() => reject(new PayloadTransferError('SILENT', `${peer} sent no answer within ${firstByte} ms`))),
          firstByte,
        )
      }),
    ]).finally(() => clearTimeout(silent))
    if (head.done === true) throw new PayloadTransferError('PROTOCOL', `${peer} closed the stream without an answer`)
    const res = parseFrame(ResponseSchema, head.value.subarray())
    if (res == null) throw new PayloadTransferError('PROTOCOL', `malformed response header from ${peer}`)
    if (res.status === 'not-found') throw new PayloadTransferError('NOT_FOUND', `${peer} does not hold ${options.hash.slice(0, 12)}`)
    if (res.size > options.maxBytes) {
      throw new PayloadTransferError('TOO_LARGE', `${peer} offers ${res.size} bytes, cap is ${options.maxBytes}`)
    }
    if (options.expectedSize !== undefined && res.size !== options.expectedSize) {
      throw new PayloadTransferError('SIZE_MISMATCH', `${peer} offers ${res.size} bytes, announced ${options.expectedSize}`)
    }
    // Memory grows with the bytes that actually arrive, never with what the peer declared.
    const parts: Uint8Array[] = []
    const hasher = createHash('sha256')
    let got = 0
    for await (const frame of { [Symbol.asyncIterator]: () => frames }) {
      if (got + frame.byteLength > res.size) {
        throw new PayloadTransferError('SIZE_MISMATCH', `${peer} sent more than the ${res.size} bytes it declared`)
      }
      for (const part of frame) {
        parts.push(part)
        hasher.update(part)
        got += part.byteLength
      }
    }
    if (got !== res.size) throw new PayloadTransferError('SIZE_MISMATCH', `${peer} sent ${got} of ${res.size} bytes`)
    const out = parts.length === 1 && parts[0].byteOffset === 0 && parts[0].byteLength === parts[0].buffer.byteLength ? parts[0] : concat(parts, got)
    const digest = hasher.digest('hex')
    if (digest !== options.hash) {
      throw new PayloadTransferError('HASH_MISMATCH', `${peer} sent bytes hashing to ${digest.slice(0, 12)}, asked ${options.hash.slice(0, 12)}`)
    }
    await stream.close({ signal }).catch(() => {})
    return out
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    if (err instanceof PayloadTransferError) throw err
    if (signal.aborted) throw fail()
    throw new PayloadTransferError('PROTOCOL', `transfer from ${peer} failed: ${(err as Error).message}`, { cause: err })
  } finally {
    detach()
  }
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total)
  let off = 0
  for (const p of parts) {
    out.set(p, off)
    off += p.byteLength
  }
  return out
}
