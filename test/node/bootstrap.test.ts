/**
 * Starting a peer: an unreachable bootstrap address is reported (which address, what failed,
 * when the next try is) and retried with backoff until it answers; a port in use fails the
 * start before any round begins (it logged "waiting for swarm members" before the error).
 */
import { createServer, type Server } from 'node:net'
import { Writable } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { BootstrapDialer, describeDialError, type BootstrapFailure } from '../../src/node/bootstrap-dialer.js'
import { createPeer, type FloraPeer } from '../../src/node/peer.js'
import { createLogger } from '../../src/node/logger.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { waitForEvent } from './helpers.js'

/** A port on 127.0.0.1 that was free a moment ago (the OS picks it; nothing listens there now). */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe('bootstrap addresses', () => {
  const peers: FloraPeer[] = []
  let server: Server | undefined
  afterEach(async () => {
    await Promise.all(peers.splice(0).map((p) => p.stop()))
    await new Promise<void>((resolve) => (server != null ? server.close(() => resolve()) : resolve()))
    server = undefined
  })

  const { config, weights } = syntheticSwarm({ round: { deadlineMs: 20_000, graceMs: 3000, minPeers: 2 } })
  const make = async (seed: string, listen: string, bootstrap: string[] = [], logger?: ReturnType<typeof createLogger>): Promise<FloraPeer> => {
    const peer = await createPeer({
      config,
      weights,
      privateKey: await identityFromSeed(seed),
      rank: 2,
      rounds: 1,
      trainer: syntheticTrainer({ samples: 10, steps: 1 }),
      listen: [listen],
      bootstrap,
      logger,
    })
    peers.push(peer)
    return peer
  }

  it('an unreachable one is reported on every attempt, retried with backoff, and joined once it answers', async () => {
    const port = await freePort()
    const laterKey = await identityFromSeed('bootstrap-later')
    const addr = `/ip4/127.0.0.1/tcp/${port}/p2p/${peerIdFromPrivateKey(laterKey).toString()}`
    const a = await make('bootstrap-early', '/ip4/127.0.0.1/tcp/0', [addr])
    const failures: BootstrapFailure[] = []
    a.addEventListener('bootstrap:unreachable', (e) => failures.push(e.detail))
    await a.start()
    await waitForEvent(a, 'bootstrap:unreachable', (d) => d.attempts === 2, 10_000)
    expect(failures.map((f) => [f.addr, f.attempts, f.retryInMs])).toEqual([
      [addr, 1, 2000],
      [addr, 2, 4000],
    ])
    expect(failures[0].error).toMatch(/ECONNREFUSED/)
    // The bootstrap peer comes up on that address: the next attempt joins it.
    const b = await make('bootstrap-later', `/ip4/127.0.0.1/tcp/${port}`)
    await b.start()
    await Promise.all([waitForEvent(a, 'member:join', (d) => d.peerId === b.peerId, 15_000), waitForEvent(a, 'done', () => true, 30_000)])
    expect(failures).toHaveLength(2)
  })

  it('a port in use fails the start before any round begins', async () => {
    server = createServer()
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as { port: number }).port
    const lines: string[] = []
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString())
        cb()
      },
    })
    const peer = await make('bootstrap-port-in-use', `/ip4/127.0.0.1/tcp/${port}`, [], createLogger({ level: 'debug', destination: sink }))
    await expect(peer.start()).rejects.toThrow(/EADDRINUSE|address already in use/i)
    await new Promise((resolve) => setImmediate(resolve))
    expect(lines.join('')).not.toMatch(/waiting for swarm members/)
  })
})

describe('BootstrapDialer', () => {
  it('doubles the delay per failure up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => BootstrapDialer.delayAfter(n))).toEqual([2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000])
  })

  it('describes a libp2p dial error in one line', () => {
    const inner = new Error('connect ECONNREFUSED 127.0.0.1:9\n    at TCPConnectWrap.afterConnect')
    expect(describeDialError(new AggregateError([inner, inner], 'All multiaddr dials failed'))).toBe('connect ECONNREFUSED 127.0.0.1:9')
    expect(describeDialError(new Error('The operation was aborted'))).toBe('The operation was aborted')
  })
})
