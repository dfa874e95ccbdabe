/**
 * The honest side of a red-team case: N real `flora-peer` processes (synthetic trainer) on
 * 127.0.0.1 with deterministic identities, `--json` event streams, `--records` files and
 * state dirs, plus what the harness watches of them from outside: events, VmRSS, and the
 * head snapshots their state dirs keep (to measure how far each round moved the model).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, readdirSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { identityFromSeed } from '../../src/node/identity.js'
import { setupPeer } from '../../src/node/setup.js'
import { makeSwarmConfig, parseSwarmConfig, swarmIdOf, type SwarmConfig } from '../../src/node/config.js'
import { parseSnapshot } from '../../src/node/snapshot.js'

const here = fileURLToPath(new URL('.', import.meta.url))
export const BIN = resolve(here, '..', '..', 'bin', 'flora-peer.js')

export interface HonestEvent {
  event: string
  time?: string
  round?: number
  stateHash?: string
  parentStateHash?: string
  contributors?: string[]
  members?: string[]
  proposer?: string
  view?: number
  peerId?: string
  multiaddrs?: string[]
  swarmId?: string
  reason?: string
  detail?: string
  waitedMs?: number
  synced?: string
  metrics?: { roundMs?: number }
  /** ms since the harness started this swarm (added here). */
  at: number
}

export interface HonestOptions {
  dir: string
  peers: number
  rounds: number
  seed: number
  deadlineMs: number
  graceMs: number
  /** Synthetic training time per round, off the CPU (--train-delay-ms). */
  trainDelayMs: number
  /** Closed swarm: allowlist these honest peers (written into a --config file). */
  allowlist?: boolean
  logLevel?: string
  extraArgs?: string[]
}

export interface HonestPeer {
  index: number
  peerId: string
  key: PrivateKey
  child: ChildProcess
  pid: number
  addr: string | null
  events: HonestEvent[]
  exitCode: number | null
  exited: Promise<void>
  stateDir: string
  logFile: string
  /** round -> head weights captured from the state dir (heads/<r>.safetensors). */
  heads: Map<number, Map<string, Float32Array>>
  rss: Array<{ at: number; mb: number }>
}

/** The swarm config the honest peers will run (the same options `flora-peer` gets). */
export async function honestConfig(o: Pick<HonestOptions, 'peers' | 'seed' | 'deadlineMs' | 'graceMs'>, members?: readonly string[]): Promise<{ config: SwarmConfig; weights: ReadonlyMap<string, Float32Array> }> {
  const setup = await setupPeer({
    trainer: 'synthetic',
    round: { minPeers: o.peers, deadlineMs: o.deadlineMs, graceMs: o.graceMs },
    rank: 4,
    alpha: 8,
    seed: o.seed,
    configOnly: true,
  } as Parameters<typeof setupPeer>[0])
  let config = setup.config
  if (members != null) config = makeSwarmConfig({ ...config, members })
  return { config, weights: setup.weights }
}

/** `flora-peer --print-config` with the honest swarm flags. */
export async function printConfig(o: Pick<HonestOptions, 'peers' | 'seed' | 'deadlineMs' | 'graceMs'>): Promise<SwarmConfig> {
  const env = { ...process.env, FLORA_FROM_SOURCE: process.env.FLORA_FROM_SOURCE ?? '1' }
  const args = [BIN, '--trainer', 'synthetic', '--min-peers', String(o.peers), '--deadline', String(o.deadlineMs), '--grace', String(o.graceMs), '--seed', String(o.seed), '--print-config']
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'ignore'] })
  let text = ''
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()))
  const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)))
  if (code !== 0) throw new Error(`flora-peer --print-config exited ${code}`)
  return parseSwarmConfig(JSON.parse(text))
}

export function rssMb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m != null ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

export class HonestSwarm {
  readonly peers: HonestPeer[] = []
  readonly t0 = Date.now()
  config!: SwarmConfig
  swarmId!: string
  genesis!: ReadonlyMap<string, Float32Array>
  #listeners = new Set<(p: HonestPeer, e: HonestEvent) => void>()
  #timers: NodeJS.Timeout[] = []
  /** Highest round any honest peer committed, with its state hash and members. */
  head = { round: 0, stateHash: '', members: [] as string[] }

