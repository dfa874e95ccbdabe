import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import { main, parseEvalArgs, UsageError } from '../../src/eval/cli.js'

describe('eval arguments', () => {
  it('defaults to the paper settings, 10 clients, all strategies', () => {
    const c = parseEvalArgs(['--out', 'x'])
    expect(c.clients).toBe(10)
    expect(c.settings).toEqual(['homo16', 'hetero'])
    expect(c.strategies).toEqual(['flora', 'flora-pd', 'fedit', 'zero-padding', 'flexlora', 'ffa'])
    expect(c.globalScales).toEqual([1])
    expect(c.references).toBe(true)
  })

  it('applies --quick first and explicit flags on top', () => {
    const c = parseEvalArgs(['--quick', '--rounds', '3', '--ranks', 'hetero', '--global-scale', '0.5,1,2', '--no-references', '--out', 'x'])
    expect(c.quick).toBe(true)
    expect(c.clients).toBe(3)
    expect(c.rounds).toBe(3)
    expect(c.settings).toEqual(['hetero'])
    expect(c.globalScales).toEqual([0.5, 1, 2])
    expect(c.references).toBe(false)
  })

  it('rejects bad input with a UsageError', () => {
    expect(() => parseEvalArgs(['--strategies', 'flora,fedavg', '--out', 'x'])).toThrow(UsageError)
    expect(() => parseEvalArgs(['--ranks', 'homo8', '--out', 'x'])).toThrow(UsageError)
    expect(() => parseEvalArgs(['--clients', '0', '--out', 'x'])).toThrow(UsageError)
    expect(() => parseEvalArgs(['--global-scale', '-1', '--out', 'x'])).toThrow(UsageError)
    expect(() => parseEvalArgs(['--rounds', '2'])).toThrow(/out/)
    expect(() => parseEvalArgs(['--bogus', '--out', 'x'])).toThrow(UsageError)
  })

  it('takes the task, the LoRA targets and a centralized lr sweep', () => {
    const c = parseEvalArgs(['--data', 'wordnet', '--targets', 'q_proj,down_proj', '--central-lr', '1e-3,3e-3', '--out', 'x'])
    expect(c.data).toBe('wordnet')
    expect(c.targets).toEqual(['q_proj', 'down_proj'])
    expect(c.centralLrs).toEqual([1e-3, 3e-3])
    expect(() => parseEvalArgs(['--data', 'dolly', '--out', 'x'])).toThrow(UsageError)
    expect(() => parseEvalArgs(['--targets', 'q_proj,lm_head', '--out', 'x'])).toThrow(UsageError)
    expect(() => parseEvalArgs(['--central-lr', '0', '--out', 'x'])).toThrow(UsageError)
    expect(() => parseEvalArgs(['--backend', 'toy', '--data', 'skills', '--out', 'x'])).toThrow(/model backend/)
  })

  it('uses the flag names of the other CLIs (--model, --seq-len), the old ones still work', () => {
    expect(parseEvalArgs(['--seq-len', '32', '--out', 'x']).maxLen).toBe(32)
    expect(parseEvalArgs(['--max-len', '40', '--out', 'x']).maxLen).toBe(40)
    expect(parseEvalArgs(['--model', 'models/flora-tiny', '--out', 'x']).modelDir).toBe('models/flora-tiny')
    expect(parseEvalArgs(['--model-dir', 'models/flora-tiny', '--out', 'x']).modelDir).toBe('models/flora-tiny')
    expect(() => parseEvalArgs(['--model', '/nonexistent', '--out', 'x'])).toThrow(/--model \/nonexistent: not a model directory/)
  })
})

describe('eval exit codes and errors', () => {
  async function run(argv: string[]): Promise<{ code: number; stderr: string }> {
    let stderr = ''
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      stderr += String(chunk)
      return true
    })
    try {
      return { code: await main(argv, () => {}), stderr }
    } finally {
      spy.mockRestore()
    }
  }

  it('a usage error exits 2 with one line', async () => {
    const r = await run(['--bogus', '--out', 'x'])
    expect(r.code).toBe(2)
    expect(r.stderr).toBe("eval: unknown option '--bogus' (npm run eval -- --help for usage)\n")
    expect((await run(['--model-dir', '/nonexistent', '--out', 'x'])).code).toBe(2)
  })

  it('a failure while running exits 1 with one line (the stack only with --verbose)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'flora-eval-cli-'))
    try {
      // A model dir with a config.json and nothing else: loading it fails.
      await writeFile(path.join(dir, 'config.json'), '{}')
      const r = await run(['--model', dir, '--quick', '--out', path.join(dir, 'out')])
      expect(r.code).toBe(1)
      expect(r.stderr.trim().split('\n')).toHaveLength(1)
      expect(r.stderr).toMatch(/^eval: .*tokenizer\.json: file is missing\n$/)
      const v = await run(['--model', dir, '--quick', '--verbose', '--out', path.join(dir, 'out')])
      expect(v.code).toBe(1)
      expect(v.stderr.split('\n').length).toBeGreaterThan(2)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
