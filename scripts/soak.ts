/**
 * A chaos soak with real `flora-peer` processes on 127.0.0.1 (synthetic trainer): N peers
 * run R rounds while the harness
 *  - SIGKILLs a random active peer about every K committed rounds (seeded PRNG; any peer,
 *    so sometimes the one whose turn it is to propose) and restarts it 0.5-2 s later with
 *    the same identity and state dir: it must resume from its last committed round, catch
 *    up by state sync and contribute again;
 *  - starts one extra peer (fresh identity, empty state dir) at round --late-join-at;
 *  - partitions one peer for --pause-ms at round --pause-at, simulated with SIGSTOP and
 *    SIGCONT (the process is frozen: its connections stay open but it answers nothing).
 * One fault at a time: the next kill (or the partition) waits until every live peer
 * contributes again, or 3 x K rounds, and always leaves at least two contributing peers; the
 * last rounds (and the last ~12 s at the recent round rate) are left quiet so a victim can
 * come back before the others finish.
 *
 * Every process incarnation's stdout events (DIR/peer-<slot>.<n>.events.jsonl) and stderr
 * logs (.log) are kept under --out; identity, state dir and --records file are per slot.
 * The history is checked afterwards (hash disagreements, rounds lost, how many rounds after
 * coming up every restarted peer contributes again) and written to DIR/report.json. Exits 1
 * when a target fails, 130 when interrupted.
 *
 *   npm run soak                               # 6 peers, 100 rounds -> .flora/soak
 *   npm run soak -- --peers 4 --rounds 16 --kill-every 3 --late-join-at 4 --pause-at 0
 *   npm run soak -- --train-ms 0               # bare synthetic steps: rounds as fast as the host allows
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, existsSync, readFileSync, type WriteStream } from 'node:fs'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import { createPrng } from '../src/lora/prng.js'
import { PAPER_RANKS } from './swarm.js'
import { parseCommandLine } from '../src/exit-codes.js'
import { intAtLeast, jsonOption, jsonOutput, withEnvAndConfig } from '../src/cli-options.js'
import { VERSION } from '../src/version.js'

export const SOAK_DEFAULTS = {
  peers: 6,
  rounds: 100,
  killEvery: 4,
  lateJoinAt: 10,
  pauseAt: 30,
  pauseMs: 5000,
  seed: 1,
  deadlineMs: 3000,
  graceMs: 1000,
  out: join('.flora', 'soak'),
  timeoutS: 1200,
} as const

/**
 * A restarted (or late, or resumed) peer must be in a committed round's contributors within
 * this many rounds of being up (its process printed its addresses, or was resumed).
 */
export const CONTRIBUTE_WITHIN = 2
/** No kill or partition when the swarm will probably finish within this long: the victim could not come back in time. */
export const QUIET_END_MS = 12_000

export interface SoakOptions {
  peers: number
  rounds: number
  /** 0: no kills. */
  killEvery: number
  /** 0: no late join. */
  lateJoinAt: number
  /** 0: no partition. */
  pauseAt: number
  pauseMs: number
  seed: number
  deadlineMs: number
  graceMs: number
  out: string
  timeoutMs: number
  /** Extra flags for every flora-peer (e.g. ['--train-busy-ms', '1500'] to make rounds slower). */
  peerArgs?: string[]
  /**
   * Each peer's training takes this long per round, off this host's CPU (--train-delay-ms):
   * as on a real federation, where every peer trains on its own hardware. 0: the bare
   * synthetic step, rounds as fast as 7 processes on this host's cores allow.
   */
  trainMs?: number
  /** Progress lines (default: stderr). */
  log?: (line: string) => void
}

/** The stdout events the soak reads (every flora-peer stdout line is one JSON object). */
export interface PeerEvent {
  event: string
  time?: string
  round?: number
  stateHash?: string
  contributors?: string[]
  synced?: 'replay' | 'snapshot'
  view?: number
  proposer?: string
  peerId?: string
  multiaddrs?: string[]
  reason?: string
  detail?: string
  behind?: boolean
  waitedMs?: number
  finished?: boolean
}

export interface Incarnation {
  slot: number
  /** 0 for the first process of a slot, 1 for its first restart, ... */
  n: number
  kind: 'initial' | 'restart' | 'late-join'
  pid: number | null
  peerId: string | null
  /** ms since the soak started. */
  startedMs: number
  /** Highest round any peer had reported when this process was spawned. */
  swarmRoundAtStart: number
  listeningMs: number | null
  swarmRoundAtListening: number | null
  exitMs: number | null
  exitCode: number | null
  exitSignal: string | null
  killedByUs: boolean
  events: PeerEvent[]
  files: { events: string; log: string; report: string }
}

export interface ChaosEvent {
  type: 'kill' | 'restart' | 'late-join' | 'pause' | 'resume' | 'timeout' | 'interrupt'
  slot: number
  incarnation: number
  ms: number
  swarmRound: number
  detail?: string
}

export interface Recovery {
  kind: 'restart' | 'late-join' | 'pause'
  slot: number
  incarnation: number
  peerId: string | null
  /** restart: the round the swarm had when the peer was killed; pause: when it was stopped. */
  disruptedAtRound: number | null
  /** The swarm's round when the process was spawned (restart, late join) or resumed (pause). */
  fromRound: number
  /**
   * The swarm's round when the process was up: it printed its addresses (restart, late
   * join; null if it never did) or was resumed (pause).
   */
  upAtRound: number | null
  /** First committed round after fromRound whose contributors include the peer. */
  contributedInRound: number | null
  /** contributedInRound - fromRound: includes the process's start-up (a few seconds of tsx + libp2p). */
  roundsToContribute: number | null
  /** contributedInRound - upAtRound: what state sync and rejoining took. The target is on this. */
  roundsAfterUp: number | null
  /** Rounds this incarnation adopted by state sync instead of taking part. */
  synced: { replay: number; snapshot: number }
  downMs: number | null
  ok: boolean
}

