import { describe, expect, it } from 'vitest'
import { RepeatLog } from '../../src/node/repeat-log.js'
import { payloadCap } from '../../src/node/config.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { encodeAdapter } from '../../src/lora/wire.js'
import { initAdapter } from '../../src/lora/init.js'

describe('RepeatLog', () => {
  it('writes a key once, then one summary with the count of repeats when flushed', () => {
    const lines: string[] = []
    const log = new RepeatLog(60_000)
    for (let i = 0; i < 1000; i++) log.note('peer|bad-signature', (n) => lines.push(n === 0 ? 'first' : `repeated ${n}`))
    log.note('peer|malformed', (n) => lines.push(n === 0 ? 'other' : `other repeated ${n}`))
    expect(lines).toEqual(['first', 'other'])
    log.flush()
    expect(lines).toEqual(['first', 'other', 'repeated 999'])
    log.note('peer|bad-signature', (n) => lines.push(n === 0 ? 'first again' : `repeated ${n}`))
    expect(lines.at(-1)).toBe('first again')
    log.flush()
  })
})

describe('payloadCap', () => {
  it('is the largest adapter of the targets at maxRank, and a real adapter fits', () => {
    const { config } = syntheticSwarm({ maxRank: 8 })
    const cap = payloadCap(config)
    const biggest = encodeAdapter(initAdapter({ shapes: config.targets, rank: 8, alpha: 16, seed: 1 }), { dtype: config.wireDType })
    expect(cap).toBe(biggest.byteLength)
    // The default config's maxPayloadBytes is that size too (not 1 GiB).
    expect(config.maxPayloadBytes).toBe(cap)
  })
})
