/**
 * `npm run redteam`'s floods (hellos, streams, gossip, slowloris, replays) as tests, each
 * against a fresh swarm of three real flora-peer processes and an attacking peer built from
 * the same libp2p packages, with the harness's targets asserted (redteam-check.ts). The
 * other cases: redteam.test.ts and redteam-protocol.test.ts; a non-member of a closed swarm:
 * test/node/closed-swarm.test.ts.
 */
import { describe, expect, it } from 'vitest'
import { floodGossip, floodHello, floodStreams, replay, slowloris } from '../../scripts/redteam/attacks.js'
import { redteamRunner } from './redteam-check.js'

const run = redteamRunner(11)

describe('redteam: floods against real flora-peer processes', () => {
  const T = { timeout: 90_000 }
  it('500 hello handshakes per peer at once', T, async () => {
    await run(floodHello)
  })
  it('300 silent streams x 3 protocols per peer', T, async () => {
    await run(floodStreams)
  })
  it('1,500 rejected gossip messages: graylisted, then disconnected', T, async () => {
    const r = await run(floodGossip)
    expect(r.rejections.flood ?? 0).toBeGreaterThan(0)
  })
  it('slowloris: streams at a byte a second are cut', T, async () => {
    await run(slowloris)
  })
  it('replayed messages of two rounds before are refused', T, async () => {
    await run(replay)
  })
})
