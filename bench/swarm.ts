/**
 * Swarm benchmark (not a test): N in-process peers on loopback TCP, every peer the same
 * adapter size, a trainer that costs nothing (a fixed seeded adapter), so a round's wall
 * time is protocol overhead: gossip, payload transfer, verification, merge, hashing.
 *
 *   npm run bench:swarm                          # N = 4, 8, 16, then a scale probe
 *   npm run bench:swarm -- --peers 4,8 --rounds 3 --hidden 512 --rank 16
 *
 * Per N it prints:
 *   overhead   round wall time (first local start to last commit) minus the slowest
 *              peer's local training, median over rounds. All N peers share this process
 *              (and its cores), so their N merges run one after another here: see
 *   merge/peer one peer's merge + state hash time (median), which each peer of a real
 *              deployment pays once, on its own machine;
 *   payload x  payload bytes a peer received per round / the minimum, sum over the other
 *              peers k of r_k (in + out) floats * 4 bytes (each adapter exactly once);
 *   wire x     the same for raw TCP bytes (Noise + Yamux framing, gossip, identify, hello:
 *              everything the peer's sockets received), per round, connection set-up included.
 */
import { Command } from 'commander'
import { createPeer, type FloraPeer } from '../src/node/peer.js'
import { syntheticSwarm } from '../src/node/synthetic.js'
import type { Trainer } from '../src/node/trainer.js'
import type { WireCounter } from '../src/node/wire-metrics.js'
import { initAdapter } from '../src/lora/init.js'
import { createPrng } from '../src/lora/prng.js'
import type { LoraModule } from '../src/lora/types.js'

interface RunResult {
  peers: number
  rounds: number
  ok: boolean
  error?: string
  adapterBytes: number
  overheadMs: number[]
  /** Median over peers and rounds of one peer's merge + state hash time. */
  mergeMs: number
  payloadRatio: number
  wireRatio: number
  wallMs: number
}

/** A trainer that does no work: a seeded adapter with non-zero B, cached per (rank, peer). */
function fixedTrainer(): Trainer {
  return async (ctx) => {
    const base = initAdapter({ shapes: ctx.shapes, rank: ctx.rank, alpha: ctx.alpha, seed: ctx.seed })
    const prng = createPrng(ctx.seed).fork('bench')
    const modules = base.modules.map((m): LoraModule => {
      const loraB = new Float32Array(m.loraB.length)
      prng.fork(m.name).fillUniform(loraB, -1e-3, 1e-3)
      return { ...m, loraB }
    })
    return { adapter: { modules }, samples: 100 }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? Number.NaN : s[Math.floor((s.length - 1) / 2)]
}

async function runSwarm(n: number, rounds: number, layers: number, hidden: number, rank: number, timeoutMs: number): Promise<RunResult> {
  const { config, weights } = syntheticSwarm({ layers, hidden, round: { deadlineMs: timeoutMs, graceMs: 10_000, minPeers: n } })
  const floatsPerAdapter = config.targets.reduce((s, t) => s + rank * (t.inFeatures + t.outFeatures), 0)
  const minBytes = (n - 1) * floatsPerAdapter * 4
  const peers: FloraPeer[] = []
  const wires: WireCounter[] = []
  const starts = new Map<number, number[]>()
  const commits = new Map<number, number[]>()
  const trains = new Map<number, number[]>()
  const merges: number[] = []
  const push = (m: Map<number, number[]>, r: number, v: number): void => {
    const list = m.get(r) ?? []
    list.push(v)
    m.set(r, list)
  }
  const t0 = performance.now()
  try {
    for (let i = 0; i < n; i++) {
      const wire: WireCounter = { bytesIn: 0, bytesOut: 0 }
      wires.push(wire)
      const p = await createPeer({
        config,
        weights,
        rank,
        trainer: fixedTrainer(),
        rounds,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        bootstrap: i === 0 ? [] : [peers[0].multiaddrs()[0]],
        wireCounter: wire,
      })
      p.addEventListener('round:start', (e) => push(starts, e.detail.round, performance.now()))
      p.addEventListener('round:complete', (e) => {
        push(commits, e.detail.round, performance.now())
        push(trains, e.detail.round, e.detail.metrics.trainMs ?? 0)
        if (e.detail.metrics.mergeMs != null) merges.push(e.detail.metrics.mergeMs)
      })
      peers.push(p)
      await p.start()
    }
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs).unref())
    await Promise.race([Promise.all(peers.map((p) => p.whenDone())), timeout])
    const overhead: number[] = []
    for (let r = 1; r <= rounds; r++) {
      const s = starts.get(r) ?? []
      const c = commits.get(r) ?? []
      if (s.length === 0 || c.length < n) throw new Error(`round ${r}: ${c.length}/${n} commits`)
      overhead.push(Math.max(...c) - Math.min(...s) - Math.max(...(trains.get(r) ?? [0])))
    }
    const hashes = new Set(peers.map((p) => p.head.hash))
    if (hashes.size !== 1) throw new Error('state hashes disagree')
    const payload = peers.map((p) => p.stats().payloadBytesReceived / rounds / minBytes)
    const wire = wires.map((w) => w.bytesIn / rounds / minBytes)
    return {
      peers: n,
      rounds,
      ok: true,
      adapterBytes: floatsPerAdapter * 4,
      overheadMs: overhead,
      mergeMs: median(merges),
      payloadRatio: Math.max(...payload),
      wireRatio: Math.max(...wire),
      wallMs: performance.now() - t0,
    }
  } catch (err) {
    return { peers: n, rounds, ok: false, error: (err as Error).message, adapterBytes: floatsPerAdapter * 4, overheadMs: [], mergeMs: Number.NaN, payloadRatio: Number.NaN, wireRatio: Number.NaN, wallMs: performance.now() - t0 }
  } finally {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})))
  }
}