export interface SoakReport {
  options: Omit<SoakOptions, 'log'>
  durationMs: number
  interrupted: boolean
  timedOut: boolean
  /** The highest round every peer's last process reached. */
  roundsCommitted: number
  /** The highest round any peer reached. */
  swarmRound: number
  hashDisagreements: number
  disagreements: Array<{ round: number; hashes: Record<string, string[]> }>
  roundsLost: number
  lost: Array<{ slot: number; round: number; detail: string }>
  /** Rounds a restarted process announced again with the same hash (its state dir had not kept them). */
  roundsRedone: number
  restarts: number
  recoveries: Recovery[]
  chaos: ChaosEvent[]
  /** Processes that exited non-zero (or by a signal) other than by our SIGKILL. */
  badExits: Array<{ slot: number; incarnation: number; code: number | null; signal: string | null; log: string; logTail: string[] }>
  stalls: Array<{ slot: number; incarnation: number; round: number; behind: boolean | null; reason: string }>
  rejections: Record<string, number>
  rejectionSamples: Array<{ slot: number; incarnation: number; reason: string; detail: string; round: number | null }>
  /** Rounds decided in a view > 0 (their first proposer was dead, frozen or late). */
  fallbackViews: number
  logErrors: { count: number; samples: Array<{ slot: number; incarnation: number; line: string }> }
  processes: Array<{
    slot: number
    incarnation: number
    kind: Incarnation['kind']
    peerId: string | null
    firstRound: number | null
    lastRound: number | null
    contributed: number
    synced: { replay: number; snapshot: number }
    exitCode: number | null
    exitSignal: string | null
    killedByUs: boolean
    finished: boolean
  }>
  targets: {
    noDisagreements: boolean
    noLostRounds: boolean
    restartsContributeWithin: boolean
    allReachedRounds: boolean
    noBadExits: boolean
  }
  ok: boolean
}

const here = fileURLToPath(new URL('.', import.meta.url))
const BIN = resolve(here, '..', 'bin', 'flora-peer.js')

