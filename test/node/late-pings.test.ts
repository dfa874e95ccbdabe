/**
 * A late ping is not a dead peer. On a CPU-starved host (48 processes on 2 cores) pings
 * took over 60 s and libp2p's connection monitor, which aborts a connection whose ping
 * times out, tore down ~1,800 member connections in 10 minutes. flora's default keeps
 * pinging (RTT) but never aborts on a late ping. Here pings run every 50 ms with a 50 ms
 * timeout, and the event loop is blocked for 400 ms again and again (a starved process):
 * with libp2p's default behaviour the connection is aborted and the member leaves.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { DEFAULT_CONNECTION_MONITOR } from '../../src/node/host.js'
import { gate, startTestSwarm, waitForEvent, type TestSwarm } from './helpers.js'

const FAST_PINGS = { ...DEFAULT_CONNECTION_MONITOR, pingInterval: 50, pingTimeout: { minTimeout: 50, maxTimeout: 50 } }

function blockFor(ms: number): void {
  const end = Date.now() + ms
  while (Date.now() < end) {
    // a starved process: nothing else runs
  }
}

describe('late pings', () => {
  let swarm: TestSwarm | undefined
  afterEach(async () => {
    await swarm?.stop()
    swarm = undefined
  })

  it('do not close member connections: a starved peer stays a member and the round completes', async () => {
    const training = gate()
    // Both peers are in round 1 (connected, members of each other) once both trainers run.
    const bothTraining = gate()
    let trainers = 0
    swarm = await startTestSwarm({
      ranks: [2, 3],
      rounds: 1,
      idSeed: 'late-pings',
      hold: () => {
        if (++trainers === 2) bothTraining.open()
        return training.wait
      },
      peerOptions: () => ({ connectionMonitor: FAST_PINGS }),
    })
    const left: string[] = []
    for (const p of swarm.peers) p.addEventListener('member:leave', (e) => left.push(e.detail.peerId))
    await bothTraining.wait
    for (let i = 0; i < 8; i++) {
      blockFor(400)
      // One turn of the event loop between blocks: overdue pings start (timers), their
      // requests go out, and the next block begins before the answers are read, so their
      // 50 ms timeouts fire first at the next turn: the pings fail as on a starved host.
      await new Promise((resolve) => setImmediate(resolve))
    }
    // Let the failures' handlers run (with libp2p's default they abort the connection).
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(left).toEqual([])
    training.open()
    const done = await Promise.all(swarm.peers.map((p) => waitForEvent(p, 'done', () => true, 30_000)))
    expect(new Set(done.map((d) => d.stateHash)).size).toBe(1)
    expect(left).toEqual([])
  })
})
