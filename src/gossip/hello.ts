/**
 * `/flora/hello/1.0.0`: the swarm handshake. On connecting, flora peers exchange their
 * swarm id and the config it hashes, so a peer of another swarm (other base model, LoRA
 * targets, strategy or round policy) is told apart, refused with a log line that names
 * the differing fields, and never merged with. Each hello also lists the members the
 * sender knows (ids and listen addresses), but only to a peer whose own hello checked out
 * (the listener reads the dialer's hello before it answers; the dialer lists members only
 * to a peer it already knows as one): a peer that bootstraps to one member learns, and
 * connects to, the rest of the swarm. A stream that closes before a hello arrived is not
 * a malformed hello (a busy or stopping peer), and is not refused.
 *
 *   dialer -> listener  frame: hello
 *   listener -> dialer  frame: hello
 */
import { z } from 'zod'
import type { PeerId, Stream } from '@libp2p/interface'
import { canonicalBytes, type CanonicalValue } from './canonical.js'
import { abortStreamOn, readFrames, sendFrame } from './stream-io.js'
import type { StreamOpener } from './payload.js'

export const HELLO_PROTOCOL = '/flora/hello/1.0.0'
const MAX_HELLO_BYTES = 64 * 1024

export interface Hello {
  readonly v: 1
  readonly swarmId: string
  /** The swarm config the id hashes (canonical JSON value), for a readable diff on mismatch. */
  readonly config: CanonicalValue
  readonly agent: string
  /** Members the sender knows, with their listen addresses, so a new peer meets the whole swarm. */
  readonly peers: readonly HelloPeer[]
  /** The sender's last committed round (a restarted peer learns it is behind, others skip its turns). */
  readonly head?: { readonly round: number; readonly stateHash: string }
}

export interface HelloPeer {
  readonly id: string
  readonly addrs: readonly string[]
}

export const MAX_HELLO_PEERS = 128

const jsonValue: z.ZodType<CanonicalValue> = z.lazy(() =>
  z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(jsonValue), z.record(z.string(), jsonValue)]),
)
const HelloSchema = z.strictObject({
  v: z.literal(1),
  swarmId: z.string().regex(/^[0-9a-f]{64}$/),
  config: jsonValue,
  agent: z.string().max(256),
  peers: z
    .array(z.strictObject({ id: z.string().min(1).max(128), addrs: z.array(z.string().max(512)).max(16) }))
    .max(MAX_HELLO_PEERS),
  head: z.strictObject({ round: z.number().int().min(0).max(2 ** 31 - 1), stateHash: z.string().regex(/^[0-9a-f]{64}$/) }).optional(),
})

function parseHello(bytes: Uint8Array): Hello | null {
  try {
    const r = HelloSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes)))
    return r.success ? (r.data as Hello) : null
  } catch {
    return null
  }
}

/** Their hello, null when malformed; throws when the stream ends before one arrives (not a refusal). */
async function readHello(stream: Stream): Promise<Hello | null> {
  const frames = readFrames(stream, MAX_HELLO_BYTES)
  const first = await frames.next()
  if (first.done === true) throw new Error('the stream closed before a hello arrived')
  return parseHello(first.value.subarray())
}

/**
 * Handler side: answer with our hello and report theirs (null when malformed). `own` sees
 * their hello first, so a member list goes only to a peer whose hello checked out.
 */
export function helloHandler(own: (peer: PeerId, theirs: Hello | null) => Hello | Promise<Hello>, onHello: (peer: PeerId, hello: Hello | null) => void) {
  return async (stream: Stream, connection: { remotePeer: PeerId }): Promise<void> => {
    const detach = abortStreamOn(stream, AbortSignal.timeout(10_000))
    try {
      const theirs = await readHello(stream)
      await sendFrame(stream, canonicalBytes((await own(connection.remotePeer, theirs)) as unknown as CanonicalValue))
      await stream.close()
      onHello(connection.remotePeer, theirs)
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      detach()
    }
  }
}

/** Dialer side: send our hello and return theirs (null when malformed). */
export async function sayHello(open: StreamOpener, peer: PeerId, own: Hello, signal: AbortSignal): Promise<Hello | null> {
  const stream = await open(peer, HELLO_PROTOCOL, { signal })
  const detach = abortStreamOn(stream, signal)
  try {
    await sendFrame(stream, canonicalBytes(own as unknown as CanonicalValue), signal)
    const theirs = await readHello(stream)
    await stream.close({ signal }).catch(() => {})
    return theirs
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  } finally {
    detach()
  }
}

/** Top-level config fields whose values differ, for the refusal log line. */
export function configDiff(ours: CanonicalValue, theirs: CanonicalValue): string[] {
  const a = isRecord(ours) ? ours : {}
  const b = isRecord(theirs) ? theirs : {}
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
  return keys.filter((k) => JSON.stringify(canonicalOrNull(a[k])) !== JSON.stringify(canonicalOrNull(b[k])))
}

function isRecord(v: CanonicalValue): v is { readonly [key: string]: CanonicalValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
function canonicalOrNull(v: CanonicalValue | undefined): string {
  return v === undefined ? 'undefined' : new TextDecoder().decode(canonicalBytes(v))
}
