/**
 * Agreement on one round, as a state machine with no I/O: `handle(event)` updates the
 * state and returns the effects the driver (engine.ts) must perform: propose, replay a
 * proposal, publish a vote, commit, reject, wake me at time t. Time enters only through
 * events (`now`), so the machine is tested table-driven without libp2p or clocks
 * (test/node/round-machine.test.ts) and the same events always give the same effects.
 *
 * The protocol is Tendermint's, reduced to what a round needs (docs/FEDERATION.md,
 * "Agreement"):
 * - views v = 0, 1, 2, ... each with one proposer: position v (mod n) of the round's
 *   proposer order over the recorded membership M_{r-1}. View 0 opens at the round start,
 *   view v >= 1 at deadline + v * grace (a view whose proposer is known absent is skipped
 *   at once). A proposal counts only from the view's proposer, and only once the view is
 *   open by the receiver's clock (minus `skewMs`); earlier ones wait for their view.
 * - prevote: a member that replays the view's proposal to its state hash prevotes its
 *   value, unless it is locked on another value (and the proposal carries no prevote
 *   quorum from a view at or after the lock) or, for a fresh view-0 proposal, the proposal
 *   omits an adapter the member held well before it (censorship).
 * - precommit: on a prevote quorum for the value of a view's proposal, a member locks on it
 *   and precommits.
 * - commit: a precommit quorum (of any view) for a value it has replayed decides the round.
 * A member votes in any view open by its clock, as long as it signed no vote in a later
 * view (a late vote is the one a slower clock would have cast on time; see #votable).
 * A member signs at most one prevote and one precommit per view; a second, different one
 * from the same voter is reported as equivocation and not counted. Safety (no two values
 * certified for one round) holds whatever the timing; liveness needs a quorum of members
 * connected and responsive.
 */
import { foundingInTurn, foundingProposer, proposerOrder } from './proposer.js'
import { quorumFor, type QuorumRule } from './membership.js'
import type { RejectReason } from '../gossip/errors.js'

export type Phase = 'prevote' | 'precommit'

/** Views are bounded (the message schema's cap); a round that needs more has long stalled. */
export const MAX_VIEW = 1_000_000

export interface MachineInit {
  readonly round: number
  readonly self: string
  /** The recorded membership M_{r-1} (sorted); empty: round 1 founds the chain. */
  readonly members: readonly string[]
  readonly quorum: QuorumRule
  /** The swarm's minPeers (founding quorum). */
  readonly minPeers: number
  readonly startedAt: number
  readonly deadlineMs: number
  readonly graceMs: number
  /** Clock skew tolerated when checking that a proposal's view is open. */
  readonly skewMs: number
  /** False for a peer that must not take part (it is behind the swarm): it only follows certificates. */
  readonly canVote: boolean
}

/** What the machine needs to know of a signature-checked proposal. */
export interface ProposalInfo<P> {
  readonly id: string
  readonly view: number
  readonly proposer: string
  readonly valueHash: string
  readonly newStateHash: string
  /** Authors of its entries (founding quorum, censorship check). */
  readonly authors: readonly string[]
  readonly lockView: number
  /** Voters of its justifying prevotes (at lockView, for this value). */
  readonly justifyVoters: readonly string[]
  readonly ref: P
}

export interface VoteInfo<V> {
  readonly view: number
  readonly phase: Phase
  readonly voter: string
  readonly valueHash: string
  readonly newStateHash: string
  readonly ref: V
}

export type MachineEvent<P, V> =
  | { readonly type: 'tick'; readonly now: number }
  /** Whether the driver holds (or has refused) the adapter of every member it expects. */
  | { readonly type: 'collection'; readonly now: number; readonly complete: boolean }
  /** Members whose proposer turn is skipped (not connected, or known to be behind). */
  | { readonly type: 'absent'; readonly now: number; readonly peers: readonly string[] }
  /** Founding round only: the peers this one knows take part (self, ready members, announcers). */
  | { readonly type: 'candidates'; readonly now: number; readonly peers: readonly string[] }
  /** A proposal (signatures checked). `certified`: it came with a precommit quorum (no turn check). */
  | { readonly type: 'proposal'; readonly now: number; readonly proposal: ProposalInfo<P>; readonly certified?: boolean }
  /** The driver's replay of a proposal: ok when it reaches the proposal's state hash. */
  | { readonly type: 'verified'; readonly now: number; readonly id: string; readonly ok: boolean; readonly censored?: readonly string[]; readonly detail?: string }
  | { readonly type: 'vote'; readonly now: number; readonly vote: VoteInfo<V> }