const slotName = (slot: number): string => `peer-${slot}`
const incName = (slot: number, n: number): string => `peer-${slot}.${n}`

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const say = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const out = resolve(options.out)
  await mkdir(out, { recursive: true })
  // A reused output directory: drop the previous soak's files (state dirs included: a soak starts from genesis).
  for (const f of await readdir(out)) {
    if (/^peer-\d+[.]/.test(f) || f === 'report.json') await rm(join(out, f), { recursive: true, force: true })
  }
  const rng = createPrng(`flora-soak:${options.seed}`)
  const t0 = Date.now()
  const now = (): number => Date.now() - t0
  const stamp = (): string => `[${(now() / 1000).toFixed(0).padStart(4)} s]`
  const slots = options.peers + (options.lateJoinAt > 0 ? 1 : 0)
  const ranks = Array.from({ length: slots }, (_, i) => PAPER_RANKS[i % PAPER_RANKS.length])

  const incarnations: Incarnation[] = []
  const current: Array<Incarnation | undefined> = []
  const children = new Map<Incarnation, ChildProcess>()
  const exitWaiters = new Map<Incarnation, Promise<void>>()
  const chaos: ChaosEvent[] = []
  let swarmRound = 0
  let lastProgress = 0
  let stopping = false
  let interrupted = false
  let timedOut = false
  /** Slots whose peer contributed to a round after its current process started (or it resumed). */
  const active = new Set<number>()
  /** Slot -> the swarm round from which its next contribution counts. */
  const activeAfter = new Map<number, number>()
  let paused: number | null = null
  let pauseDone = false
  let lateJoined = false
  /** A kill whose restart has not happened yet. */
  let down: number | null = null
  let lastFaultRound = 0
  /** When the swarm reached each new round (ms since start). */
  const roundTimes: number[] = []
  const pending = new Set<Promise<unknown>>()
  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p)
    void p.finally(() => pending.delete(p)).catch(() => {})
    return p
  }
  const record = (type: ChaosEvent['type'], slot: number, detail?: string): void => {
    const inc = current[slot]
    chaos.push({ type, slot, incarnation: inc?.n ?? -1, ms: now(), swarmRound, ...(detail != null ? { detail } : {}) })
  }

  const common = [
    '--trainer', 'synthetic',
    '--rounds', String(options.rounds),
    '--min-peers', String(options.peers),
    '--deadline', String(options.deadlineMs),
    '--grace', String(options.graceMs),
    '--seed', String(options.seed),
    '--listen', '/ip4/127.0.0.1/tcp/0',
    '--json',
    ...((options.trainMs ?? 0) > 0 ? ['--train-delay-ms', String(options.trainMs)] : []),
    ...(options.peerArgs ?? []),
  ]
  const env = {
    ...process.env,
    // As in scripts/swarm.ts: from source, peers run the source too (never a stale dist/).
    FLORA_FROM_SOURCE: process.env.FLORA_FROM_SOURCE ?? (import.meta.url.endsWith('.ts') ? '1' : ''),
  }

  const liveAddrs = (exclude: number): string[] =>
    current.filter((c): c is Incarnation => c != null && c.slot !== exclude && c.slot !== paused && c.exitMs == null && addrOf.has(c)).map((c) => addrOf.get(c) as string)
  const addrOf = new Map<Incarnation, string>()

  const launch = (slot: number, kind: Incarnation['kind'], bootstrap: string | undefined): Incarnation => {
    const n = incarnations.filter((x) => x.slot === slot).length
    const name = incName(slot, n)
    const inc: Incarnation = {
      slot,
      n,
      kind,
      pid: null,
      peerId: null,
      startedMs: now(),
      swarmRoundAtStart: swarmRound,
      listeningMs: null,
      swarmRoundAtListening: null,
      exitMs: null,
      exitCode: null,
      exitSignal: null,
      killedByUs: false,
      events: [],
      files: { events: join(out, `${name}.events.jsonl`), log: join(out, `${name}.log`), report: join(out, `${name}.json`) },
    }
    const args = [
      BIN,
      ...common,
      '--rank', String(ranks[slot]),
      '--data', `synthetic:${slot}`,
      '--identity', join(out, `${slotName(slot)}.key`),
      '--state-dir', join(out, `${slotName(slot)}.state`),
      '--records', join(out, `${slotName(slot)}.records.jsonl`),
      '--report', inc.files.report,
      ...(bootstrap != null ? ['--bootstrap', bootstrap] : []),
    ]
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    inc.pid = child.pid ?? null
    incarnations.push(inc)
    current[slot] = inc
    active.delete(slot)
    activeAfter.set(slot, swarmRound)
    children.set(inc, child)
    const log: WriteStream = createWriteStream(inc.files.log)
    child.stderr?.pipe(log)
    const events = createWriteStream(inc.files.events)
    const closed = Promise.all([
      new Promise<void>((res) => {
        child.on('exit', () => res())
        child.on('error', () => res())
      }),
      new Promise<void>((res) => (child.stdout != null ? child.stdout.on('close', () => res()) : res())),
      new Promise<void>((res) => log.on('close', () => res())),
    ])
    exitWaiters.set(
      inc,
      closed.then(
        () =>
          new Promise<void>((res) => {
            events.end(() => res())
          }),
      ),
    )
    child.on('error', (err) => {
      // Could not spawn (or signal) the process: counts as an exit with no code.
      if (inc.exitMs == null) inc.exitMs = now()
      say(`${stamp()} peer ${slot} (process ${name}): ${err.message}`)
      log.end()
    })
    child.on('exit', (code, signal) => {
      inc.exitMs = now()
      inc.exitCode = code
      inc.exitSignal = signal
      if (!inc.killedByUs && !stopping && (code !== 0 || signal != null)) say(`${stamp()} peer ${slot} (process ${name}) exited ${signal ?? code} unexpectedly; see ${inc.files.log}`)
    })
    if (child.stdout != null) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        events.write(`${line}\n`)
        let ev: PeerEvent
        try {
          ev = JSON.parse(line) as PeerEvent
        } catch {
          return
        }
        if (typeof ev?.event !== 'string') return
        if (ev.event === 'train:step' || ev.event === 'member:join' || ev.event === 'member:leave') return
        inc.events.push(ev)
        onEvent(inc, ev)
      })
    }
    return inc
  }

  const onEvent = (inc: Incarnation, ev: PeerEvent): void => {
    if (ev.event === 'listening') {
      inc.peerId = ev.peerId ?? null
      inc.listeningMs = now()
      inc.swarmRoundAtListening = swarmRound
      if (ev.multiaddrs?.[0] != null) addrOf.set(inc, ev.multiaddrs[0])
      if (inc.kind !== 'initial') say(`${stamp()} peer ${inc.slot} (${inc.kind === 'restart' ? `restart ${inc.n}` : 'late joiner'}) listening at swarm round ${swarmRound}`)
      return
    }
    if (ev.event === 'round:stalled') {
      say(`${stamp()} peer ${inc.slot} stalled in round ${ev.round}: ${ev.reason}`)
      return
    }
    if (ev.event !== 'round:complete' || typeof ev.round !== 'number') return
    for (const c of current) {
      const after = activeAfter.get(c?.slot ?? -1) ?? 0
      // (A killed process whose restart is pending stays current[slot]: it cannot contribute again.)
      if (c != null && c.peerId != null && !c.killedByUs && c.exitMs == null && ev.contributors?.includes(c.peerId) === true && ev.round > after && !active.has(c.slot)) {
        active.add(c.slot)
        if (c.kind !== 'initial' || after > 0) {
          const who = c.kind === 'restart' ? `restart ${c.n}` : c.kind === 'late-join' ? 'late joiner' : 'resumed'
          const up = c.kind !== 'initial' && c.swarmRoundAtListening != null ? `, +${ev.round - c.swarmRoundAtListening} from up at round ${c.swarmRoundAtListening}` : ''
          say(`${stamp()} peer ${c.slot} (${who}) contributes in round ${ev.round} (+${ev.round - after} from ${c.kind === 'initial' ? 'resume' : 'spawn'} at round ${after}${up})`)
        }
      }
    }
    if (ev.round > swarmRound) {
      swarmRound = ev.round
      roundTimes.push(now())
      if (swarmRound >= lastProgress + 10) {
        lastProgress = swarmRound - (swarmRound % 10)
        const live = current.filter((c) => c != null && c.exitMs == null).length
        say(`${stamp()} round ${swarmRound}/${options.rounds}: ${live} processes up, ${active.size} contributing`)
      }
      scheduleChaos()
    }
  }

  const liveSlots = (): number[] => current.flatMap((c, slot) => (c != null && c.exitMs == null ? [slot] : []))
  const pick = <T>(items: T[]): T => items[rng.int(items.length)]

  const scheduleChaos = (): void => {
    if (stopping) return
    // The last rounds are left quiet: a peer killed there could not be back before the others finish.
    const quietFrom = options.rounds - Math.max(3, options.killEvery)
    // ...and so are the last QUIET_END_MS at the recent round rate (a synthetic round takes
    // well under a second, a restarted process a few seconds to start).
    const recent = roundTimes.slice(-11)
    const roundMs = recent.length >= 2 ? (recent[recent.length - 1] - recent[0]) / (recent.length - 1) : options.deadlineMs
    const endsSoon = (options.rounds - swarmRound) * roundMs < QUIET_END_MS
    if (options.lateJoinAt > 0 && !lateJoined && swarmRound >= options.lateJoinAt) {
      lateJoined = true
      const addrs = liveAddrs(-1)
      const slot = options.peers
      const inc = launch(slot, 'late-join', addrs.length > 0 ? pick(addrs) : undefined)
      record('late-join', slot, `fresh identity and empty state dir, pid ${inc.pid}`)
      say(`${stamp()} late join: peer ${slot} (fresh identity, empty state dir) starts at swarm round ${swarmRound}`)
    }
    // One fault at a time: nothing while a peer is down or frozen, and, for up to 3 x K
    // rounds after the last fault, nothing until every live peer contributes again. Only
    // contributing peers are victims, and only while at least two others still contribute
    // (the recorded membership that votes is, in practice, the recent contributors).
    const live = liveSlots()
    const contributing = live.filter((s) => active.has(s))
    const settled = live.every((s) => active.has(s)) || swarmRound >= lastFaultRound + 3 * Math.max(1, options.killEvery)
    const quiet = down == null && paused == null && settled && contributing.length >= 3
    if (options.pauseAt > 0 && !pauseDone && swarmRound >= options.pauseAt && swarmRound < quietFrom && !endsSoon && quiet) {
      const victims = contributing
      if (victims.length > 0) {
        pauseDone = true
        const slot = pick(victims)
        const inc = current[slot] as Incarnation
        const child = children.get(inc) as ChildProcess
        paused = slot
        child.kill('SIGSTOP')
        record('pause', slot, `SIGSTOP for ${options.pauseMs} ms`)
        say(`${stamp()} partition: peer ${slot} frozen with SIGSTOP for ${options.pauseMs} ms at swarm round ${swarmRound} (a partition simulated by SIGSTOP/SIGCONT)`)
        track(
          sleep(options.pauseMs).then(() => {
            if (inc.exitMs == null) child.kill('SIGCONT')
            record('resume', slot, 'SIGCONT')
            // Counted from the resume: the peer must contribute again within CONTRIBUTE_WITHIN rounds.
            active.delete(slot)
            activeAfter.set(slot, swarmRound)
            lastFaultRound = swarmRound
            paused = null
            say(`${stamp()} partition over: peer ${slot} resumed with SIGCONT at swarm round ${swarmRound}`)
          }),
        )
        return
      }
    }
    if (options.killEvery > 0 && quiet && swarmRound >= lastFaultRound + options.killEvery && swarmRound < quietFrom && !endsSoon) {
      const victims = contributing
      if (victims.length === 0) return
      const slot = pick(victims)
      const inc = current[slot] as Incarnation
      const child = children.get(inc) as ChildProcess
      down = slot
      lastFaultRound = swarmRound
      inc.killedByUs = true
      active.delete(slot)
      child.kill('SIGKILL')
      const delay = Math.round(rng.uniform(500, 2000))
      record('kill', slot, `SIGKILL pid ${inc.pid}; restart in ${delay} ms`)
      say(`${stamp()} kill: peer ${slot} (pid ${inc.pid}) SIGKILLed at swarm round ${swarmRound}; restart in ${delay} ms`)
      track(
        (async () => {
          await exitWaiters.get(inc)
          await sleep(delay)
          if (stopping) return
          const addrs = liveAddrs(slot)
          if (addrs.length === 0) {
            record('restart', slot, 'not restarted: no live peer to bootstrap from')
            say(`${stamp()} peer ${slot} NOT restarted: no live peer left to bootstrap from`)
            return
          }
          const next = launch(slot, 'restart', pick(addrs))
          down = null
          lastFaultRound = swarmRound
          record('restart', slot, `same identity and state dir, pid ${next.pid}`)
          say(`${stamp()} restart: peer ${slot} (restart ${next.n}, pid ${next.pid}) at swarm round ${swarmRound}`)
        })(),
      )
    }
  }
  const killAll = (): void => {
    for (const [inc, child] of children) {
      if (inc.exitMs == null && child.exitCode == null && child.signalCode == null) {
        try {
          child.kill('SIGKILL')
        } catch {
          // already gone
        }
      }
    }
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping && interrupted) return
    interrupted = true
    stopping = true
    say(`${stamp()} ${sig}: killing every peer`)
    record('interrupt', -1, sig)
    killAll()
  }
  const onSigint = (): void => onSignal('SIGINT')
  const onSigterm = (): void => onSignal('SIGTERM')
  const onExit = (): void => killAll()
  process.on('SIGINT', onSigint)
  process.on('SIGTERM', onSigterm)
  process.on('exit', onExit)
  const timer = setTimeout(() => {
    timedOut = true
    stopping = true
    say(`${stamp()} timeout after ${options.timeoutMs / 1000} s: killing every peer`)
    record('timeout', -1)
    killAll()
  }, options.timeoutMs)

  try {
    say(`${stamp()} soak: ${options.peers} synthetic peers, ${options.rounds} rounds, seed ${options.seed}; kill every ${options.killEvery || '-'} rounds, late join at ${options.lateJoinAt || '-'}, partition (SIGSTOP/SIGCONT) at ${options.pauseAt || '-'} for ${options.pauseMs} ms; files in ${out}`)
    const first = launch(0, 'initial', undefined)
    const addr = await new Promise<string>((res, rej) => {
      const poll = setInterval(() => {
        const a = addrOf.get(first)
        if (a != null) {
          clearInterval(poll)
          res(a)
        } else if (first.exitMs != null || stopping) {
          clearInterval(poll)
          rej(new Error(`peer 0 exited (${first.exitSignal ?? first.exitCode}) before listening; see ${first.files.log}`))
        }
      }, 50)
    })
    say(`${stamp()} peer 0 listening on ${addr}; starting the other ${options.peers - 1}`)
    for (let i = 1; i < options.peers; i++) launch(i, 'initial', addr)
    // Until every process (restarts included) has exited and no restart is pending.
    for (;;) {
      const waits = [...exitWaiters.values()]
      await Promise.all(waits)
      await Promise.all([...pending])
      if (exitWaiters.size === waits.length && pending.size === 0) break
    }
  } finally {
    stopping = true
    clearTimeout(timer)
    killAll()
    await Promise.all([...exitWaiters.values()])
    process.off('SIGINT', onSigint)
    process.off('SIGTERM', onSigterm)
    process.off('exit', onExit)
  }
  const report = analyseSoak({
    options: { ...options, log: undefined },
    incarnations,
    chaos,
    chains: Array.from({ length: slots }, (_, slot) => ({
      slot,
      stateDir: readChain(join(out, `${slotName(slot)}.state`, 'records.jsonl')),
      records: readChain(join(out, `${slotName(slot)}.records.jsonl`)),
    })),
    logs: incarnations.map((inc) => ({ slot: inc.slot, incarnation: inc.n, text: existsSync(inc.files.log) ? readFileSync(inc.files.log, 'utf8') : '' })),
    durationMs: now(),
    interrupted,
    timedOut,
  })
  delete (report.options as { log?: unknown }).log
  await writeFile(join(out, 'report.json'), `${JSON.stringify(report, null, 2)}\n`)
  return report
}