function row(r: RunResult): string {
  if (!r.ok) return `N=${String(r.peers).padStart(3)}  FAILED: ${r.error}`
  return [
    `N=${String(r.peers).padStart(3)}`,
    `adapter ${(r.adapterBytes / 1024).toFixed(0)} KiB`,
    `overhead median ${median(r.overheadMs).toFixed(0)} ms (rounds: ${r.overheadMs.map((x) => x.toFixed(0)).join(', ')})`,
    `merge/peer ${r.mergeMs.toFixed(0)} ms`,
    `payload x${r.payloadRatio.toFixed(3)}`,
    `wire x${r.wireRatio.toFixed(3)}`,
    `wall ${(r.wallMs / 1000).toFixed(1)} s`,
  ].join('  ')
}

async function main(): Promise<void> {
  const o = new Command('bench:swarm')
    .option('--peers <list>', 'swarm sizes', '4,8,16')
    .option('--rounds <n>', 'rounds per swarm', '3')
    .option('--layers <n>', 'synthetic layers (2 targets each)', '2')
    .option('--hidden <n>', 'hidden size', '512')
    .option('--rank <n>', 'rank of every peer', '16')
    .option('--probe <list>', 'scale probe sizes (1 round, smaller adapter), stop at the first failure', '24,32')
    .option('--timeout <s>', 'per-swarm timeout', '300')
    .parse(process.argv)
    .opts<{ peers: string; rounds: string; layers: string; hidden: string; rank: string; probe: string; timeout: string }>()
  const sizes = o.peers.split(',').map(Number)
  console.log(`flora swarm bench: ${o.layers} layers x (q_proj, v_proj) of [${o.hidden}, ${o.hidden}], rank ${o.rank} on every peer, ${o.rounds} rounds, loopback TCP, in-process peers`)
  for (const n of sizes) console.log(row(await runSwarm(n, Number(o.rounds), Number(o.layers), Number(o.hidden), Number(o.rank), Number(o.timeout) * 1000)))
  const probe = o.probe.split(',').filter((x) => x.length > 0).map(Number)
  if (probe.length > 0) {
    console.log(`scale probe: 1 round, 1 layer of [128, 128] x 2, rank 4`)
    for (const n of probe) {
      const r = await runSwarm(n, 1, 1, 128, 4, Number(o.timeout) * 1000)
      console.log(row(r))
      if (!r.ok) break
    }
  }
}

await main()