  constructor(readonly o: HonestOptions) {}

  now(): number {
    return Date.now() - this.t0
  }

  on(fn: (p: HonestPeer, e: HonestEvent) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** Resolves with the first event (of any honest peer) that `pred` accepts. */
  waitFor(pred: (p: HonestPeer, e: HonestEvent) => boolean, timeoutMs: number): Promise<{ peer: HonestPeer; event: HonestEvent } | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        off()
        resolve(null)
      }, timeoutMs)
      const off = this.on((p, e) => {
        if (!pred(p, e)) return
        clearTimeout(timer)
        off()
        resolve({ peer: p, event: e })
      })
    })
  }

  /** Resolves when some honest peer committed `round` (the next round has begun there). */
  async roundStarted(round: number, timeoutMs = 30_000): Promise<{ round: number; parent: string; members: string[] } | null> {
    if (this.head.round >= round - 1) return { round: this.head.round + 1, parent: this.head.stateHash, members: this.head.members }
    const got = await this.waitFor((_p, e) => e.event === 'round:complete' && (e.round ?? 0) >= round - 1, timeoutMs)
    if (got == null) return null
    return { round: this.head.round + 1, parent: this.head.stateHash, members: this.head.members }
  }

  get allExited(): boolean {
    return this.peers.every((p) => p.exitCode != null || p.child.signalCode != null)
  }

  async start(): Promise<void> {
    const o = this.o
    await mkdir(o.dir, { recursive: true })
    const keys = await Promise.all(Array.from({ length: o.peers }, (_, i) => identityFromSeed(`redteam:${o.seed}:honest:${i}`)))
    const ids = keys.map((k) => peerIdFromPrivateKey(k).toString())
    // The config as the honest processes build it (`flora-peer --print-config`): the source
    // they load may be newer than this process's copy when src/ changes during a run.
    const built = await honestConfig(o, o.allowlist === true ? ids : undefined)
    const printed = await printConfig(o).catch(() => null)
    if (printed != null) built.config = o.allowlist === true ? makeSwarmConfig({ ...printed, members: ids }) : printed
    this.config = built.config
    this.genesis = built.weights
    this.swarmId = swarmIdOf(built.config)
    let configFile: string | undefined
    if (o.allowlist === true) {
      configFile = join(o.dir, 'swarm.json')
      await writeFile(configFile, `${JSON.stringify(built.config, null, 2)}\n`)
    }
    const env = { ...process.env, FLORA_FROM_SOURCE: process.env.FLORA_FROM_SOURCE ?? '1' }
    const launch = async (i: number, bootstrap: string | undefined): Promise<HonestPeer> => {
      const keyFile = join(o.dir, `peer-${i}.key`)
      await writeFile(keyFile, privateKeyToProtobuf(keys[i]), { mode: 0o600 })
      const stateDir = join(o.dir, `peer-${i}.state`)
      const logFile = join(o.dir, `peer-${i}.log`)
      const args = [
        BIN,
        '--trainer', 'synthetic',
        '--rounds', String(o.rounds),
        '--min-peers', String(o.peers),
        '--deadline', String(o.deadlineMs),
        '--grace', String(o.graceMs),
        '--seed', String(o.seed),
        '--listen', '/ip4/127.0.0.1/tcp/0',
        '--json',
        '--rank', String([8, 4, 2, 16][i % 4]),
        '--data', `synthetic:${i}`,
        '--identity', keyFile,
        '--state-dir', stateDir,
        '--records', join(o.dir, `peer-${i}.records.jsonl`),
        '--report', join(o.dir, `peer-${i}.json`),
        '--linger', '300',
        '--log-level', o.logLevel ?? 'info',
        ...(o.trainDelayMs > 0 ? ['--train-delay-ms', String(o.trainDelayMs)] : []),
        ...(configFile != null ? ['--config', configFile] : []),
        ...(bootstrap != null ? ['--bootstrap', bootstrap] : []),
        ...(o.extraArgs ?? []),
      ]
      const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
      child.stderr?.pipe(createWriteStream(logFile))
      const eventsOut = createWriteStream(join(o.dir, `peer-${i}.events.jsonl`))
      const peer: HonestPeer = {
        index: i,
        peerId: ids[i],
        key: keys[i],
        child,
        pid: child.pid ?? -1,
        addr: null,
        events: [],
        exitCode: null,
        exited: new Promise((res) => child.on('exit', (code, sig) => {
          peer.exitCode = code ?? (sig != null ? 128 : -1)
          eventsOut.end()
          res()
        })),
        stateDir,
        logFile,
        heads: new Map(),
        rss: [],
      }
      this.peers.push(peer)
      if (child.stdout != null) {
        createInterface({ input: child.stdout }).on('line', (line) => {
          eventsOut.write(`${line}\n`)
          let e: HonestEvent
          try {
            e = { ...(JSON.parse(line) as object), at: this.now() } as HonestEvent
          } catch {
            return
          }
          peer.events.push(e)
          if (e.event === 'listening') peer.addr = e.multiaddrs?.[0] ?? null
          if (e.event === 'round:complete' && e.round != null && e.round > this.head.round) {
            this.head = { round: e.round, stateHash: e.stateHash ?? '', members: e.members ?? [] }
          }
          if (e.event === 'round:complete') this.#captureHeads(peer)
          for (const fn of [...this.#listeners]) fn(peer, e)
        })
      }
      return peer
    }
    const first = await launch(0, undefined)
    const listening = await this.waitFor((p, e) => p === first && e.event === 'listening', 60_000)
    if (listening == null || first.addr == null) throw new Error(`honest peer 0 never listened (see ${first.logFile})`)
    if (listening.event.swarmId !== this.swarmId) {
      throw new Error(`honest peers run swarm ${listening.event.swarmId?.slice(0, 12)}, the harness built ${this.swarmId.slice(0, 12)}: the attacker's config would differ`)
    }
    for (let i = 1; i < o.peers; i++) await launch(i, first.addr)
    // VmRSS every 250 ms; head snapshots every 50 ms (a state dir keeps the last two).
    this.#timers.push(setInterval(() => {
      for (const p of this.peers) {
        if (p.exitCode != null) continue
        const mb = rssMb(p.pid)
        if (mb != null) p.rss.push({ at: this.now(), mb })
      }
    }, 250))
    this.#timers.push(setInterval(() => {
      for (const p of this.peers) if (p.exitCode == null) this.#captureHeads(p)
    }, 50))
    for (const t of this.#timers) t.unref()
  }

  /** Waits until every honest peer printed its addresses. */
  async allListening(timeoutMs = 60_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (this.peers.every((p) => p.addr != null)) return this.peers.map((p) => p.addr as string)
      if (this.peers.some((p) => p.exitCode != null)) break
      await sleep(50)
    }
    throw new Error('honest peers did not all start listening')
  }

  #captureHeads(p: HonestPeer): void {
    const dir = join(p.stateDir, 'heads')
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      return
    }
    for (const n of names) {
      const m = /^(\d+)\.safetensors$/.exec(n)
      if (m == null) continue
      const r = Number(m[1])
      if (p.heads.has(r)) continue
      try {
        const s = parseSnapshot(new Uint8Array(readFileSync(join(dir, n))), this.config.targets, { swarmId: this.swarmId, round: r })
        p.heads.set(r, new Map(s.weights))
      } catch {
        // being written: next poll
      }
    }
  }

  /** Waits for every honest process to exit (SIGTERM, then SIGKILL, after timeoutMs). */
  async finish(timeoutMs: number): Promise<boolean> {
    const all = Promise.all(this.peers.map((p) => p.exited))
    const timedOut = await Promise.race([all.then(() => false), sleep(timeoutMs).then(() => true)])
    if (timedOut) {
      for (const p of this.peers) if (p.exitCode == null) p.child.kill('SIGTERM')
      const late = await Promise.race([all.then(() => false), sleep(5000).then(() => true)])
      if (late) for (const p of this.peers) if (p.exitCode == null) p.child.kill('SIGKILL')
      await Promise.race([all, sleep(3000)])
    }
    for (const p of this.peers) this.#captureHeads(p)
    return !timedOut
  }

  /** Kills every honest process still running (cleanup path). */
  kill(): void {
    for (const t of this.#timers) clearInterval(t)
    for (const p of this.peers) if (p.exitCode == null && p.child.signalCode == null) p.child.kill('SIGKILL')
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