function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms))
}

/** Round -> state hash lines of a records file (null: no such file). */
export function readChain(file: string): Array<{ round: number; stateHash: string; parentStateHash: string }> | null {
  if (!existsSync(file)) return null
  const rows: Array<{ round: number; stateHash: string; parentStateHash: string }> = []
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.trim() === '') continue
    try {
      const r = JSON.parse(line) as { round?: number; stateHash?: string; parentStateHash?: string }
      if (typeof r.round === 'number' && typeof r.stateHash === 'string') rows.push({ round: r.round, stateHash: r.stateHash, parentStateHash: r.parentStateHash ?? '' })
    } catch {
      // a torn last line
    }
  }
  return rows
}

export interface SoakInput {
  options: Omit<SoakOptions, 'log'> & { log?: undefined }
  incarnations: Incarnation[]
  chaos: ChaosEvent[]
  /** Per slot, at the end: its state dir's records.jsonl and its --records file. */
  chains: Array<{ slot: number; stateDir: ReturnType<typeof readChain>; records: ReturnType<typeof readChain> }>
  logs: Array<{ slot: number; incarnation: number; text: string }>
  durationMs: number
  interrupted: boolean
  timedOut: boolean
}

/** Checks a soak's history: a pure function of what the processes printed and left on disk. */
export function analyseSoak(input: SoakInput): SoakReport {
  const { options, incarnations, chaos } = input
  const label = (inc: Incarnation): string => incName(inc.slot, inc.n)
  const completes = (inc: Incarnation): PeerEvent[] => inc.events.filter((e) => e.event === 'round:complete' && typeof e.round === 'number' && typeof e.stateHash === 'string')

  // Hash disagreements: over all processes, a round with more than one state hash.
  const byRound = new Map<number, Map<string, Set<string>>>()
  for (const inc of incarnations) {
    for (const e of completes(inc)) {
      const hashes = byRound.get(e.round as number) ?? new Map<string, Set<string>>()
      byRound.set(e.round as number, hashes)
      const who = hashes.get(e.stateHash as string) ?? new Set<string>()
      hashes.set(e.stateHash as string, who)
      who.add(label(inc))
    }
  }
  for (const c of input.chains) {
    for (const [source, chain] of [['state', c.stateDir], ['records', c.records]] as const) {
      for (const r of chain ?? []) {
        const hashes = byRound.get(r.round) ?? new Map<string, Set<string>>()
        byRound.set(r.round, hashes)
        const who = hashes.get(r.stateHash) ?? new Set<string>()
        hashes.set(r.stateHash, who)
        who.add(`${slotName(c.slot)}:${source}`)
      }
    }
  }
  const disagreements = [...byRound]
    .filter(([, hashes]) => hashes.size > 1)
    .map(([round, hashes]) => ({ round, hashes: Object.fromEntries([...hashes].map(([h, who]) => [h, [...who].sort()])) }))
    .sort((a, b) => a.round - b.round)

  // Rounds lost: a round a slot reported committed that a later process of the slot
  // reported with another hash, that the same process reported twice with different
  // hashes, or that is missing (or different) in the slot's chain on disk at the end.
  const lost: SoakReport['lost'] = []
  let roundsRedone = 0
  const slots = [...new Set(incarnations.map((i) => i.slot))].sort((a, b) => a - b)
  for (const slot of slots) {
    const seen = new Map<number, { hash: string; by: string }>()
    for (const inc of incarnations.filter((i) => i.slot === slot).sort((a, b) => a.n - b.n)) {
      const mine = new Map<number, string>()
      for (const e of completes(inc)) {
        const round = e.round as number
        const hash = e.stateHash as string
        const before = mine.get(round)
        if (before != null) {
          if (before !== hash) lost.push({ slot, round, detail: `${label(inc)} reported round ${round} twice: ${before.slice(0, 12)} then ${hash.slice(0, 12)}` })
          continue
        }
        mine.set(round, hash)
        const prior = seen.get(round)
        if (prior != null && prior.by !== label(inc)) {
          if (prior.hash !== hash) lost.push({ slot, round, detail: `${prior.by} committed ${prior.hash.slice(0, 12)}, ${label(inc)} recommitted ${hash.slice(0, 12)}` })
          else roundsRedone++
        }
        if (prior == null) seen.set(round, { hash, by: label(inc) })
      }
    }
    const chains = input.chains.find((c) => c.slot === slot)
    for (const [source, chain] of [['state dir records.jsonl', chains?.stateDir], ['--records file', chains?.records]] as const) {
      if (chain == null) {
        if (seen.size > 0) lost.push({ slot, round: Math.min(...seen.keys()), detail: `${slotName(slot)}: no ${source} at the end` })
        continue
      }
      const inChain = new Map<number, string[]>()
      chain.forEach((r, i) => {
        inChain.set(r.round, [...(inChain.get(r.round) ?? []), r.stateHash])
        const prev = chain[i - 1]
        if (prev != null && (r.round !== prev.round + 1 || r.parentStateHash !== prev.stateHash)) {
          lost.push({ slot, round: r.round, detail: `${slotName(slot)} ${source}: round ${r.round} does not extend round ${prev.round} (${prev.stateHash.slice(0, 12)})` })
        }
      })
      for (const [round, { hash, by }] of seen) {
        const there = inChain.get(round)
        if (there == null) lost.push({ slot, round, detail: `${by} reported round ${round} committed; it is not in ${slotName(slot)}'s ${source} at the end` })
        else if (there.some((h) => h !== hash)) lost.push({ slot, round, detail: `${by} reported round ${round} as ${hash.slice(0, 12)}; ${slotName(slot)}'s ${source} has ${there.map((h) => h.slice(0, 12)).join(', ')}` })
      }
    }
  }

  // Recoveries: restarts, the late join, the partition.
  const contributions: Array<{ round: number; contributors: string[] }> = []
  for (const inc of incarnations) for (const e of completes(inc)) contributions.push({ round: e.round as number, contributors: e.contributors ?? [] })
  const firstContribution = (peerId: string | null, after: number): number | null => {
    if (peerId == null) return null
    let best: number | null = null
    for (const c of contributions) if (c.round > after && c.contributors.includes(peerId) && (best == null || c.round < best)) best = c.round
    return best
  }
  const syncedOf = (inc: Incarnation): { replay: number; snapshot: number } => {
    const rounds = new Map<number, string>()
    for (const e of completes(inc)) if (e.synced != null) rounds.set(e.round as number, e.synced)
    return { replay: [...rounds.values()].filter((s) => s === 'replay').length, snapshot: [...rounds.values()].filter((s) => s === 'snapshot').length }
  }
  const recoveries: Recovery[] = []
  for (const inc of incarnations) {
    if (inc.kind === 'initial') continue
    const peerId = inc.peerId ?? incarnations.find((i) => i.slot === inc.slot && i.peerId != null)?.peerId ?? null
    const kill = inc.kind === 'restart' ? [...chaos].reverse().find((c) => c.type === 'kill' && c.slot === inc.slot && c.ms <= inc.startedMs) : undefined
    const killed = kill != null ? incarnations.find((i) => i.slot === inc.slot && i.n === kill.incarnation) : undefined
    const contributedInRound = firstContribution(peerId, inc.swarmRoundAtStart)
    const roundsToContribute = contributedInRound != null ? contributedInRound - inc.swarmRoundAtStart : null
    const roundsAfterUp = contributedInRound != null && inc.swarmRoundAtListening != null ? contributedInRound - inc.swarmRoundAtListening : null
    recoveries.push({
      kind: inc.kind === 'restart' ? 'restart' : 'late-join',
      slot: inc.slot,
      incarnation: inc.n,
      peerId,
      disruptedAtRound: kill?.swarmRound ?? null,
      fromRound: inc.swarmRoundAtStart,
      upAtRound: inc.swarmRoundAtListening,
      contributedInRound,
      roundsToContribute,
      roundsAfterUp,
      synced: syncedOf(inc),
      downMs: killed?.exitMs != null && inc.listeningMs != null ? inc.listeningMs - (kill?.ms ?? killed.exitMs) : null,
      ok: roundsAfterUp != null && roundsAfterUp <= CONTRIBUTE_WITHIN,
    })
  }
  for (const pause of chaos.filter((c) => c.type === 'pause')) {
    const resume = chaos.find((c) => c.type === 'resume' && c.slot === pause.slot && c.ms >= pause.ms)
    const inc = incarnations.find((i) => i.slot === pause.slot && i.n === pause.incarnation)
    const peerId = inc?.peerId ?? null
    const from = resume?.swarmRound ?? pause.swarmRound
    const contributedInRound = firstContribution(peerId, from)
    const roundsToContribute = contributedInRound != null ? contributedInRound - from : null
    recoveries.push({
      kind: 'pause',
      slot: pause.slot,
      incarnation: pause.incarnation,
      peerId,
      disruptedAtRound: pause.swarmRound,
      fromRound: from,
      upAtRound: from,
      contributedInRound,
      roundsToContribute,
      roundsAfterUp: roundsToContribute,
      synced: { replay: 0, snapshot: 0 },
      downMs: resume != null ? resume.ms - pause.ms : null,
      ok: roundsToContribute != null && roundsToContribute <= CONTRIBUTE_WITHIN,
    })
  }
  recoveries.sort((a, b) => a.fromRound - b.fromRound || a.slot - b.slot)

  const lastOf = (inc: Incarnation): number | null => {
    const rs = completes(inc).map((e) => e.round as number)
    return rs.length > 0 ? Math.max(...rs) : null
  }
  const finals = slots.map((slot) => incarnations.filter((i) => i.slot === slot).sort((a, b) => b.n - a.n)[0])
  const finalRounds = finals.map((inc) => {
    // A resumed process announces only the rounds past its head: its chain on disk counts too.
    const chain = input.chains.find((c) => c.slot === inc.slot)?.stateDir
    return Math.max(lastOf(inc) ?? 0, chain?.at(-1)?.round ?? 0)
  })
  const roundsCommitted = finalRounds.length > 0 ? Math.min(...finalRounds) : 0
  const swarmRound = Math.max(0, ...[...byRound.keys()])

  const badExits = incarnations
    .filter((inc) => !inc.killedByUs && (inc.exitCode !== 0 || inc.exitSignal != null) && !(input.interrupted || input.timedOut ? inc.exitSignal === 'SIGKILL' : false))
    .map((inc) => ({
      slot: inc.slot,
      incarnation: inc.n,
      code: inc.exitCode,
      signal: inc.exitSignal,
      log: inc.files.log,
      logTail: (input.logs.find((l) => l.slot === inc.slot && l.incarnation === inc.n)?.text ?? '')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .slice(-4)
        .map((l) => (l.length > 600 ? `${l.slice(0, 600)}...` : l)),
    }))
  const stalls: SoakReport['stalls'] = []
  const rejections: Record<string, number> = {}
  const rejectionSamples: SoakReport['rejectionSamples'] = []
  let fallbackViews = 0
  const viewRounds = new Set<number>()
  for (const inc of incarnations) {
    for (const e of inc.events) {
      if (e.event === 'round:stalled') stalls.push({ slot: inc.slot, incarnation: inc.n, round: e.round ?? -1, behind: e.behind ?? null, reason: e.reason ?? '' })
      if (e.event === 'peer:rejected') {
        const reason = e.reason ?? '?'
        rejections[reason] = (rejections[reason] ?? 0) + 1
        if (rejectionSamples.filter((s) => s.reason === reason).length < 3) rejectionSamples.push({ slot: inc.slot, incarnation: inc.n, reason, detail: e.detail ?? '', round: e.round ?? null })
      }
      if (e.event === 'round:complete' && e.synced == null && (e.view ?? 0) > 0 && !viewRounds.has(e.round as number)) {
        viewRounds.add(e.round as number)
        fallbackViews++
      }
    }
  }
  const logErrors: SoakReport['logErrors'] = { count: 0, samples: [] }
  for (const l of input.logs) {
    for (const line of l.text.split('\n')) {
      if (!isErrorLine(line)) continue
      logErrors.count++
      if (logErrors.samples.length < 20) logErrors.samples.push({ slot: l.slot, incarnation: l.incarnation, line: line.length > 600 ? `${line.slice(0, 600)}...` : line })
    }
  }

  const processes: SoakReport['processes'] = incarnations.map((inc) => {
    const rs = completes(inc).map((e) => e.round as number)
    return {
      slot: inc.slot,
      incarnation: inc.n,
      kind: inc.kind,
      peerId: inc.peerId,
      firstRound: rs.length > 0 ? Math.min(...rs) : null,
      lastRound: rs.length > 0 ? Math.max(...rs) : null,
      contributed: inc.peerId == null ? 0 : completes(inc).filter((e) => e.contributors?.includes(inc.peerId as string) === true).length,
      synced: syncedOf(inc),
      exitCode: inc.exitCode,
      exitSignal: inc.exitSignal,
      killedByUs: inc.killedByUs,
      finished: inc.events.some((e) => e.event === 'done' && e.finished === true),
    }
  })

  const targets: SoakReport['targets'] = {
    noDisagreements: disagreements.length === 0,
    noLostRounds: lost.length === 0,
    restartsContributeWithin: recoveries.every((r) => r.ok),
    allReachedRounds: !input.interrupted && !input.timedOut && finals.every((inc, i) => finalRounds[i] >= options.rounds && inc.exitCode === 0),
    noBadExits: badExits.length === 0,
  }
  return {
    options: { ...options },
    durationMs: input.durationMs,
    interrupted: input.interrupted,
    timedOut: input.timedOut,
    roundsCommitted,
    swarmRound,
    hashDisagreements: disagreements.length,
    disagreements,
    roundsLost: new Set(lost.map((l) => `${l.slot}:${l.round}`)).size,
    lost,
    roundsRedone,
    restarts: incarnations.filter((i) => i.kind === 'restart').length,
    recoveries,
    chaos,
    badExits,
    stalls,
    rejections,
    rejectionSamples,
    fallbackViews,
    logErrors,
    processes,
    targets,
    ok: Object.values(targets).every((t) => t),
  }
}

