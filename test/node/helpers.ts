/** Shared helpers for the multi-peer tests: loopback peers, gates, event waits. */
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createPeer, type FloraPeer, type PeerEvents, type PeerOptions } from '../../src/node/peer.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { syntheticSwarm, type SyntheticSwarmOptions } from '../../src/node/synthetic.js'
import { syntheticTrainer, type Trainer, type TrainContext } from '../../src/node/trainer.js'
import type { AdapterSet } from '../../src/lora/types.js'
import type { SwarmConfig } from '../../src/node/config.js'
import path from 'node:path'
import { pino, type Logger } from 'pino'
import { createLogger } from '../../src/node/logger.js'

/**
 * The test peers' logger: none unless FLORA_TEST_LOG names a level; human lines on stderr,
 * or JSON lines in FLORA_TEST_LOG_DIR/<idSeed>.log (one file per swarm, so the logs of test
 * files running in parallel stay apart).
 */
function testLogger(idSeed: string): Logger | undefined {
  const level = process.env.FLORA_TEST_LOG
  if (level == null) return undefined
  const dir = process.env.FLORA_TEST_LOG_DIR
  if (dir == null) return createLogger({ level, human: true })
  return createLogger({ level, destination: pino.destination({ dest: path.join(dir, `${idSeed}.log`), sync: true, append: true }) })
}

/** Waits for an event whose detail satisfies `pred`, or fails after `timeoutMs`. */
export function waitForEvent<K extends keyof PeerEvents>(
  target: FloraPeer,
  type: K,
  pred: (detail: PeerEvents[K]['detail']) => boolean = () => true,
  timeoutMs = 20_000,
): Promise<PeerEvents[K]['detail']> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(type, listener)
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${String(type)} on ${target.peerId.slice(-8)}`))
    }, timeoutMs)
    const listener = (evt: PeerEvents[K]): void => {
      if (!pred(evt.detail)) return
      clearTimeout(timer)
      target.removeEventListener(type, listener)
      resolve(evt.detail)
    }
    target.addEventListener(type, listener)
  })
}

/** A promise the test resolves by hand (to hold a trainer mid-round). */
export function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void
  const wait = new Promise<void>((resolve) => {
    open = resolve
  })
  return { wait, open }
}

/** Rejects when the signal aborts (so a gated trainer stops with its round). */
export function untilAborted(p: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
    p.then(resolve, reject)
  })
}

/** Every adapter a trainer produced, by round and peer, for independent replays. */
export type AdapterBook = Map<string, AdapterSet>
export const bookKey = (round: number, peerId: string): string => `${round}:${peerId}`

/** Wraps a trainer: records its adapters and lets a hook hold or fail chosen rounds. */
export function recordingTrainer(
  peerId: () => string,
  book: AdapterBook,
  options: { samples?: number; dataSeed?: number; hold?: (ctx: TrainContext) => Promise<void> | undefined } = {},
): Trainer {
  const inner = syntheticTrainer({ samples: options.samples ?? 50, dataSeed: options.dataSeed, steps: 2 })
  return async (ctx) => {
    const held = options.hold?.(ctx)
    if (held != null) await untilAborted(held, ctx.signal)
    const res = await inner(ctx)
    book.set(bookKey(ctx.round, peerId()), res.adapter)
    return res
  }
}

export interface TestSwarm {
  config: SwarmConfig
  weights: Map<string, Float32Array>
  peers: FloraPeer[]
  keys: PrivateKey[]
  book: AdapterBook
  stop(): Promise<void>
}

export interface TestSwarmOptions {
  ranks: readonly number[]
  rounds?: number
  swarm?: SyntheticSwarmOptions
  /** Per peer index: hold the trainer of some rounds. */
  hold?: (index: number, ctx: TrainContext) => Promise<void> | undefined
  /** Seed prefix of the deterministic identities. */
  idSeed?: string
  /** Called for each peer after it is created and before it starts. */
  beforeStart?: (peer: FloraPeer, index: number) => void
  /** More createPeer options for peer `index` (stall timeout, trainer, connection monitor, ...). */
  peerOptions?: (index: number) => Partial<PeerOptions>
}

/** The peer ids startTestSwarm will use for a seed prefix (identities are deterministic). */
export async function testPeerIds(idSeed: string, n: number): Promise<string[]> {
  const keys = await Promise.all(Array.from({ length: n }, (_, i) => identityFromSeed(`${idSeed}-${i}`)))
  return keys.map((k) => peerIdFromPrivateKey(k).toString())
}

/** N peers on 127.0.0.1 (port 0), each bootstrapping to peer 0, deterministic identities. */
export async function startTestSwarm(options: TestSwarmOptions): Promise<TestSwarm> {
  const n = options.ranks.length
  const { config, weights } = syntheticSwarm({
    // Generous: with no faults the first proposer closes a round as soon as it holds every
    // adapter, so the deadline only matters on a loaded machine (where it must not fire).
    round: { deadlineMs: 20_000, graceMs: 3000, minPeers: n },
    ...options.swarm,
  })
  const book: AdapterBook = new Map()
  const keys = await Promise.all(options.ranks.map((_, i) => identityFromSeed(`${options.idSeed ?? 'peer'}-${i}`)))
  const peers: FloraPeer[] = []
  for (let i = 0; i < n; i++) {
    let self = ''
    const peer = await createPeer({
      config,
      weights,
      privateKey: keys[i],
      rank: options.ranks[i],
      rounds: options.rounds,
      logger: testLogger(options.idSeed ?? 'peer'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: i === 0 ? [] : [peers[0].multiaddrs()[0]],
      trainer: recordingTrainer(() => self, book, {
        samples: 20 + 10 * i,
        dataSeed: i,
        hold: options.hold != null ? (ctx) => options.hold?.(i, ctx) : undefined,
      }),
      ...options.peerOptions?.(i),
    })
    self = peer.peerId
    peers.push(peer)
    options.beforeStart?.(peer, i)
    await peer.start()
  }
  return {
    config,
    weights,
    peers,
    keys,
    book,
    stop: async () => {
      await Promise.all(peers.map((p) => p.stop()))
    },
  }
}
