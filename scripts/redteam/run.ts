/**
 * Runs one red-team case against a fresh honest swarm and measures it from outside:
 * rejections the honest peers reported (with reasons), honest rounds lost, forks, honest
 * RSS growth, and how far each round moved the model (head snapshots of the state dirs).
 */
import { rm, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { createPrng, type Prng } from '../../src/lora/prng.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { Attacker, type AttackerOptions } from './attacker.js'
import { HonestSwarm, sleep, type HonestOptions } from './honest.js'

export interface CaseContext {
  swarm: HonestSwarm
  /** Median honest round time of the clean baseline (ms), when it ran. */
  baselineRoundMs: number | null
  rng: Prng
  seed: number
  /** Starts an attacker (stopped with the case); its key is derived from the seed and label. */
  attacker(label: string, options?: Partial<AttackerOptions>): Promise<Attacker>
  key(label: string): Promise<PrivateKey>
  /** The round running now on the fastest honest peer, and its parent. */
  current(): { round: number; parent: string; members: string[] }
  /** Waits for the next commit; returns the round that then begins. */
  nextRound(timeoutMs?: number): Promise<{ round: number; parent: string; members: string[] } | null>
  /** Counts inputs tried. */
  tried(kind: string, n?: number): void
  note(key: string, value: unknown): void
  /** An attack-specific target. */
  target(name: string, pass: boolean, detail: string): void
  /** Marks rounds as attacked (for the per-round report). */
  attacked(round: number, what: string): void
  /** Closes the measurement window for RSS (default: when run() returns). */
  endWindow(): void
  log(line: string): void
  cleanup(fn: () => Promise<void> | void): void
}

export interface AttackCase {
  name: string
  description: string
  rounds?: number
  /** Honest synthetic training time per round for this case (default: the run's). */
  trainDelayMs?: number
  allowlist?: boolean
  logLevel?: string
  /** RSS target applies (floods). */
  flood?: boolean
  /** Model-movement target applies (poisoned adapters). */
  poison?: boolean
  run(ctx: CaseContext): Promise<void>
}

export interface RoundRow {
  round: number
  hashes: Record<string, string | null>
  fork: boolean
  honestContributors: number
  attackerContributed: boolean
  contributors: number
  roundMs: number | null
  view: number | null
  lost: boolean
  lostWhy: string[]
  attacked: string[]
  /** max over modules of ||W_r - W_{r-1}||_F / ||W_{r-1}||_F (peer 0's heads); null: not captured. */
  movement: number | null
}

export interface Target {
  name: string
  pass: boolean
  detail: string
}

export interface CaseResult {
  name: string
  description: string
  ok: boolean
  error: string | null
  durationMs: number
  attackers: string[]
  inputs: Record<string, number>
  rejections: Record<string, number>
  /** Rejections that named an honest peer (false positives). */
  rejectionsOfHonest: Record<string, number>
  rejectionSamples: Array<{ peer: number; reason: string; detail: string; round: number | null }>
  rounds: RoundRow[]
  roundsLost: number
  forks: number
  rssGrowthMb: number
  rssMb: Array<{ peer: number; before: number | null; peak: number | null; after: number | null }>
  movement: { maxRatio: number | null; boundRatio: number; attackerRounds: number[] }
  honestExitCodes: Array<number | null>
  notes: Record<string, unknown>
  targets: Target[]
}

export interface RunOptions {
  out: string
  seed: number
  peers: number
  rounds: number
  deadlineMs: number
  graceMs: number
  trainDelayMs: number
  log?: (line: string) => void
  /** Lost rounds of the clean baseline (subtracted). */
  baselineLost?: number
  /** Median honest round time of the clean baseline (ms). */
  baselineRoundMs?: number | null
  /** Keep the honest state dirs and keys (default: removed). */
  keep?: boolean
}

export async function runCase(c: AttackCase, o: RunOptions): Promise<CaseResult> {
  const say = o.log ?? ((l: string) => process.stderr.write(`${l}\n`))
  const dir = join(o.out, c.name)
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const rounds = c.rounds ?? o.rounds
  const honestOpts: HonestOptions = {
    dir,
    peers: o.peers,
    rounds,
    seed: o.seed,
    deadlineMs: o.deadlineMs,
    graceMs: o.graceMs,
    trainDelayMs: c.trainDelayMs ?? o.trainDelayMs,
    allowlist: c.allowlist,
    logLevel: c.logLevel,
  }
  const swarm = new HonestSwarm(honestOpts)
  const attackers: Attacker[] = []
  const cleanups: Array<() => Promise<void> | void> = []
  const inputs: Record<string, number> = {}
  const notes: Record<string, unknown> = {}
  const extra: Target[] = []
  const attackedRounds = new Map<number, string[]>()
  let windowStart = 0
  let windowEnd: number | null = null
  let error: string | null = null
  const t0 = Date.now()
  const ctx: CaseContext = {
    swarm,
    baselineRoundMs: o.baselineRoundMs ?? null,
    rng: createPrng(`flora-redteam:${o.seed}:${c.name}`),
    seed: o.seed,
    key: (label) => identityFromSeed(`redteam:${o.seed}:${c.name}:${label}`),
    attacker: async (label, options) => {
      const a = await Attacker.start({ privateKey: await ctx.key(label), config: swarm.config, ...options })
      attackers.push(a)
      return a
    },
    current: () => ({ round: swarm.head.round + 1, parent: swarm.head.stateHash, members: swarm.head.members }),
    nextRound: async (timeoutMs = 30_000) => swarm.roundStarted(swarm.head.round + 2, timeoutMs),
    tried: (kind, n = 1) => void (inputs[kind] = (inputs[kind] ?? 0) + n),
    note: (k, v) => void (notes[k] = v),
    target: (name, pass, detail) => void extra.push({ name, pass, detail }),
    attacked: (round, what) => {
      const l = attackedRounds.get(round) ?? []
      l.push(what)
      attackedRounds.set(round, l)
    },
    endWindow: () => void (windowEnd ??= swarm.now()),
    log: (line) => say(`  [${c.name} ${(swarm.now() / 1000).toFixed(1)} s] ${line}`),
    cleanup: (fn) => void cleanups.push(fn),
  }
  try {
    await swarm.start()
    await swarm.allListening()
    const formed = await swarm.roundStarted(2, 60_000)
    if (formed == null) throw new Error('the honest swarm never committed round 1')
    windowStart = swarm.now()
    await withTimeout(c.run(ctx), 20_000 + rounds * (o.deadlineMs + 3 * o.graceMs), `${c.name} did not finish`)
    ctx.endWindow()
  } catch (err) {
    error = (err as Error).message
    ctx.log(`error: ${error}`)
  } finally {
    windowEnd ??= swarm.now()
    await swarm.finish(Math.max(5000, rounds * (o.deadlineMs + 2 * o.graceMs))).catch(() => false)
    for (const a of attackers) await a.stop()
    for (const fn of cleanups) await Promise.resolve(fn()).catch(() => {})
    swarm.kill()
  }

  const result = measure(c, swarm, {
    attackers: attackers.map((a) => a.peerId),
    inputs,
    notes,
    extra,
    attackedRounds,
    windowStart,
    windowEnd: windowEnd ?? swarm.now(),
    error,
    durationMs: Date.now() - t0,
    rounds,
    o,
  })
  await writeFile(join(o.out, `${c.name}.json`), `${JSON.stringify(result, null, 2)}\n`)
  if (o.keep !== true) {
    for (const p of swarm.peers) await rm(p.stateDir, { recursive: true, force: true })
  }
  return result
}

function frob(a: Float32Array, b: Float32Array): { diff: number; norm: number } {
  let d = 0
  let n = 0
  for (let i = 0; i < a.length; i++) {
    const x = a[i] - b[i]
    d += x * x
    n += b[i] * b[i]
  }
  return { diff: Math.sqrt(d), norm: Math.sqrt(n) }
}

/** max over modules of ||W - P||_F / ||P||_F; Infinity when not finite. */
export function movementRatio(w: ReadonlyMap<string, Float32Array>, parent: ReadonlyMap<string, Float32Array>): number {
  let max = 0
  for (const [name, p] of parent) {
    const x = w.get(name)
    if (x == null) continue
    const { diff, norm } = frob(x, p)
    const r = norm > 0 ? diff / norm : diff
    if (!Number.isFinite(r)) return Number.POSITIVE_INFINITY
    max = Math.max(max, r)
  }
  return max
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

function measure(
  c: AttackCase,
  swarm: HonestSwarm,
  m: {
    attackers: string[]
    inputs: Record<string, number>
    notes: Record<string, unknown>
    extra: Target[]
    attackedRounds: Map<number, string[]>
    windowStart: number
    windowEnd: number
    error: string | null
    durationMs: number
    rounds: number
    o: RunOptions
  },
): CaseResult {
  const { o } = m
  const honest = new Set(swarm.peers.map((p) => p.peerId))
  const attackers = new Set(m.attackers)
  const rejections: Record<string, number> = {}
  const rejectionsOfHonest: Record<string, number> = {}
  const samples: CaseResult['rejectionSamples'] = []
  const seenReason = new Set<string>()
  for (const p of swarm.peers) {
    for (const e of p.events) {
      if (e.event !== 'peer:rejected' || e.at < m.windowStart) continue
      const reason = e.reason ?? '?'
      if (e.peerId != null && honest.has(e.peerId)) rejectionsOfHonest[reason] = (rejectionsOfHonest[reason] ?? 0) + 1
      else rejections[reason] = (rejections[reason] ?? 0) + 1
      if (!seenReason.has(reason) && samples.length < 20) {
        seenReason.add(reason)
        samples.push({ peer: p.index, reason, detail: (e.detail ?? '').slice(0, 300), round: e.round ?? null })
      }
    }
  }
  const limitMs = o.deadlineMs + 2 * o.graceMs
  const rows: RoundRow[] = []
  const heads = swarm.peers.find((p) => p.heads.size > 0)?.heads
  for (let r = 1; r <= m.rounds; r++) {
    const hashes: Record<string, string | null> = {}
    let contributors: string[] = []
    let roundMs: number | null = null
    let view: number | null = null
    const why: string[] = []
    for (const p of swarm.peers) {
      const e = p.events.find((x) => x.event === 'round:complete' && x.round === r)
      hashes[p.peerId] = e?.stateHash ?? null
      if (e == null) continue
      if (e.contributors != null && e.contributors.length >= contributors.length) contributors = e.contributors
      if (e.synced == null && e.metrics?.roundMs != null) roundMs = Math.max(roundMs ?? 0, e.metrics.roundMs)
      view = Math.max(view ?? 0, e.view ?? 0)
    }
    const seen = Object.values(hashes).filter((h): h is string => h != null)
    const fork = new Set(seen).size > 1
    const honestContributors = contributors.filter((x) => honest.has(x)).length
    if (seen.length < swarm.peers.length) why.push(`${swarm.peers.length - seen.length} honest peer(s) never committed it`)
    if (honestContributors < swarm.peers.length && seen.length > 0) why.push(`${honestContributors}/${swarm.peers.length} honest contributors`)
    if (roundMs != null && roundMs > limitMs) why.push(`took ${roundMs} ms > deadline + 2 grace (${limitMs} ms)`)
    let movement: number | null = null
    if (heads != null) {
      const w = heads.get(r)
      const parent = r === 1 ? swarm.genesis : heads.get(r - 1)
      if (w != null && parent != null) movement = movementRatio(w, parent)
    }
    rows.push({
      round: r,
      hashes,
      fork,
      honestContributors,
      attackerContributed: contributors.some((x) => attackers.has(x)),
      contributors: contributors.length,
      roundMs,
      view,
      // Round 1 forms the swarm before any attack: not counted.
      lost: r > 1 && why.length > 0,
      lostWhy: why,
      attacked: m.attackedRounds.get(r) ?? [],
      movement,
    })
  }
  const forks = rows.filter((r) => r.fork).length
  const roundsLost = rows.filter((r) => r.lost).length
  const rss = swarm.peers.map((p) => {
    const before = [...p.rss].reverse().find((s) => s.at <= m.windowStart)?.mb ?? p.rss.find((s) => s.at >= m.windowStart)?.mb ?? null
    const inWindow = p.rss.filter((s) => s.at >= m.windowStart && s.at <= m.windowEnd + 2000).map((s) => s.mb)
    const peak = inWindow.length > 0 ? Math.max(...inWindow) : null
    const after = [...p.rss].reverse().find((s) => s.at <= m.windowEnd + 2000)?.mb ?? null
    return { peer: p.index, before, peak, after }
  })
  const rssGrowthMb = Math.max(0, ...rss.map((x) => (x.before != null && x.peak != null ? x.peak - x.before : 0)))
  const bound = swarm.config.contribution.maxDeltaRatio
  const attackerRounds = rows.filter((r) => r.attackerContributed).map((r) => r.round)
  const measured = rows.filter((r) => r.round > 1 && r.movement != null).map((r) => r.movement as number)
  const maxRatio = measured.length > 0 ? Math.max(...measured) : null
  const baselineLost = o.baselineLost ?? 0
  const targets: Target[] = [
    { name: 'no forks', pass: forks === 0, detail: `${forks} round(s) where honest state hashes differ` },
    {
      name: 'at most one honest round lost',
      pass: roundsLost - baselineLost <= 1,
      detail: `${roundsLost} lost (baseline ${baselineLost}): ${rows.filter((r) => r.lost).map((r) => `r${r.round} ${r.lostWhy.join('; ')}`).join(' | ') || 'none'}`,
    },
  ]
  if (c.flood === true) targets.push({ name: 'honest RSS growth < 50 MB', pass: rssGrowthMb < 50, detail: `${rssGrowthMb.toFixed(1)} MB` })
  if (c.poison === true) {
    const attackedRows = rows.filter((r) => r.attackerContributed || r.attacked.length > 0)
    const moved = attackedRows.filter((r) => r.movement != null).map((r) => r.movement as number)
    const worst = moved.length > 0 ? Math.max(...moved) : null
    targets.push({
      name: 'poison moves the model by at most the bound',
      pass: worst != null && worst <= bound * (1 + 1e-6),
      detail:
        worst == null
          ? 'movement not measured (no head snapshots captured for the attacked rounds)'
          : `max per-module ||W_r - W_r-1||_F / ||W_r-1||_F over attacked rounds ${attackedRows.map((r) => r.round).join(',')} = ${worst.toPrecision(4)} vs maxDeltaRatio ${bound}; attacker merged in rounds [${attackerRounds.join(',')}]; clean rounds max ${maxRatio != null ? Math.max(0, ...rows.filter((r) => r.round > 1 && !attackedRows.includes(r) && r.movement != null).map((r) => r.movement as number)).toPrecision(4) : '?'}`,
    })
  }
  targets.push(...m.extra)
  if (m.error != null) targets.push({ name: 'case ran to the end', pass: false, detail: m.error })
  return {
    name: c.name,
    description: c.description,
    ok: targets.every((t) => t.pass),
    error: m.error,
    durationMs: m.durationMs,
    attackers: m.attackers,
    inputs: m.inputs,
    rejections,
    rejectionsOfHonest,
    rejectionSamples: samples,
    rounds: rows,
    roundsLost,
    forks,
    rssGrowthMb: Math.round(rssGrowthMb * 10) / 10,
    rssMb: rss,
    movement: { maxRatio, boundRatio: bound, attackerRounds },
    honestExitCodes: swarm.peers.map((p) => p.exitCode),
    notes: m.notes,
    targets,
  }
}

/** Median round time (ms) of rounds after the first, over the given result. */
export function medianRoundMs(r: CaseResult): number | null {
  return median(r.rounds.filter((x) => x.round > 1 && x.roundMs != null).map((x) => x.roundMs as number))
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)
      timer.unref()
    }),
  ])
}

export { sleep }