/** A pino JSON line at level error (50) or fatal (60), or a plain line that says ERROR / an uncaught error. */
function isErrorLine(line: string): boolean {
  if (line.trim() === '') return false
  if (line.startsWith('{')) {
    try {
      const level = (JSON.parse(line) as { level?: unknown }).level
      return typeof level === 'number' ? level >= 50 : level === 'error' || level === 'fatal'
    } catch {
      // not JSON after all
    }
  }
  return /\bERROR\b|\bFATAL\b|Uncaught|Unhandled|^\s*at .*\(/.test(line) || /^(Type|Reference|Range)?Error: /.test(line)
}

export function formatSummary(r: SoakReport, out: string): string {
  const lines: string[] = []
  const o = r.options
  lines.push(`soak: ${o.peers} peers (+${o.lateJoinAt > 0 ? 1 : 0} late), ${o.rounds} rounds, seed ${o.seed}, deadline ${o.deadlineMs} ms, grace ${o.graceMs} ms; partition simulated by SIGSTOP/SIGCONT`)
  lines.push(`wall time:          ${(r.durationMs / 1000).toFixed(1)} s${r.timedOut ? ' (TIMED OUT)' : ''}${r.interrupted ? ' (INTERRUPTED)' : ''}`)
  lines.push(`rounds committed:   ${r.roundsCommitted} by every peer (highest: ${r.swarmRound}); ${r.fallbackViews} decided in a fallback view`)
  lines.push(`hash disagreements: ${r.hashDisagreements}${r.disagreements.length > 0 ? ` (rounds ${r.disagreements.map((d) => d.round).join(', ')})` : ''}`)
  lines.push(`rounds lost:        ${r.roundsLost}${r.roundsRedone > 0 ? `; ${r.roundsRedone} round(s) re-announced with the same hash after a restart` : ''}`)
  for (const l of r.lost.slice(0, 10)) lines.push(`  - ${l.detail}`)
  const count = (t: ChaosEvent['type']): ChaosEvent[] => r.chaos.filter((c) => c.type === t)
  const join1 = count('late-join')[0]
  const pause1 = count('pause')[0]
  lines.push(
    `faults:             ${count('kill').length} SIGKILL(s) at rounds ${count('kill').map((c) => c.swarmRound).join(', ') || '-'}; ` +
      `late join ${join1 != null ? `at round ${join1.swarmRound}` : o.lateJoinAt > 0 ? 'NOT done' : 'off'}; ` +
      `partition ${pause1 != null ? `at round ${pause1.swarmRound} for ${o.pauseMs} ms` : o.pauseAt > 0 ? 'NOT done (the swarm never settled or ended first)' : 'off'}`,
  )
  lines.push(`restarts:           ${r.restarts}`)
  for (const rec of r.recoveries) {
    const what = rec.kind === 'restart' ? `kill at round ${rec.disruptedAtRound}, restart at round ${rec.fromRound}` : rec.kind === 'late-join' ? `late join at round ${rec.fromRound}` : `partition at round ${rec.disruptedAtRound}, resumed at round ${rec.fromRound}`
    const sync = rec.synced.replay + rec.synced.snapshot > 0 ? `, synced ${rec.synced.replay} by replay + ${rec.synced.snapshot} by snapshot` : ''
    const up = rec.kind !== 'pause' ? `, up at round ${rec.upAtRound ?? 'never'}` : ''
    const contributed =
      rec.contributedInRound != null
        ? `contributes in round ${rec.contributedInRound} (+${rec.roundsToContribute} from ${rec.kind === 'pause' ? 'resume' : 'spawn'}${rec.kind !== 'pause' ? `, +${rec.roundsAfterUp} from up` : ''})`
        : 'NEVER contributed again'
    lines.push(`  peer ${rec.slot}.${rec.incarnation} ${what}${up}: ${contributed}${sync}${rec.downMs != null ? `, down ${(rec.downMs / 1000).toFixed(1)} s` : ''}${rec.ok ? '' : '  <-- too slow'}`)
  }
  lines.push(`bad exits:          ${r.badExits.length === 0 ? 'none' : r.badExits.map((b) => `peer ${b.slot}.${b.incarnation} (${b.signal ?? b.code}, ${b.log})`).join('; ')}`)
  for (const b of r.badExits.slice(0, 5)) for (const l of b.logTail.slice(-2)) lines.push(`  peer ${b.slot}.${b.incarnation}: ${l.length > 300 ? `${l.slice(0, 300)}...` : l}`)
  lines.push(`stalls:             ${r.stalls.length === 0 ? 'none' : r.stalls.map((s) => `peer ${s.slot}.${s.incarnation} round ${s.round}`).join('; ')}`)
  const rej = Object.entries(r.rejections)
  lines.push(`rejections:         ${rej.length === 0 ? 'none' : rej.map(([k, v]) => `${k} x${v}`).join(', ')}`)
  lines.push(`error log lines:    ${r.logErrors.count}`)
  lines.push(`report:             ${join(out, 'report.json')}`)
  const failed = Object.entries(r.targets).filter(([, ok]) => !ok)
  lines.push(failed.length === 0 ? 'soak OK: every target holds' : `soak FAILED: ${failed.map(([k]) => TARGET_TEXT[k as keyof SoakReport['targets']]).join('; ')}`)
  return `${lines.join('\n')}\n`
}

const TARGET_TEXT: Record<keyof SoakReport['targets'], string> = {
  noDisagreements: 'peers reported different state hashes for the same round',
  noLostRounds: 'committed rounds were lost or recommitted with another hash',
  restartsContributeWithin: `a restarted, late or partitioned peer did not contribute again within ${CONTRIBUTE_WITHIN} rounds of being up`,
  allReachedRounds: 'not every peer reached --rounds',
  noBadExits: 'a peer process exited non-zero other than by our SIGKILL',
}

async function cli(): Promise<void> {
  const d = SOAK_DEFAULTS
  const program = new Command('soak')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .description(
      'Chaos soak of a local flora swarm of real flora-peer processes (synthetic trainer): SIGKILL and restart peers, a late joiner, ' +
        'a partition simulated with SIGSTOP/SIGCONT; checks that every round has one state hash, that no committed round is lost, ' +
        'and that every restarted peer contributes again within 2 rounds.',
    )
    .option('-p, --peers <n>', 'peer processes at the start', intAtLeast('--peers', 2), d.peers)
    .option('-r, --rounds <n>', 'rounds the chain must reach', intAtLeast('--rounds', 1), d.rounds)
    .option('--kill-every <k>', 'SIGKILL a random peer after about every K committed rounds and restart it 0.5-2 s later (0: never)', intAtLeast('--kill-every', 0), d.killEvery)
    .option('--late-join-at <round>', 'start one extra peer with a fresh identity at this round (0: never)', intAtLeast('--late-join-at', 0), d.lateJoinAt)
    .option('--pause-at <round>', 'freeze one peer (SIGSTOP, then SIGCONT: a simulated partition) at this round (0: never)', intAtLeast('--pause-at', 0), d.pauseAt)
    .option('--pause-ms <ms>', 'how long the partition lasts', intAtLeast('--pause-ms', 1), d.pauseMs)
    .option('--seed <n>', 'seed of the chaos PRNG (and the swarm seed)', intAtLeast('--seed', 0), d.seed)
    .option('--deadline <ms>', 'round deadline of the peers', intAtLeast('--deadline', 100), d.deadlineMs)
    .option('--grace <ms>', 'grace per fallback proposer of the peers', intAtLeast('--grace', 50), d.graceMs)
    .option('-o, --out <dir>', 'output directory (its previous soak files are removed)', d.out)
    .option('--timeout <s>', 'kill everything after this many seconds', intAtLeast('--timeout', 1), d.timeoutS)
    .option('--train-ms <ms>', "each peer's training time per round, off this host's CPU (0: as fast as the host allows)", intAtLeast('--train-ms', 0), 1000)
    .option('--peer-args <flags>', "extra flags for every flora-peer, e.g. '--train-busy-ms 1500' (repeatable)", (v: string, prev: string[] | undefined) => [...(prev ?? []), ...v.split(/\s+/).filter((x) => x.length > 0)])
    .addOption(jsonOption())
    .allowExcessArguments(false)
  withEnvAndConfig(program, 'FLORA_SOAK_')
  const usage = parseCommandLine(program, process.argv)
  if (usage !== undefined) process.exit(usage)
  const o = program.opts<{ peers: number; rounds: number; killEvery: number; lateJoinAt: number; pauseAt: number; pauseMs: number; seed: number; deadline: number; grace: number; out: string; timeout: number; trainMs: number; peerArgs?: string[]; json?: boolean }>()
  const report = await runSoak({
    peers: o.peers,
    rounds: o.rounds,
    killEvery: o.killEvery,
    lateJoinAt: o.lateJoinAt,
    pauseAt: o.pauseAt,
    pauseMs: o.pauseMs,
    seed: o.seed,
    deadlineMs: o.deadline,
    graceMs: o.grace,
    out: o.out,
    timeoutMs: o.timeout * 1000,
    trainMs: o.trainMs,
    peerArgs: o.peerArgs,
  })
  // Text on a terminal; piped, the text goes to stderr and stdout carries the report as one JSON line.
  const json = jsonOutput(o.json)
  ;(json ? process.stderr : process.stdout).write(formatSummary(report, resolve(o.out)))
  if (json) process.stdout.write(`${JSON.stringify({ event: 'soak:report', report: join(resolve(o.out), 'report.json'), ...report })}\n`)
  process.exit(report.ok ? 0 : report.interrupted ? 130 : 1)
}

if (process.argv[1] != null && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  cli().catch((err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  })
}
