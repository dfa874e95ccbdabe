/** `/flora/payload/1.0.0` between real libp2p nodes on loopback: 50 MB, verification, caps, dedupe, fallback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { PayloadFetcher } from '../../src/gossip/fetcher.js'
import { fetchPayload, PAYLOAD_PROTOCOL, payloadHandler, PayloadStore, type StreamOpener } from '../../src/gossip/payload.js'
import { PayloadTransferError } from '../../src/gossip/errors.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { initAdapter } from '../../src/lora/init.js'
import { decodeAdapter, encodeAdapter } from '../../src/lora/wire.js'

async function node(seed: string): Promise<Libp2p> {
  return createLibp2p({
    privateKey: await identityFromSeed(seed),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
  })
}

/** A store that serves other bytes than the ones it claims to hold. */
class LyingStore extends PayloadStore {
  constructor(private readonly wrong: Uint8Array) {
    super()
  }
  override get(hash: string): Uint8Array | undefined {
    return super.get(hash) != null ? this.wrong : undefined
  }
}

function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed >>> 0
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    out[i] = x >>> 24
  }
  return out
}

describe('payload protocol', () => {
  let client: Libp2p
  let server: Libp2p
  let liar: Libp2p
  let slow: Libp2p
  let mute: Libp2p
  const store = new PayloadStore()
  // A real encoded adapter of > 50 MB: 13 modules of [2048, 2048] at rank 256.
  const shapes = Array.from({ length: 13 }, (_, i) => ({ name: `model.layers.${String(i).padStart(2, '0')}.self_attn.q_proj`, inFeatures: 2048, outFeatures: 2048 }))
  const adapter = initAdapter({ shapes, rank: 256, alpha: 512, seed: 3 })
  for (const m of adapter.modules) m.loraB.set(new Float32Array(pattern(m.loraB.length * 4, 11).buffer).map((x) => (Number.isFinite(x) ? x % 1 : 0)))
  const big = encodeAdapter(adapter, { dtype: 'f32' })
  let bigHash = ''
  const small = pattern(300_000, 9)
  let smallHash = ''
  let open: StreamOpener
  let served = 0

  beforeAll(async () => {
    ;[client, server, liar, slow, mute] = await Promise.all([node('pay-client'), node('pay-server'), node('pay-liar'), node('pay-slow'), node('pay-mute')])
    bigHash = store.put(big, 1)
    smallHash = store.put(small, 1)
    await server.handle(PAYLOAD_PROTOCOL, payloadHandler(store, { onServed: (_p, _h, n) => (served += n) }))
    const lying = new LyingStore(pattern(small.byteLength, 10))
    lying.put(small, 1)
    await liar.handle(PAYLOAD_PROTOCOL, payloadHandler(lying))
    // A busy peer: it answers every request, 1.5 s late.
    const serve = payloadHandler(store)
    await slow.handle(PAYLOAD_PROTOCOL, async (stream, connection) => {
      await new Promise((r) => setTimeout(r, 1500))
      await serve(stream, connection)
    })
    // A mute peer: it takes the request and never says a word.
    const held: unknown[] = []
    await mute.handle(PAYLOAD_PROTOCOL, (stream) => {
      held.push(stream)
    })
    for (const peer of [server, liar, slow, mute]) await client.dial(peer.getMultiaddrs()[0])
    open = (peer, protocol, options) => client.dialProtocol(peer, protocol, options)
  })

  afterAll(async () => {
    await Promise.all([client?.stop(), server?.stop(), liar?.stop(), slow?.stop(), mute?.stop()])
  })

  it('moves a 50 MB adapter between two peers, verified by sha256 and decoded intact', async () => {
    expect(big.byteLength).toBeGreaterThan(50 * 1024 * 1024)
    const got = await fetchPayload(open, server.peerId, { hash: bigHash, expectedSize: big.byteLength, maxBytes: 64 << 20, timeoutMs: 120_000 })
    expect(got.byteLength).toBe(big.byteLength)
    expect(createHash('sha256').update(got).digest('hex')).toBe(bigHash)
    const decoded = decodeAdapter(got, { expectedShapes: shapes, requireAllModules: true, maxBytes: 64 << 20 })
    expect(decoded.modules).toHaveLength(13)
    for (let i = 0; i < 13; i++) {
      expect(Buffer.compare(Buffer.from(decoded.modules[i].loraA.buffer, decoded.modules[i].loraA.byteOffset, decoded.modules[i].loraA.byteLength), Buffer.from(adapter.modules[i].loraA.buffer))).toBe(0)
      expect(Buffer.compare(Buffer.from(decoded.modules[i].loraB.buffer, decoded.modules[i].loraB.byteOffset, decoded.modules[i].loraB.byteLength), Buffer.from(adapter.modules[i].loraB.buffer))).toBe(0)
    }
  })

  it('refuses unknown hashes, oversize and size mismatches before reading data, and lying peers after', async () => {
    const err = async (p: Promise<unknown>) => {
      const e = await p.then(() => undefined, (x: unknown) => x)
      expect(e).toBeInstanceOf(PayloadTransferError)
      return (e as PayloadTransferError).code
    }
    expect(await err(fetchPayload(open, server.peerId, { hash: 'ab'.repeat(32), maxBytes: 1 << 20 }))).toBe('NOT_FOUND')
    expect(await err(fetchPayload(open, server.peerId, { hash: smallHash, maxBytes: 1000 }))).toBe('TOO_LARGE')
    expect(await err(fetchPayload(open, server.peerId, { hash: smallHash, expectedSize: 5, maxBytes: 1 << 20 }))).toBe('SIZE_MISMATCH')
    expect(await err(fetchPayload(open, liar.peerId, { hash: smallHash, maxBytes: 1 << 20 }))).toBe('HASH_MISMATCH')
    const ac = new AbortController()
    ac.abort()
    expect(await err(fetchPayload(open, server.peerId, { hash: bigHash, maxBytes: 64 << 20, signal: ac.signal }))).toMatch(/ABORTED|UNREACHABLE/)
  })

  it('fetches each payload once however many ask, and falls back past sources that cannot serve it', async () => {
    const mine = new PayloadStore()
    const received: string[] = []
    const fetcher = new PayloadFetcher({
      open,
      store: mine,
      self: client.peerId.toString(),
      maxBytes: 1 << 20,
      onReceived: (from) => received.push(from),
    })
    // The liar is asked first and sends wrong bytes; the honest server is next.
    fetcher.addSources(smallHash, [liar.peerId.toString(), server.peerId.toString()])
    const before = served
    const signal = AbortSignal.timeout(30_000)
    const results = await Promise.all([1, 2, 3].map(() => fetcher.fetch(smallHash, { size: small.byteLength, round: 1, signal })))
    for (const r of results) expect(createHash('sha256').update(r).digest('hex')).toBe(smallHash)
    expect(received).toEqual([server.peerId.toString()])
    expect(served - before).toBe(small.byteLength)
    // Held now: no transfer at all.
    await fetcher.fetch(smallHash, { size: small.byteLength, round: 1, signal })
    expect(received).toHaveLength(1)
    expect(mine.has(smallHash)).toBe(true)
  })

  it('asks connected sources before the ones it would have to dial (a peer that left costs a dial timeout)', async () => {
    const gone = await node('pay-gone')
    await client.dial(gone.getMultiaddrs()[0])
    const goneId = gone.peerId.toString()
    const closed = new Promise<void>((resolve) => {
      client.addEventListener('peer:disconnect', (e) => {
        if (e.detail.toString() === goneId) resolve()
      })
    })
    await gone.stop()
    await closed
    const failures: string[] = []
    const isConnected = (peer: string): boolean => client.getConnections().some((c) => c.remotePeer.toString() === peer && c.status === 'open')
    expect(isConnected(goneId)).toBe(false)
    for (const connected of [true, false]) {
      failures.length = 0
      const fetcher = new PayloadFetcher({
        open,
        store: new PayloadStore(),
        self: client.peerId.toString(),
        maxBytes: 1 << 20,
        isConnected: connected ? isConnected : undefined,
        onAttemptFailed: (from) => failures.push(from),
      })
      // Preference order puts the departed peer first (it was the author, say).
      fetcher.addSources(smallHash, [goneId, server.peerId.toString()])
      const got = await fetcher.fetch(smallHash, { size: small.byteLength, round: 1, signal: AbortSignal.timeout(30_000) })
      expect(createHash('sha256').update(got).digest('hex')).toBe(smallHash)
      expect(failures).toEqual(connected ? [] : [goneId])
    }
  })

  it('waits longer each time for a source that answers late, and gives up on one silent for its whole budget', async () => {
    const failures: Array<{ from: string; code: string }> = []
    const fetcher = new PayloadFetcher({
      open,
      store: new PayloadStore(),
      self: client.peerId.toString(),
      maxBytes: 1 << 20,
      retryDelayMs: 10,
      onAttemptFailed: (from, _hash, err) => failures.push({ from, code: err.code }),
    })
    const giveUpOn = (): boolean => true
    const signal = AbortSignal.timeout(30_000)
    // Late (1.5 s) is not silent: the 1 s attempt times out, the 2 s one gets the bytes.
    fetcher.addSources(smallHash, [slow.peerId.toString()])
    const got = await fetcher.fetch(smallHash, { size: small.byteLength, round: 1, signal, giveUpOn, silenceBudgetMs: 15_000 })
    expect(createHash('sha256').update(got).digest('hex')).toBe(smallHash)
    expect(failures).toEqual([{ from: slow.peerId.toString(), code: 'SILENT' }])
    // Silent for the whole budget (1 s, then the 0.5 s left): final, and no later than that.
    failures.length = 0
    const hash = createHash('sha256').update('never served').digest('hex')
    fetcher.addSources(hash, [mute.peerId.toString()])
    const started = Date.now()
    const err = await fetcher.fetch(hash, { size: 10, round: 1, signal, giveUpOn, silenceBudgetMs: 1500 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    const waited = Date.now() - started
    expect((err as PayloadTransferError).code).toBe('SILENT')
    expect(failures.map((f) => f.code)).toEqual(['SILENT', 'SILENT'])
    expect(waited).toBeGreaterThanOrEqual(1500)
    expect(waited).toBeLessThan(5000)
  })
})
