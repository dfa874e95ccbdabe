/**
 * A copy of a gossip message already seen is dropped before its signature is checked again
 * (gossipsub's fastMsgIdFn). Without it every copy (one per mesh peer that relays the
 * message) was verified: in a 48-peer swarm on 2 cores a quarter of all CPU time went to
 * verifying copies. A forged message, even one claiming a seen (from, seqno), still has its
 * signature checked unless that exact identity passed the check before.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { fastGossipMessageId } from '../../src/gossip/codec.js'
import { signAnnouncement, verifyAnnouncement } from '../../src/gossip/sign.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import { startTestSwarm, waitForEvent, type TestSwarm } from '../node/helpers.js'

interface RpcMessage {
  from?: Uint8Array
  seqno?: Uint8Array
  data?: Uint8Array
  signature?: Uint8Array
  key?: Uint8Array
  topic: string
}
type Validate = (from: PeerId, msg: RpcMessage) => Promise<{ code: string }>

describe('fast gossip message ids', () => {
  let swarm: TestSwarm | undefined
  afterEach(async () => {
    await swarm?.stop()
    swarm = undefined
  })

  it('are (from, seqno): the same for every copy, different for another publisher or sequence number', () => {
    const from = new Uint8Array([1, 2, 3])
    const seqno = new Uint8Array([0, 0, 0, 7])
    const id = fastGossipMessageId({ from, seqno, data: new Uint8Array([9]) })
    expect(fastGossipMessageId({ from: new Uint8Array([1, 2, 3]), seqno: new Uint8Array([0, 0, 0, 7]), data: new Uint8Array([9]) })).toBe(id)
    expect(fastGossipMessageId({ from: new Uint8Array([1, 2, 4]), seqno, data: new Uint8Array([9]) })).not.toBe(id)
    expect(fastGossipMessageId({ from, seqno: new Uint8Array([0, 0, 0, 8]), data: new Uint8Array([9]) })).not.toBe(id)
    // Unsigned messages (refused by flora's StrictSign gossipsub anyway) fall back to their content.
    expect(fastGossipMessageId({ data: new Uint8Array([9]) })).not.toBe(fastGossipMessageId({ data: new Uint8Array([8]) }))
  })

  it('let a peer drop a copy of a seen message without verifying it, and still refuse a new forged one', async () => {
    const received: Array<{ from: PeerId; msg: RpcMessage; code: string }> = []
    swarm = await startTestSwarm({
      ranks: [2, 3],
      rounds: 1,
      idSeed: 'fast-msg-id',
      beforeStart: (peer, i) => {
        if (i !== 1) return
        const pubsub = peer.libp2p.services.pubsub as unknown as { validateReceivedMessage: Validate }
        const original = pubsub.validateReceivedMessage.bind(pubsub)
        pubsub.validateReceivedMessage = async (from, msg) => {
          const result = await original(from, msg)
          received.push({ from, msg, code: result.code })
          return result
        }
      },
    })
    await Promise.all(swarm.peers.map((p) => waitForEvent(p, 'done', () => true, 60_000)))
    const pubsub = swarm.peers[1].libp2p.services.pubsub as unknown as { validateReceivedMessage: Validate }
    const seen = received.find((r) => r.code === 'valid' && r.msg.signature != null)
    expect(seen).toBeDefined()
    if (seen == null) return
    const garbage = new Uint8Array(seen.msg.signature?.byteLength ?? 64).fill(7)
    // A copy with the seen (from, seqno) is a duplicate: its signature is not looked at.
    expect((await pubsub.validateReceivedMessage(seen.from, { ...seen.msg, signature: garbage })).code).toBe('duplicate')
    // A new sequence number with a bad signature is verified, and refused.
    const seqno = Uint8Array.from(seen.msg.seqno ?? new Uint8Array(8))
    seqno[seqno.length - 1] ^= 0xff
    expect((await pubsub.validateReceivedMessage(seen.from, { ...seen.msg, seqno, signature: garbage })).code).toBe('invalid')
  })
})

describe('flora signatures', () => {
  it('verify with a key made once per peer, and still refuse a wrong key or a bad signature', async () => {
    const key = await identityFromSeed('sig-cache-a')
    const other = await identityFromSeed('sig-cache-b')
    const author = peerIdFromPrivateKey(key).toString()
    const body = {
      swarmId: 'a1'.repeat(32),
      round: 1,
      parentStateHash: 'b2'.repeat(32),
      author,
      rank: 4,
      alpha: 8,
      samples: 10,
      payloadHash: 'c3'.repeat(32),
      payloadSize: 100,
    }
    const signed = await signAnnouncement(key, body)
    // Twice: the second uses the cached key.
    expect(await verifyAnnouncement(signed)).toBe(true)
    expect(await verifyAnnouncement(signed)).toBe(true)
    expect(await verifyAnnouncement({ ...signed, body: { ...body, round: 2 } })).toBe(false)
    expect(await verifyAnnouncement(await signAnnouncement(other, body))).toBe(false)
    expect(await verifyAnnouncement({ ...signed, sig: signed.sig.slice(0, 40) })).toBe(false)
  })
})
