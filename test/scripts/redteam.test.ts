/**
 * Fast red-team cases (issue 10): a few attacks of `npm run redteam`, each against a fresh
 * swarm of three real flora-peer processes (synthetic trainer, few rounds), asserting the
 * harness's targets. The full set runs with `npm run redteam`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { helloAddrs, hijackCase, payloadLiesCase, poison } from '../../scripts/redteam/attacks.js'
import { movementRatio, runCase, type AttackCase, type CaseResult, type RunOptions } from '../../scripts/redteam/run.js'

let out: string
const options = (): RunOptions => ({ out, seed: 7, peers: 3, rounds: 5, deadlineMs: 3000, graceMs: 1000, trainDelayMs: 300, log: () => {} })

function failed(r: CaseResult): string {
  return r.targets
    .filter((t) => !t.pass)
    .map((t) => `${t.name}: ${t.detail}`)
    .join('\n')
}

async function run(c: AttackCase): Promise<CaseResult> {
  const r = await runCase(c, options())
  // Every case writes its JSON next to the others.
  const written = JSON.parse(await readFile(join(out, `${c.name}.json`), 'utf8')) as CaseResult
  expect(written.name).toBe(c.name)
  // The harness cleans up after itself: no honest process is left running.
  for (const code of r.honestExitCodes) expect(code).not.toBeNull()
  return r
}

beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'flora-redteam-'))
})

afterAll(async () => {
  await rm(out, { recursive: true, force: true })
})

describe('redteam harness', () => {
  it('measures movement as the largest per-module relative Frobenius change', () => {
    const p = new Map([['m', Float32Array.of(3, 4)]])
    expect(movementRatio(new Map([['m', Float32Array.of(3, 4.5)]]), p)).toBeCloseTo(0.1, 6)
    expect(movementRatio(new Map([['m', Float32Array.of(Number.NaN, 4)]]), p)).toBe(Number.POSITIVE_INFINITY)
  })
})

describe('redteam: hostile members against real flora-peer processes', () => {
  it('poison adapter (+-1e15..1e30, samples 2^31-1) moves the model by at most the bound', { timeout: 40_000 }, async () => {
    const r = await run({ ...poison, rounds: 5 })
    expect(r.movement.maxRatio).not.toBeNull()
    expect(failed(r)).toBe('')
  })

  it('a non-proposer manifest for the running round (hijack) decides nothing', { timeout: 40_000 }, async () => {
    const r = await run(hijackCase(64))
    expect(r.forks).toBe(0)
    expect(failed(r)).toBe('')
  })

  it('a hello with 2,048 addresses does not make honest peers dial them all or grow by 50 MB', { timeout: 40_000 }, async () => {
    const r = await run({ ...helloAddrs, rounds: 6 })
    expect(failed(r)).toBe('')
  })

  it('a payload lie (wrong bytes) is rejected quickly and never merged', { timeout: 40_000 }, async () => {
    const r = await run({ ...payloadLiesCase(['wrong-bytes']), rounds: 5 })
    expect(r.rejections['malformed-payload'] ?? 0).toBeGreaterThan(0)
    expect(failed(r)).toBe('')
  })
})
