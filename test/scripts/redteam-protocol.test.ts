/**
 * `npm run redteam`'s protocol attacks (manifest flood, wrong state hashes, NaN payloads,
 * equivocation, a silent member) as tests, each against a fresh swarm of three real flora-
 * peer processes and an attacking peer built from the same libp2p packages, with the
 * harness's targets asserted (redteam-check.ts). The other cases: redteam.test.ts and
 * redteam-floods.test.ts; a non-member of a closed swarm: test/node/closed-swarm.test.ts.
 */
import { describe, expect, it } from 'vitest'
import { equivocation, manifestFlood, nonFinite, silentMember, wrongStateHash } from '../../scripts/redteam/attacks.js'
import { redteamRunner } from './redteam-check.js'

const run = redteamRunner(13)

describe('redteam: protocol attacks against real flora-peer processes', () => {
  const T = { timeout: 90_000 }
  it('manifest flood: refused at the RPC cap, its sender cut off; RSS grows < 50 MB', T, async () => {
    const r = await run(manifestFlood)
    expect(r.rejections.flood ?? 0).toBeGreaterThan(0)
  })
  it('wrong state hashes: refused out of turn, a view change in turn', T, async () => {
    const r = await run(wrongStateHash)
    expect((r.rejections['not-your-turn'] ?? 0) + (r.rejections['manifest-hash-mismatch'] ?? 0)).toBeGreaterThan(0)
  })
  it('NaN / Inf payloads: rejected as malformed, never merged', T, async () => {
    const r = await run(nonFinite)
    expect(r.rejections['malformed-payload'] ?? 0).toBeGreaterThan(0)
  })
  it('equivocation: the second announcement refused; empty manifests for r and r+1 decide nothing', T, async () => {
    const r = await run(equivocation)
    expect(r.rejections.equivocation ?? 0).toBeGreaterThan(0)
  })
  it('a silent member is waited for once, then skipped', T, async () => {
    await run(silentMember)
  })
})
