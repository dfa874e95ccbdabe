/**
 * P8 responsiveness: a peer whose training step blocks its thread for longer than the
 * ping timeout stays a member and contributes every round when it trains in a worker
 * (setupPeerInWorker). Pings here: every 300 ms, 300-600 ms timeout; the slow step blocks
 * its thread for 2 s. (That the same step on the event loop thread freezes it for the whole
 * step is shown in worker-trainer.test.ts; in one process it would freeze every peer alike.)
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { setupPeer, type PeerSetup } from '../../src/node/setup.js'
import { setupPeerInWorker } from '../../src/node/worker-trainer.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { waitForEvent } from './helpers.js'

const MONITOR = { pingInterval: 300, pingTimeout: { minTimeout: 300, maxTimeout: 600 } }
const BUSY_MS = 2000
const ROUND = { deadlineMs: 15_000, graceMs: 2000, minPeers: 3 }

async function swarmWithSlowPeer(slow: 'worker' | 'in-thread'): Promise<{ peers: FloraPeer[]; setups: PeerSetup[]; left: string[] }> {
  const setups: PeerSetup[] = []
  for (let i = 0; i < 3; i++) {
    const options = { trainer: 'synthetic', rank: 2 + i, alpha: 4 + 2 * i, data: `synthetic:${i}`, round: ROUND, trainBusyMs: i === 2 ? BUSY_MS : undefined }
    setups.push(await (i === 2 && slow === 'worker' ? setupPeerInWorker(options) : setupPeer(options)))
  }
  const peers: FloraPeer[] = []
  const left: string[] = []
  for (let i = 0; i < 3; i++) {
    const p = await createPeer({
      config: setups[i].config,
      weights: setups[i].weights,
      privateKey: await identityFromSeed(`slow-${slow}-${i}`),
      rank: 2 + i,
      rounds: 2,
      trainer: setups[i].trainer,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: i === 0 ? [] : [peers[0].multiaddrs()[0]],
      connectionMonitor: MONITOR,
    })
    p.addEventListener('member:leave', (e) => left.push(`${i}:${e.detail.peerId}`))
    peers.push(p)
    await p.start()
  }
  return { peers, setups, left }
}

describe('P8: a slow peer is late, never expelled', () => {
  let running: { peers: FloraPeer[]; setups: PeerSetup[] } | undefined
  afterEach(async () => {
    await Promise.all(running?.peers.map((p) => p.stop()) ?? [])
    await Promise.all(running?.setups.map((s) => s.close?.()) ?? [])
    running = undefined
  })

  it('training in a worker: the slow peer answers pings throughout and contributes to every round', async () => {
    const s = await swarmWithSlowPeer('worker')
    running = s
    const done = await Promise.all(s.peers.map((p) => waitForEvent(p, 'done', () => true, 60_000)))
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
    for (const p of s.peers) expect(p.records.all().map((r) => r.contributors.length)).toEqual([3, 3])
    // Nobody lost a connection to anyone while the slow peer trained.
    expect(s.left).toEqual([])
  })

})
