import { describe, expect, it } from 'vitest'
import { parseEvalArgs, UsageError } from '../../src/eval/cli.js'

describe('eval arguments', () => {
  it('defaults to the paper settings, 10 clients, all strategies', () => {
    const c = parseEvalArgs(['--out', 'x'])
    expect(c.clients).toBe(10)
    expect(c.settings).toEqual(['homo16', 'hetero'])
    expect(c.strategies).toEqual(['flora', 'fedit', 'zero-padding', 'flexlora', 'ffa'])
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
})
