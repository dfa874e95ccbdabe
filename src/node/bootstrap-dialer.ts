/**
 * Keeps dialling a peer's bootstrap addresses until each is connected, backing off per
 * address, and reports every failed attempt (which address, what failed, when the next try
 * is). @libp2p/bootstrap dials once; peers may start in any order, and an address that can
 * never be reached (a loopback address copied to another machine, a firewall, a typo in the
 * port) must say so instead of leaving its peer "waiting for swarm members" in silence.
 */
import type { PeerId } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'

export interface BootstrapTarget {
  readonly addr: string
  readonly id: PeerId
}

export interface BootstrapFailure {
  /** The address as given. */
  readonly addr: string
  /** What failed, one line (e.g. `connect ECONNREFUSED 10.0.0.2:4001`, `timed out after 10 s`). */
  readonly error: string
  /** Failed attempts on this address in a row. */
  readonly attempts: number
  /** When the next attempt is made. */
  readonly retryInMs: number
}

export interface BootstrapDialerOptions {
  /** Dials an address (libp2p.dial). */
  dial(addr: Multiaddr, signal: AbortSignal): Promise<unknown>
  /** Whether the peer is connected already (nothing to dial). */
  connected(id: PeerId): boolean
  /** Whether the peer is refused (another swarm, a flooder): not dialled. */
  refused(id: PeerId): boolean
  onFailure(failure: BootstrapFailure): void
  /** First retry delay (default 2 s); doubles per failure up to maxDelayMs. */
  initialDelayMs?: number
  /** Longest delay between attempts (default 60 s). */
  maxDelayMs?: number
  /** One attempt's time limit (default 10 s). */
  dialTimeoutMs?: number
}

interface Slot {
  readonly target: BootstrapTarget
  failures: number
  nextAt: number
  inFlight: AbortController | undefined
}

/** How often due addresses are checked. */
const TICK_MS = 500

export class BootstrapDialer {
  readonly #o: BootstrapDialerOptions
  readonly #slots: Slot[]
  #timer: NodeJS.Timeout | undefined

  constructor(targets: readonly BootstrapTarget[], options: BootstrapDialerOptions) {
    this.#o = options
    this.#slots = targets.map((target) => ({ target, failures: 0, nextAt: 0, inFlight: undefined }))
  }

  start(): void {
    if (this.#timer != null || this.#slots.length === 0) return
    this.#tick()
    this.#timer = setInterval(() => this.#tick(), TICK_MS)
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer != null) clearInterval(this.#timer)
    this.#timer = undefined
    for (const s of this.#slots) s.inFlight?.abort(new Error('stopping'))
  }

  /** The delay after `failures` failed attempts in a row. */
  static delayAfter(failures: number, initialMs = 2000, maxMs = 60_000): number {
    return Math.min(maxMs, initialMs * 2 ** Math.max(0, failures - 1))
  }

  #tick(): void {
    const now = Date.now()
    for (const s of this.#slots) {
      if (s.inFlight != null || now < s.nextAt) continue
      if (this.#o.connected(s.target.id)) {
        s.failures = 0
        continue
      }
      if (this.#o.refused(s.target.id)) continue
      void this.#attempt(s)
    }
  }

  async #attempt(s: Slot): Promise<void> {
    const ctl = new AbortController()
    s.inFlight = ctl
    const timeoutMs = this.#o.dialTimeoutMs ?? 10_000
    const timer = setTimeout(() => ctl.abort(new Error(`timed out after ${Math.round(timeoutMs / 1000)} s`)), timeoutMs)
    try {
      await this.#o.dial(multiaddr(s.target.addr), ctl.signal)
      s.failures = 0
    } catch (err) {
      if (this.#timer == null) return // stopped meanwhile
      // A dial can fail because another dial to the same peer won (libp2p then reuses it).
      if (this.#o.connected(s.target.id)) return
      s.failures++
      const retryInMs = BootstrapDialer.delayAfter(s.failures, this.#o.initialDelayMs, this.#o.maxDelayMs)
      s.nextAt = Date.now() + retryInMs
      const reason = ctl.signal.aborted ? (ctl.signal.reason as Error).message : describeDialError(err)
      this.#o.onFailure({ addr: s.target.addr, error: reason, attempts: s.failures, retryInMs })
    } finally {
      clearTimeout(timer)
      s.inFlight = undefined
    }
  }
}

/** One line for a libp2p dial error (an AggregateError of per-address errors, or a plain one). */
export function describeDialError(err: unknown): string {
  const errors = err instanceof AggregateError && err.errors.length > 0 ? err.errors : [err]
  const lines = errors.map((e) => {
    const m = e instanceof Error ? e.message : String(e)
    return (m.split('\n')[0] ?? '').trim() || (e instanceof Error ? e.name : 'unknown error')
  })
  return [...new Set(lines)].join('; ')
}
