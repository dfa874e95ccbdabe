/**
 * Fetches each payload at most once, from whichever known holder answers first in order
 * of preference (author, then the manifest's proposer, then other members), verified
 * against its hash. Concurrent requests for one hash share one transfer; a payload
 * already in the store costs nothing. This is what keeps a peer's inbound bytes per round
 * close to the sum of the other peers' adapter sizes.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { PayloadTransferError } from './errors.js'
import { DEFAULT_FIRST_BYTE_TIMEOUT_MS, fetchPayload, type PayloadStore, type StreamOpener } from './payload.js'

export interface PayloadFetcherInit {
  open: StreamOpener
  store: PayloadStore
  /** Our own peer id: never a source. */
  self: string
  maxBytes: number
  /** Per-attempt (one source) timeout. */
  attemptTimeoutMs?: number
  /** Pause between passes over all known sources when none could serve. */
  retryDelayMs?: number
  /** Accounting hook: payload bytes received from a peer. */
  onReceived?: (from: string, hash: string, bytes: number) => void
  /** Diagnostics for failed attempts. */
  onAttemptFailed?: (from: string, hash: string, err: PayloadTransferError) => void
  /**
   * Whether a connection to a peer is open now. Each pass asks connected sources first
   * (in order of preference), then the dialable others (sources added with `dial: false`
   * are skipped while not connected): asking a source that is not connected
   * means dialling it, and a dial to a peer that left or is unreachable waits out the dial
   * timeout (10 s). Without it, a replay on a 48-process swarm dialled its way through the
   * member list one timeout at a time (a median of 214 s per replay).
   */
  isConnected?: (peer: string) => boolean
}

export interface FetchRequest {
  size: number
  round: number
  signal: AbortSignal
  /** Passes over the known sources before giving up (default: until the signal aborts). */
  passes?: number
  /**
   * Stop at once (throwing that attempt's error) when this says a failed attempt settles
   * it, e.g. the author of a payload nobody else holds yet served wrong bytes or none.
   * A SILENT attempt reaches it only once that source used up `silenceBudgetMs`.
   */
  giveUpOn?: (source: string, err: PayloadTransferError) => boolean
  /**
   * How long, in all, a source may stay silent (no answer header) before its silence is
   * final (passed to `giveUpOn`). A busy or overloaded honest peer answers late, not never:
   * each silent attempt doubles the next one's first-byte timeout (1 s, 2 s, 4 s, ...), so
   * a slow source is eventually waited for long enough. Without it, silence is never final.
   */
  silenceBudgetMs?: number
}

export class PayloadFetcher {
  readonly #init: PayloadFetcherInit
  readonly #inflight = new Map<string, Promise<Uint8Array>>()
  readonly #sources = new Map<string, string[]>()
  /** Per hash: sources asked only while connected (never dialled for it). */
  readonly #connectedOnly = new Map<string, Set<string>>()
  readonly #wakeups = new Map<string, () => void>()

  constructor(init: PayloadFetcherInit) {
    this.#init = init
  }

