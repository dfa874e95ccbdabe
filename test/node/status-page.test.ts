/**
 * The live status page (`flora-peer --http`): a 3-peer swarm over loopback TCP, a hostile
 * peer sending malformed gossip, and peer 0's page served by startPeerHttpServer. The JSON
 * is checked directly; the page itself is loaded in headless Chromium (Debian's `chromium`,
 * driven by playwright-core) and must show the members with their ranks, every round's
 * certified hash, the loss plot and the rejection.
 *
 * FLORA_UPDATE_SCREENSHOTS=1 writes the page's screenshot to docs/status-page.png (the one
 * in the README).
 */
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chromium } from 'playwright-core'
import { Registry } from 'prom-client'
import { swarmTopic } from '../../src/gossip/topics.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { startPeerHttpServer, type PeerHttpServer } from '../../src/node/http.js'
import { PeerMetrics } from '../../src/node/metrics.js'
import { StatusTracker, type PeerStatus } from '../../src/node/status.js'
import { STATUS_PAGE_HTML } from '../../src/node/status-page.js'
import { syntheticEvalLoss } from '../../src/node/trainer.js'
import { startAttacker, type Attacker } from './attacker.js'
import { gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'
import { findChromium } from '../../scripts/browser-tab.js'

const ROUNDS = 3
const RANKS = [2, 4, 8]
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

describe('the live status page of a peer', () => {
  let swarm: TestSwarm | undefined
  let attacker: Attacker | undefined
  let server: PeerHttpServer | undefined
  let status: StatusTracker | undefined
  let metrics: PeerMetrics | undefined
  const registry = new Registry()

  beforeAll(async () => {
    const release = gate()
    const s = await startTestSwarm({
      ranks: RANKS,
      rounds: ROUNDS,
      idSeed: 'status-page',
      // Round 3 waits until the hostile peer has been heard (and refused).
      hold: (i, ctx) => (i === 1 && ctx.round === ROUNDS ? release.wait : undefined),
      beforeStart: (p, i) => {
        if (i !== 0) return
        status = new StatusTracker(p, { rank: RANKS[0], rounds: ROUNDS })
        metrics = new PeerMetrics(registry, p)
        // The app evaluates the agreed weights (here the synthetic task's held-out loss).
        p.addEventListener('round:complete', (e) => status?.recordEval(e.detail.round, syntheticEvalLoss(p.head.weights, s.config.targets, s.config.seed)))
      },
    })
    swarm = s
    const peer = s.peers[0]
    status?.recordEval(0, syntheticEvalLoss(peer.head.weights, s.config.targets, s.config.seed))
    server = await startPeerHttpServer({ port: 0, status, registry })
    await waitForEvent(peer, 'round:start', (d) => d.round === ROUNDS, 30_000)
    attacker = await startAttacker(await identityFromSeed('status-page-attacker'))
    const topic = swarmTopic(peer.swarmId)
    await attacker.join([peer.multiaddrs()[0]], [peer.peerId], topic)
    const refused = waitForEvent(peer, 'peer:rejected', (d) => d.peerId === attacker?.peerId)
    await attacker.publish(topic, new TextEncoder().encode('{"kind":"announce","nonsense":true}'))
    await refused
    release.open()
    await Promise.all(s.peers.map((p) => p.whenDone()))
  })

  afterAll(async () => {
    status?.close()
    metrics?.close()
    await server?.close()
    await attacker?.stop()
    await swarm?.stop()
  })

  it('serves /status.json: members with ranks, every round certified, losses, rejections', async () => {
    const s = swarm as TestSwarm
    const res = await fetch(`${server?.url}/status.json`)
    expect(res.headers.get('content-type')).toMatch(/application\/json/)
    const st = (await res.json()) as PeerStatus
    expect(st.peerId).toBe(s.peers[0].peerId)
    expect(st.swarmId).toBe(s.peers[0].swarmId)
    expect(st.head).toEqual({ round: ROUNDS, stateHash: s.peers[0].head.hash })
    expect(st.status).toBe('done')
    // The other two members, with the ranks their adapters carried.
    const honest = st.members.filter((m) => s.peers.some((p) => p.peerId === m.peerId))
    expect(honest.map((m) => [m.peerId, m.rank]).sort()).toEqual(s.peers.slice(1).map((p, i) => [p.peerId, RANKS[i + 1]]).sort())
    for (const m of honest) expect(m.lastContributed).toBe(ROUNDS)
    // Every round: the hash all three peers hold, certified by a quorum of them.
    expect(st.history.map((r) => r.round)).toEqual([1, 2, 3])
    for (const r of st.history) {
      const hashes = s.peers.map((p) => p.records.all().find((x) => x.round === r.round)?.stateHash)
      expect(new Set([r.stateHash, ...hashes]).size).toBe(1)
      expect(r.certifiedBy.length).toBeGreaterThanOrEqual(2)
      expect(r.contributors).toHaveLength(3)
      expect(r.evalLoss).toBeTypeOf('number')
    }
    expect(st.genesisEvalLoss).toBeTypeOf('number')
    expect(st.rejections.byReason.malformed).toBeGreaterThanOrEqual(1)
    expect(st.rejections.recent[0]?.peerId).toBe(attacker?.peerId)
    // The same server serves the metrics.
    expect(await (await fetch(`${server?.url}/metrics`)).text()).toContain(`flora_head_round ${ROUNDS}`)
    expect((await fetch(`${server?.url}/nope`)).status).toBe(404)
  })

  it('serves a page whose script parses (also where no browser is installed)', async () => {
    const html = await (await fetch(`${server?.url}/`)).text()
    expect(html).toBe(STATUS_PAGE_HTML)
    const script = html.split('<script>')[1]?.split('</script>')[0] ?? ''
    expect(script).toContain('/status.json')
    expect(() => new Function(script)).not.toThrow()
  })

  const browser = findChromium()
  it.skipIf(browser == null)('renders in headless Chromium', async () => {
    const s = swarm as TestSwarm
    const b = await chromium.launch({ executablePath: browser, headless: true, args: ['--no-sandbox'] })
    try {
      const page = await b.newPage({ viewport: { width: 1280, height: 900 } })
      const errors: string[] = []
      page.on('pageerror', (err) => errors.push(err.message))
      await page.goto(`${server?.url}/`)
      await page.waitForSelector('body[data-loaded="1"]', { timeout: 15_000 })
      expect(await page.textContent('#peer')).toBe(`…${s.peers[0].peerId.slice(-8)}`)
      expect(await page.textContent('#status')).toBe('done')
      expect(await page.textContent('#head')).toBe(`${ROUNDS} / ${ROUNDS}`)
      // Hash agreement: one row per round, newest first, each certified.
      const rounds = await page.$$eval('#history tbody tr', (rows) => rows.map((r) => [r.children[0]?.textContent, r.children[1]?.textContent, r.children[2]?.textContent]))
      expect(rounds.map((r) => r[0])).toEqual(['3', '2', '1'])
      const head = s.peers[0].records.all()
      expect(rounds.map((r) => r[1])).toEqual([...head].reverse().map((r) => r.stateHash.slice(0, 16)))
      for (const r of rounds) expect(r[2]).toMatch(/^[23] of 3$/)
      // Members with ranks; the plot has the eval-loss line (4 points: genesis + 3 rounds).
      const ranks = await page.$$eval('#members tbody tr', (rows) => rows.map((r) => r.children[2]?.textContent))
      expect(ranks).toEqual(expect.arrayContaining(['4', '8']))
      const points = await page.$eval('#plot polyline[data-series^="eval"]', (l) => (l.getAttribute('points') ?? '').split(' ').length)
      expect(points).toBe(ROUNDS + 1)
      expect(await page.textContent('#reasons')).toContain('malformed')
      expect(errors).toEqual([])
      const out = process.env.FLORA_UPDATE_SCREENSHOTS === '1' ? path.join(ROOT, 'docs', 'status-page.png') : path.join(os.tmpdir(), `flora-status-page-${process.pid}.png`)
      await page.screenshot({ path: out, fullPage: true })
    } finally {
      await b.close()
    }
  })
})