export type MachineEffect<P, V> =
  /** Build and publish a proposal for `view`; `reuse`: re-propose that proposal's value with the given prevotes. */
  | { readonly type: 'propose'; readonly view: number; readonly reuse?: { readonly proposal: P; readonly lockView: number; readonly justify: readonly V[] } }
  /** Replay this proposal and answer with a `verified` event. */
  | { readonly type: 'verify'; readonly id: string; readonly proposal: P }
  | { readonly type: 'vote'; readonly phase: Phase; readonly view: number; readonly valueHash: string; readonly newStateHash: string }
  /** The round is decided: the proposal's value, certified by these precommits. */
  | { readonly type: 'commit'; readonly view: number; readonly proposal: P; readonly certificate: readonly V[] }
  | { readonly type: 'reject'; readonly peer: string; readonly reason: RejectReason; readonly detail: string }
  /** Call `tick` at this time (the earliest pending deadline; replaces any earlier request; asked for again after every tick). */
  | { readonly type: 'wake'; readonly at: number }

interface Held<P> {
  readonly info: ProposalInfo<P>
  /** undefined: not replayed yet. */
  verified?: boolean
  verifying: boolean
  censored: readonly string[]
  certified: boolean
}

export class RoundMachine<P, V> {
  readonly init: MachineInit
  #view = 0
  #now: number
  #complete = false
  #absent = new Set<string>()
  #candidates = new Set<string>()
  readonly #proposals = new Map<string, Held<P>>()
  /** Votes by `${phase}:${view}` then voter. */
  readonly #votes = new Map<string, Map<string, VoteInfo<V>>>()
  readonly #myVotes = new Map<string, string>()
  readonly #proposed = new Set<number>()
  /** The latest view this peer signed a vote in (-1: none yet). */
  #lastVoted = -1
  /** Highest view each voter has voted in (view synchronisation). */
  readonly #highest = new Map<string, number>()
  #locked: { valueHash: string; view: number } | undefined
  /** Highest prevote quorum seen for a value we replayed: what we re-propose. */
  #valid: { valueHash: string; view: number } | undefined
  #decided = false
  #lastWake = -1

  constructor(init: MachineInit) {
    this.init = init
    this.#now = init.startedAt
    this.#candidates.add(init.self)
  }

  get view(): number {
    return this.#view
  }

  get decided(): boolean {
    return this.#decided
  }

  get locked(): { valueHash: string; view: number } | undefined {
    return this.#locked
  }

  get founding(): boolean {
    return this.init.members.length === 0
  }

  #order: string[] | undefined

  /** The proposer order of this round (over M_{r-1}, or the founding candidates). */
  order(): string[] {
    this.#order ??= proposerOrder(this.init.round, this.founding ? this.#candidates : this.init.members)
    return this.#order
  }

  #addCandidates(peers: Iterable<string>): void {
    for (const p of peers) {
      if (this.#candidates.has(p)) continue
      this.#candidates.add(p)
      this.#order = undefined
      this.#foundingTurns.clear()
    }
  }

  readonly #foundingTurns = new Map<number, string>()

