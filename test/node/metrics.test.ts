/**
 * Prometheus metrics (docs/METRICS.md): two peers over loopback TCP, each with its own
 * registry (flora's PeerMetrics and libp2p's @libp2p/prometheus-metrics on it) served
 * on port 0, scraped over HTTP once both peers are done.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Registry } from 'prom-client'
import type { WireCounter } from '../../src/node/wire-metrics.js'
import { PeerMetrics, startMetricsServer, type MetricsServer } from '../../src/node/metrics.js'
import { createPeer } from '../../src/node/peer.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import type { FloraEvents } from '../../src/node/service.js'
import { startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

const ROUNDS = 2

/** The value of one sample line (`name{labels} value`) of a text exposition, or undefined. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const prefix = labels === '' ? `${name} ` : `${name}{${labels}} `
  const line = text.split('\n').find((l) => l.startsWith(prefix))
  return line == null ? undefined : Number(line.slice(prefix.length))
}

describe('Prometheus metrics of a 2-peer swarm', () => {
  let swarm: TestSwarm | undefined
  const registries = [new Registry(), new Registry()]
  // With a registry too, the wire counter still counts (libp2p takes one metrics component).
  const wires: WireCounter[] = [{ bytesIn: 0, bytesOut: 0 }, { bytesIn: 0, bytesOut: 0 }]
  const metrics: PeerMetrics[] = []
  const servers: MetricsServer[] = []
  const scrapes: string[] = []
  const done: Promise<FloraEvents['done']['detail']>[] = []

  beforeAll(async () => {
    swarm = await startTestSwarm({
      ranks: [2, 4],
      rounds: ROUNDS,
      idSeed: 'metrics',
      peerOptions: (i) => ({ metrics: registries[i], wireCounter: wires[i] }),
      // Before start: every member:join and round event is seen.
      beforeStart: (peer, i) => {
        metrics.push(new PeerMetrics(registries[i], peer))
        done.push(waitForEvent(peer, 'done', () => true, 60_000))
      },
    })
    for (const registry of registries) servers.push(await startMetricsServer({ host: '127.0.0.1', port: 0, registry }))
    await Promise.all(done)
    for (const server of servers) {
      const res = await fetch(server.url)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe(registries[0].contentType)
      scrapes.push(await res.text())
    }
  })

  afterAll(async () => {
    for (const m of metrics) m.close()
    await Promise.all(servers.map((s) => s.close()))
    await swarm?.stop()
  })

  it('serves on an OS-chosen port of 127.0.0.1', () => {
    for (const server of servers) expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*\/metrics$/)
    expect(servers[0].url).not.toBe(servers[1].url)
  })

  it('counts the committed rounds, the round durations and the head', () => {
    for (const text of scrapes) {
      expect(sample(text, 'flora_rounds_committed_total')).toBe(ROUNDS)
      expect(sample(text, 'flora_head_round')).toBe(ROUNDS)
      expect(sample(text, 'flora_current_round')).toBe(ROUNDS)
      expect(sample(text, 'flora_done')).toBe(1)
      // Rounds taken part in are timed; caught-up ones are counted as synced instead.
      const synced = (sample(text, 'flora_rounds_synced_total', 'via="replay"') ?? NaN) + (sample(text, 'flora_rounds_synced_total', 'via="snapshot"') ?? NaN)
      expect((sample(text, 'flora_round_duration_seconds_count') ?? NaN) + synced).toBe(ROUNDS)
      expect(sample(text, 'flora_round_duration_seconds_bucket', 'le="+Inf"')).toBe(sample(text, 'flora_round_duration_seconds_count'))
      expect(sample(text, 'flora_round_duration_seconds_sum')).toBeGreaterThan(0)
      expect(sample(text, 'flora_rounds_stalled_total')).toBe(0)
    }
  })

  it('reports the members, the contributors and the received adapters', () => {
    for (const text of scrapes) {
      // Connected members other than this peer; recorded members include it.
      expect(sample(text, 'flora_members')).toBe(1)
      expect(sample(text, 'flora_round_members')).toBe(2)
      // No faults: both adapters are merged every round, each peer fetched the other's.
      expect(sample(text, 'flora_round_contributors')).toBe(2)
      expect(sample(text, 'flora_adapters_received_total')).toBe(ROUNDS)
      // One fetch latency per adapter received.
      expect(sample(text, 'flora_payload_fetch_seconds_count')).toBe(ROUNDS)
      expect(sample(text, 'flora_payload_fetch_seconds_sum')).toBeGreaterThan(0)
      expect(sample(text, 'flora_payload_received_bytes_total')).toBeGreaterThan(0)
      expect(sample(text, 'flora_payload_sent_bytes_total')).toBeGreaterThan(0)
      expect(sample(text, 'flora_gossip_received_bytes_total')).toBeGreaterThan(0)
    }
  })

  it('has a rejections counter by reason, every reason from 0', () => {
    for (const text of scrapes) {
      expect(text).toContain('# TYPE flora_rejections_total counter')
      for (const reason of ['malformed', 'bad-signature', 'equivocation', 'flood']) {
        expect(sample(text, 'flora_rejections_total', `reason="${reason}"`)).toBeGreaterThanOrEqual(0)
      }
    }
  })

  it("reports the trainer's loss and the merge and training times of the last round", () => {
    for (const text of scrapes) {
      // The synthetic trainer reports a loss.
      expect(Number.isFinite(sample(text, 'flora_train_loss'))).toBe(true)
      expect(sample(text, 'flora_train_seconds')).toBeGreaterThanOrEqual(0)
      expect(sample(text, 'flora_merge_seconds')).toBeGreaterThan(0)
      // Nothing evaluated the weights here: no eval loss at all (not a 0).
      expect(text).not.toContain('flora_eval_loss')
    }
  })

  it("has libp2p's metrics on the same registry, bytes by protocol among them", () => {
    for (const text of scrapes) {
      expect(text).toMatch(/^libp2p_\w+/m)
      expect(sample(text, 'libp2p_data_transfer_bytes_total', 'protocol="global received"')).toBeGreaterThan(0)
      expect(text).toMatch(/^libp2p_data_transfer_bytes_total\{protocol="\/flora\/[^"]+ (sent|received)"\} [1-9]/m)
    }
  })

  it('still feeds a wire counter given with the registry', () => {
    for (const wire of wires) {
      expect(wire.bytesIn).toBeGreaterThan(0)
      expect(wire.bytesOut).toBeGreaterThan(0)
    }
  })

  it('answers 404 elsewhere and 405 for other methods on /metrics', async () => {
    const base = servers[0].url.replace(/\/metrics$/, '')
    expect((await fetch(`${base}/`)).status).toBe(404)
    expect((await fetch(`${base}/metrics/x`)).status).toBe(404)
    expect((await fetch(`${base}/other`)).status).toBe(404)
    const post = await fetch(servers[0].url, { method: 'POST' })
    expect(post.status).toBe(405)
    expect(post.headers.get('allow')).toBe('GET, HEAD')
    expect((await fetch(`${servers[0].url}?name=x`)).status).toBe(200)
  })
})

describe('PeerMetrics before any round', () => {
  it('shows the genesis head and no members, and no value it does not have yet; keeps the newest eval loss', async () => {
    const { config, weights } = syntheticSwarm()
    const peer = await createPeer({ config, weights, rank: 2, trainer: syntheticTrainer(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    const registry = new Registry()
    const metrics = new PeerMetrics(registry, peer)
    try {
      const text = await registry.metrics()
      expect(sample(text, 'flora_head_round')).toBe(0)
      expect(sample(text, 'flora_members')).toBe(0)
      expect(sample(text, 'flora_rounds_committed_total')).toBe(0)
      expect(sample(text, 'flora_done')).toBe(0)
      for (const name of ['flora_current_round', 'flora_round_contributors', 'flora_round_members', 'flora_train_loss', 'flora_train_seconds', 'flora_merge_seconds', 'flora_eval_loss']) {
        expect(text).not.toContain(name)
      }
      metrics.recordEval(0, 2.5)
      // No accuracy measured (synthetic trainer): no accuracy gauge, not a 0.
      expect(await registry.metrics()).not.toContain('flora_eval_accuracy')
      metrics.recordEval(3, 1.25, 0.375)
      // An older round's evaluation finishing late does not overwrite a newer one.
      metrics.recordEval(2, 1.75, 0.25)
      expect(sample(await registry.metrics(), 'flora_eval_loss')).toBe(1.25)
      expect(sample(await registry.metrics(), 'flora_eval_accuracy')).toBe(0.375)
      // A second PeerMetrics on the same registry is refused (the names are fixed).
      expect(() => new PeerMetrics(registry, peer)).toThrow(/already been registered/)
    } finally {
      metrics.close()
      await peer.stop()
    }
  })
})

describe('startMetricsServer', () => {
  it('stops listening on close (idempotent)', async () => {
    const server = await startMetricsServer({ port: 0, registry: new Registry() })
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
    // An open keep-alive connection does not hold close() up.
    expect((await fetch(server.url)).status).toBe(200)
    await Promise.all([server.close(), server.close()])
    await expect(fetch(server.url)).rejects.toThrow()
  })

  it('fails with the OS error when the port is taken', async () => {
    const first = await startMetricsServer({ port: 0, registry: new Registry() })
    try {
      const port = Number(new URL(first.url).port)
      await expect(startMetricsServer({ host: '127.0.0.1', port, registry: new Registry() })).rejects.toThrow(/EADDRINUSE/)
    } finally {
      await first.close()
    }
  })
})
