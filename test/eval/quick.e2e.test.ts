/**
 * End to end: `npm run eval -- --quick` on the bundled model backend (tfjs wasm), with all
 * its outputs. Falls back to a random-init model when no checkpoint is bundled; the check
 * here is the harness and FLoRA's exactness, not the quality of the model.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it, vi } from 'vitest'
import { main } from '../../src/eval/cli.js'
import type { EvalResults } from '../../src/eval/types.js'

describe('npm run eval -- --quick', () => {
  let dir: string
  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('writes results.json, results.md and PNG plots; FLoRA is exact and FedIT is not', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'flora-eval-'))
    const lines: string[] = []
    const stdout: string[] = []
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => stdout.push(String(chunk)) > 0)
    try {
      expect(await main(['--quick', '--out', dir, '--json'], (l) => lines.push(l))).toBe(0)
    } finally {
      spy.mockRestore()
    }
    // --json (the default when piped): one JSON line naming what was written.
    const done = JSON.parse(stdout.join('').trim()) as { event: string; files: string[] }
    expect(done.event).toBe('eval:done')
    expect(done.files).toContain(path.join(dir, 'results.json'))
    const results = JSON.parse(await readFile(path.join(dir, 'results.json'), 'utf8')) as EvalResults
    const flora = results.runs.find((r) => r.setting === 'homo16' && r.method === 'flora')
    const fedit = results.runs.find((r) => r.setting === 'homo16' && r.method === 'fedit')
    expect(flora?.rounds.length).toBe(3)
    for (const r of flora?.rounds.slice(1) ?? []) expect(r.aggError).toBeLessThan(1e-6)
    for (const r of fedit?.rounds.slice(1) ?? []) expect(r.aggError).toBeGreaterThan(1e-6)
    const heteroFlora = results.runs.find((r) => r.setting === 'hetero' && r.method === 'flora')
    for (const r of heteroFlora?.rounds.slice(1) ?? []) expect(r.aggError).toBeLessThan(1e-6)
    expect(results.runs.find((r) => r.setting === 'hetero' && r.method === 'fedit')?.applicable).toBe(false)
    expect(results.runs.some((r) => r.method === 'centralized')).toBe(true)
    const md = await readFile(path.join(dir, 'results.md'), 'utf8')
    expect(md).toContain('not applicable')
    expect(md).toContain('![eval-loss.png](eval-loss.png)')
    // The default task is the skills suite: exact match per round, beside the answer that ignores the question.
    expect(results.config.data).toBe('skills')
    expect(results.base.exactMatch?.pooled).toBeGreaterThanOrEqual(0)
    expect(results.ignoreQuestionBaseline).toBeGreaterThan(0)
    for (const r of flora?.rounds ?? []) expect(r.exactMatch?.perClient).toHaveLength(3)
    expect(md).toContain('## Final held-out exact match')
    expect(md).toContain('![exact-match.png](exact-match.png)')
    for (const png of ['eval-loss.png', 'token-accuracy.png', 'exact-match.png', 'agg-error.png']) {
      const bytes = await readFile(path.join(dir, png))
      expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
      expect(bytes.length).toBeGreaterThan(10_000)
    }
  })
})