  /** The proposer of a view: position view (mod n) of the order, or (founding) see foundingProposer. */
  proposerOf(view: number): string {
    if (this.founding) {
      let p = this.#foundingTurns.get(view)
      if (p == null) {
        p = foundingProposer(this.init.round, view, this.#candidates)
        this.#foundingTurns.set(view, p)
      }
      return p
    }
    const order = this.order()
    return order[view % order.length]
  }

  /**
   * Whether `proposer` may propose in `view`: it is the view's proposer, or (founding) it
   * would be were it among our candidates (see foundingInTurn).
   */
  inTurn(proposer: string, view: number): boolean {
    const turn = this.proposerOf(view)
    if (proposer === turn) return true
    return this.founding && foundingInTurn(this.init.round, view, proposer, turn)
  }

  /**
   * When `view` opens by this peer's clock: view 1 at deadline + grace, view k (k > 1) k x
   * grace after view k - 1, so each view lasts one grace longer than the one before, as Tendermint's timeouts
   * grow with its rounds: whatever the replay and gossip latency, some view outlasts it,
   * so peers whose clocks started far apart or whose replays take minutes (a large swarm
   * on a loaded machine) end up voting in the same view. (Growing once per rotation
   * through the proposer order left a 48-member swarm 48 views of one grace each: views
   * of 15 s against replays of minutes spread its votes over views 7 to 29.)
   */
  openAt(view: number): number {
    const { startedAt, deadlineMs, graceMs } = this.init
    const order = this.order()
    // Skipping absent proposers makes sense only while someone is left to propose.
    const skip = order.some((p) => !this.#absent.has(p))
    let at = startedAt
    let floor = startedAt + deadlineMs
    for (let k = 1; k <= view; k++) {
      const length = graceMs * k
      floor += length
      if (skip && this.#absent.has(this.proposerOf(k - 1))) continue
      at = k === 1 ? startedAt + deadlineMs + graceMs : Math.max(at + length, floor)
    }
    return at
  }

  handle(event: MachineEvent<P, V>): MachineEffect<P, V>[] {
    const out: MachineEffect<P, V>[] = []
    if (this.#decided) return out
    this.#now = Math.max(this.#now, event.now)
    switch (event.type) {
      case 'tick':
        // A tick is the driver's timer firing: that timer is spent, so the next wake is asked
        // for again even when its time has not changed. Node's timers run on the loop's
        // monotonic clock and often fire a millisecond before Date.now() reaches their target
        // (18% of timers set from a timer callback on a 2-core machine): such a tick opens no
        // view, and a wake asked for only when its time changed was never asked for again,
        // leaving the round with no timer. With a silent member as view 0's proposer nothing
        // else wakes the peers: the red team's three honest peers sat in views 0-1 for 26 s,
        // each waiting for another's proposal, until one's stall exit woke the others.
        this.#lastWake = -1
        break
      case 'collection':
        this.#complete = event.complete
        break
      case 'absent':
        this.#absent = new Set(event.peers.filter((p) => p !== this.init.self))
        break
      case 'candidates':
        if (this.founding) this.#addCandidates(event.peers)
        break
      case 'proposal':
        this.#onProposal(event.proposal, event.certified === true, out)
        break
      case 'verified':
        this.#onVerified(event.id, event.ok, event.censored ?? [], event.detail, out)
        break
      case 'vote':
        this.#onVote(event.vote, out)
        break
    }
    this.#advanceViews(out)
    this.#progress(out)
    this.#maybePropose(out)
    if (!this.#decided) this.#wake(out)
    return out
  }

  // ---------------------------------------------------------------------------------

  #advanceViews(out: MachineEffect<P, V>[]): void {
    const before = this.#view
    while (this.#view < MAX_VIEW && this.openAt(this.#view + 1) <= this.#now) this.#view++
    if (this.#view !== before) this.#onViewEntered(out)
  }

  /**
   * Whether this peer may still vote in `view`: it is open here, and this peer has signed
   * no vote in a later view. A vote cast late in an open view is one a peer whose clock ran
   * slower would have cast on time: as long as it signed nothing in a later view, nothing it
   * signed contradicts it, and locks (set by precommits, checked at every prevote) keep
   * safety as in Tendermint. Without it, a proposal replayed or a quorum seen just after a
   * view ended by this peer's clock is wasted: on a loaded machine (48 processes on 2
   * cores, or a CI run) replays and gossip take longer than a view, and no view ever
   * gathered a quorum in time.
   */
  #votable(view: number): boolean {
    return this.init.canVote && view <= this.#view && view >= this.#lastVoted
  }

  /** Proposals held for views that have now opened get their turn (the latest first). */
  #onViewEntered(out: MachineEffect<P, V>[]): void {
    const open = [...this.#proposals.values()]
      .filter((h) => !h.certified && this.#votable(h.info.view) && this.inTurn(h.info.proposer, h.info.view))
      .sort((a, b) => b.info.view - a.info.view)
    for (const h of open) this.#consider(h, out)
  }

  #onProposal(info: ProposalInfo<P>, certified: boolean, out: MachineEffect<P, V>[]): void {
    const known = this.#proposals.get(info.id)
    if (known != null) {
      known.certified ||= certified
      return
    }
    if (!certified) {
      // Turn: only the view's proposer (over the recorded membership) may propose in it.
      if (!this.inTurn(info.proposer, info.view)) {
        out.push({ type: 'reject', peer: info.proposer, reason: 'not-your-turn', detail: `proposal for round ${this.init.round} view ${info.view}, whose proposer is ${this.proposerOf(info.view)}` })
        return
      }
      // One proposal per (view, proposer): a second, different one is equivocation.
      for (const h of this.#proposals.values()) {
        if (h.info.view === info.view && h.info.proposer === info.proposer && !h.certified) {
          out.push({ type: 'reject', peer: info.proposer, reason: 'equivocation', detail: `second proposal for round ${this.init.round} view ${info.view}` })
          return
        }
      }
    }
    const held: Held<P> = { info, verifying: false, censored: [], certified }
    this.#proposals.set(info.id, held)
    // A view that is open by our clock (with skew) is entered at once.
    if (!certified && info.view > this.#view && this.openAt(info.view) - this.init.skewMs <= this.#now) {
      this.#view = info.view
      this.#onViewEntered(out)
      return
    }
    if (!certified && this.#votable(info.view)) this.#consider(held, out)
  }

  /** A proposal of an open view: replay it (then prevote) unless we already prevoted in its view. */
  #consider(h: Held<P>, out: MachineEffect<P, V>[]): void {
    if (!this.init.canVote || this.#myVotes.has(`prevote:${h.info.view}`)) return
    if (h.verified === undefined) {
      this.#verify(h, out)
      return
    }
    if (h.verified) this.#maybePrevote(h, out)
  }

  #verify(h: Held<P>, out: MachineEffect<P, V>[]): void {
    if (h.verifying || h.verified !== undefined) return
    h.verifying = true
    out.push({ type: 'verify', id: h.info.id, proposal: h.info.ref })
  }

  #onVerified(id: string, ok: boolean, censored: readonly string[], detail: string | undefined, out: MachineEffect<P, V>[]): void {
    const h = this.#proposals.get(id)
    if (h == null || h.verified !== undefined) return
    h.verifying = false
    h.verified = ok
    h.censored = censored
    if (!ok) {
      out.push({ type: 'reject', peer: h.info.proposer, reason: 'manifest-hash-mismatch', detail: detail ?? `proposal for round ${this.init.round} view ${h.info.view} does not replay` })
      return
    }
    if (!h.certified && this.#votable(h.info.view)) this.#maybePrevote(h, out)
  }

  #maybePrevote(h: Held<P>, out: MachineEffect<P, V>[]): void {
    const { info } = h
    const key = `prevote:${info.view}`
    if (this.#myVotes.has(key) || !this.#votable(info.view)) return
    // Censorship is judged in view 0 only, whose proposer had the whole deadline to collect:
    // later views take what their proposer holds, so a slow network cannot stall a round.
    if (info.lockView < 0 && info.view === 0 && h.censored.length > 0) {
      this.#myVotes.set(key, '')
      out.push({
        type: 'reject',
        peer: info.proposer,
        reason: 'censorship',
        detail: `proposal for round ${this.init.round} view ${info.view} omits adapters held well before it: ${h.censored.join(', ')}`,
      })
      return
    }
    const lock = this.#locked
    if (lock != null && lock.valueHash !== info.valueHash) {
      const justified = info.lockView >= lock.view && this.#isQuorum(info.justifyVoters, info.authors)
      if (!justified) {
        this.#myVotes.set(key, '')
        out.push({ type: 'reject', peer: info.proposer, reason: 'locked', detail: `round ${this.init.round}: locked on ${lock.valueHash.slice(0, 12)} since view ${lock.view}` })
        return
      }
    }
    this.#castVote('prevote', info.view, info.valueHash, info.newStateHash, out)
  }

  #castVote(phase: Phase, view: number, valueHash: string, newStateHash: string, out: MachineEffect<P, V>[]): void {
    this.#myVotes.set(`${phase}:${view}`, valueHash)
    this.#lastVoted = Math.max(this.#lastVoted, view)
    out.push({ type: 'vote', phase, view, valueHash, newStateHash })
  }

  #onVote(vote: VoteInfo<V>, out: MachineEffect<P, V>[]): void {
    const key = `${vote.phase}:${vote.view}`
    let byVoter = this.#votes.get(key)
    if (byVoter == null) this.#votes.set(key, (byVoter = new Map()))
    const prior = byVoter.get(vote.voter)
    if (prior != null) {
      if (prior.valueHash !== vote.valueHash) {
        out.push({ type: 'reject', peer: vote.voter, reason: 'equivocation', detail: `two ${vote.phase}s for round ${this.init.round} view ${vote.view}` })
      }
      return
    }
    byVoter.set(vote.voter, vote)
    this.#catchUp(vote.voter, vote.view, out)
  }

  /**
   * View synchronisation (Tendermint's round skip): peers whose rounds started at different
   * times (a large swarm founding over minutes) are in different views, and votes spread
   * over views make no quorum. When more voters than could be faulty (n - quorum + 1 of
   * the n voters) have voted in views at or above v > ours, enter v at once. Views only
   * affect liveness; locks keep safety whatever view a peer is in.
   */
  #catchUp(voter: string, view: number, out: MachineEffect<P, V>[]): void {
    if (view <= this.#view) return
    const voters = this.founding ? this.#candidates : new Set(this.init.members)
    if (!voters.has(voter)) return
    if (view > (this.#highest.get(voter) ?? -1)) this.#highest.set(voter, view)
    const n = voters.size
    const need = n - quorumFor(this.init.members, [...voters], this.init.quorum, this.init.minPeers).needed + 1
    const ahead = [...this.#highest].filter(([p]) => voters.has(p)).map(([, v]) => v).sort((a, b) => b - a)
    if (need < 1 || ahead.length < need) return
    const target = ahead[need - 1]
    if (target > this.#view) {
      this.#view = target
      this.#onViewEntered(out)
    }
  }

  /** The authors of a value we hold a proposal for (founding quorum), or undefined. */
  #authorsOf(valueHash: string): readonly string[] | undefined {
    for (const h of this.#proposals.values()) if (h.info.valueHash === valueHash) return h.info.authors
    return undefined
  }

  #isQuorum(voters: Iterable<string>, authors: readonly string[]): boolean {
    const { eligible, needed } = quorumFor(this.init.members, authors, this.init.quorum, this.init.minPeers)
    let n = 0
    for (const v of new Set(voters)) if (eligible.has(v)) n++
    return n >= needed
  }

  /** Votes of a phase and view for a value, if they make a quorum. */
  #quorum(phase: Phase, view: number, valueHash: string): V[] | undefined {
    const byVoter = this.#votes.get(`${phase}:${view}`)
    if (byVoter == null) return undefined
    const authors = this.#authorsOf(valueHash)
    if (authors == null) return undefined
    const votes = [...byVoter.values()].filter((v) => v.valueHash === valueHash)
    if (!this.#isQuorum(votes.map((v) => v.voter), authors)) return undefined
    const { eligible } = quorumFor(this.init.members, authors, this.init.quorum, this.init.minPeers)
    return votes.filter((v) => eligible.has(v.voter)).map((v) => v.ref)
  }

  #replayed(valueHash: string): Held<P> | undefined {
    for (const h of this.#proposals.values()) if (h.info.valueHash === valueHash && h.verified === true) return h
    return undefined
  }

  /** Quorums: commit on precommits, lock and precommit on prevotes of the current view. */
  #progress(out: MachineEffect<P, V>[]): void {
    const values = new Set<string>()
    for (const h of this.#proposals.values()) values.add(h.info.valueHash)
    for (const [key, byVoter] of this.#votes) {
      const [phase, viewText] = key.split(':')
      const view = Number(viewText)
      const seen = new Set([...byVoter.values()].map((v) => v.valueHash))
      for (const value of seen) {
        if (!values.has(value)) continue
        const cert = this.#quorum(phase as Phase, view, value)
        if (cert == null) continue
        const held = this.#replayed(value)
        if (phase === 'precommit') {
          if (held == null) {
            // Certified, but not replayed yet: replay it whatever its view or our lock.
            for (const h of this.#proposals.values()) if (h.info.valueHash === value) this.#verify(h, out)
            continue
          }
          this.#decided = true
          out.push({ type: 'commit', view, proposal: held.info.ref, certificate: cert })
          return
        }
        if (held == null) continue
        if (this.#valid == null || view > this.#valid.view) this.#valid = { valueHash: value, view }
        if (this.#votable(view) && !this.#myVotes.has(`precommit:${view}`)) {
          this.#locked = { valueHash: value, view }
          this.#castVote('precommit', view, value, held.info.newStateHash, out)
        }
      }
    }
  }

  #maybePropose(out: MachineEffect<P, V>[]): void {
    const view = this.#view
    if (!this.init.canVote || this.#proposed.has(view) || this.proposerOf(view) !== this.init.self) return
    if (this.openAt(view) > this.#now) return
    const valid = this.#valid
    if (valid != null) {
      const held = this.#replayed(valid.valueHash)
      const justify = this.#quorum('prevote', valid.view, valid.valueHash)
      if (held != null && justify != null) {
        this.#proposed.add(view)
        out.push({ type: 'propose', view, reuse: { proposal: held.info.ref, lockView: valid.view, justify } })
        return
      }
    }
    if (this.#locked != null) return // locked without a re-proposable quorum: let another view decide
    if (!this.#complete && this.#now < this.init.startedAt + this.init.deadlineMs) return
    this.#proposed.add(view)
    out.push({ type: 'propose', view })
  }

  #wake(out: MachineEffect<P, V>[]): void {
    let at = this.openAt(this.#view + 1)
    const deadline = this.init.startedAt + this.init.deadlineMs
    if (!this.#complete && deadline > this.#now && this.proposerOf(this.#view) === this.init.self) at = Math.min(at, deadline)
    if (at !== this.#lastWake) {
      this.#lastWake = at
      out.push({ type: 'wake', at })
    }
  }
}
