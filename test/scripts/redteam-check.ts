/** Shared by the red-team test files: a fresh output dir per file, and a case run with the harness's targets asserted. */
import { afterAll, beforeAll, expect } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCase, type AttackCase, type CaseResult, type RunOptions } from '../../scripts/redteam/run.js'

/** Registers a temporary output dir for this file's cases; returns the function that runs one. */
export function redteamRunner(seed: number): (c: AttackCase) => Promise<CaseResult> {
  let out = ''
  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'flora-redteam-'))
  })
  afterAll(async () => {
    await rm(out, { recursive: true, force: true })
  })
  const options = (): RunOptions => ({ out, seed, peers: 3, rounds: 6, deadlineMs: 3000, graceMs: 1000, trainDelayMs: 300, log: () => {} })
  return async (c) => {
    const r = await runCase(c, options())
    const failed = r.targets.filter((t) => !t.pass).map((t) => `${t.name}: ${t.detail}`)
    expect(r.error ?? null, 'the attack could not run').toBeNull()
    // 0 forks, at most one honest round lost, RSS growth < 50 MB per flood, the case's own.
    expect(failed).toEqual([])
    expect(r.forks).toBe(0)
    // The harness cleans up after itself: no honest process is left running.
    for (const code of r.honestExitCodes) expect(code).not.toBeNull()
    expect(Object.values(r.inputs).reduce((a, b) => a + b, 0)).toBeGreaterThan(0)
    return r
  }
}