  /**
   * Records peers that hold (or should hold) a payload, in order of preference.
   * `dial: false`: peers that may hold it (other members) are asked only while a
   * connection to them is open; the author and the proposer (the default) are dialled.
   */
  addSources(hash: string, peers: Iterable<string>, options: { dial?: boolean } = {}): void {
    let list = this.#sources.get(hash)
    if (list == null) {
      list = []
      this.#sources.set(hash, list)
    }
    let only = this.#connectedOnly.get(hash)
    let added = false
    for (const p of peers) {
      if (p === this.#init.self) continue
      if (options.dial === false) {
        if (list.includes(p)) continue
        if (only == null) this.#connectedOnly.set(hash, (only = new Set()))
        only.add(p)
      } else {
        only?.delete(p)
        if (list.includes(p)) continue
      }
      list.push(p)
      added = true
    }
    if (added) this.#wakeups.get(hash)?.()
  }

  /** Forgets source lists of payloads we no longer fetch (call after pruning the store). */
  forget(hashes: Iterable<string>): void {
    for (const h of hashes) {
      if (this.#inflight.has(h)) continue
      this.#sources.delete(h)
      this.#connectedOnly.delete(h)
    }
  }

  /** The verified payload bytes; from the store if held, else fetched once. */
  async fetch(hash: string, req: FetchRequest): Promise<Uint8Array> {
    const held = this.#init.store.get(hash)
    if (held != null) return held
    let p = this.#inflight.get(hash)
    if (p == null) {
      p = this.#run(hash, req).finally(() => this.#inflight.delete(hash))
      this.#inflight.set(hash, p)
    }
    return raceAbort(p, req.signal)
  }

  async #run(hash: string, req: FetchRequest): Promise<Uint8Array> {
    const bad = new Set<string>()
    // Per source: consecutive silent attempts and the silence they add up to.
    const silence = new Map<string, { strikes: number; ms: number }>()
    let lastErr: PayloadTransferError | undefined
    let passes = 0
    while (!req.signal.aborted && passes++ < (req.passes ?? Number.POSITIVE_INFINITY)) {
      const only = this.#connectedOnly.get(hash)
      const connected = this.#init.isConnected ?? (() => true)
      const up = new Map((this.#sources.get(hash) ?? []).filter((p) => !bad.has(p)).map((p) => [p, connected(p)] as const))
      const known = [...up.keys()].filter((p) => up.get(p) === true || only?.has(p) !== true)
      const candidates = [...known.filter((p) => up.get(p) === true), ...known.filter((p) => up.get(p) !== true)]
      for (const source of candidates) {
        if (req.signal.aborted) break
        const quiet = silence.get(source) ?? { strikes: 0, ms: 0 }
        const firstByteTimeoutMs = firstByteTimeout(quiet, req.silenceBudgetMs)
        try {
          const bytes = await fetchPayload(this.#init.open, peerIdFromString(source), {
            hash,
            expectedSize: req.size,
            maxBytes: this.#init.maxBytes,
            signal: req.signal,
            timeoutMs: this.#init.attemptTimeoutMs ?? 60_000,
            firstByteTimeoutMs,
          })
          this.#init.store.putVerified(hash, bytes, req.round)
          this.#init.onReceived?.(source, hash, bytes.byteLength)
          return bytes
        } catch (err) {
          const e = err instanceof PayloadTransferError ? err : new PayloadTransferError('PROTOCOL', String(err))
          lastErr = e
          if (e.code === 'ABORTED') break
          // A peer that sent wrong bytes is not asked again for this payload.
          if (e.code === 'HASH_MISMATCH' || e.code === 'SIZE_MISMATCH' || e.code === 'TOO_LARGE' || e.code === 'PROTOCOL') bad.add(source)
          this.#init.onAttemptFailed?.(source, hash, e)
          if (e.code === 'SILENT') {
            silence.set(source, { strikes: quiet.strikes + 1, ms: quiet.ms + firstByteTimeoutMs })
            // Not final yet: a late answer is still an answer.
            if (req.silenceBudgetMs == null || quiet.ms + firstByteTimeoutMs < req.silenceBudgetMs) continue
          } else {
            silence.delete(source)
          }
          if (req.giveUpOn?.(source, e) === true) throw e
        }
      }
      if (req.signal.aborted) break
      await this.#waitForSources(hash, req.signal)
    }
    throw new PayloadTransferError(
      req.signal.aborted ? 'ABORTED' : 'NOT_FOUND',
      `payload ${hash.slice(0, 12)} not fetched${lastErr ? ` (last error: ${lastErr.message})` : ''}`,
      { cause: lastErr },
    )
  }

  /** Waits for a new source or the retry delay, whichever comes first. */
  async #waitForSources(hash: string, signal: AbortSignal): Promise<void> {
    let resolve!: () => void
    const promise = new Promise<void>((r) => {
      resolve = r
    })
    const timer = setTimeout(resolve, this.#init.retryDelayMs ?? 250)
    const onAbort = (): void => resolve()
    signal.addEventListener('abort', onAbort, { once: true })
    this.#wakeups.set(hash, resolve)
    try {
      await promise
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      this.#wakeups.delete(hash)
    }
  }
}

/** The next attempt's first-byte timeout: doubling with each silent attempt, within the silence budget. */
function firstByteTimeout(quiet: { strikes: number; ms: number }, budgetMs: number | undefined): number {
  const doubled = DEFAULT_FIRST_BYTE_TIMEOUT_MS * 2 ** Math.min(quiet.strikes, 16)
  const left = budgetMs == null ? Number.POSITIVE_INFINITY : budgetMs - quiet.ms
  return Math.max(1, Math.min(doubled, left, MAX_FIRST_BYTE_TIMEOUT_MS))
}

/** No single attempt waits longer than this for an answer header (the transfer has its own timeout). */
const MAX_FIRST_BYTE_TIMEOUT_MS = 60_000

async function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw new PayloadTransferError('ABORTED', 'aborted')
  let reject!: (err: Error) => void
  const promise = new Promise<never>((_, rj) => {
    reject = rj
  })
  const onAbort = (): void => reject(new PayloadTransferError('ABORTED', 'aborted'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await Promise.race([p, promise])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
