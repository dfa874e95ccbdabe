/**
 * Length-prefixed framing over libp2p 3 streams (event based: `send` + `onDrain` to
 * write, async iteration to read), via it-length-prefixed, piped with it-pipe.
 */
import * as lp from 'it-length-prefixed'
import { pipe } from 'it-pipe'
import type { Stream } from '@libp2p/interface'

/** Queue one frame; waits for the stream to drain when its write buffer is full (backpressure). */
export async function sendFrame(stream: Stream, data: Uint8Array, signal?: AbortSignal): Promise<void> {
  if (!stream.send(lp.encode.single(data))) await stream.onDrain({ signal })
}

/** A received frame: a list of byte chunks (Uint8ArrayList from it-length-prefixed). */
export interface Frame extends Iterable<Uint8Array> {
  readonly byteLength: number
  subarray(): Uint8Array
}

/** The frames of a stream, each at most `maxDataLength` bytes (a longer one throws when its length prefix arrives). */
export function readFrames(stream: Stream, maxDataLength: number): AsyncGenerator<Frame, void, unknown> {
  return pipe(stream, (source) => lp.decode(source, { maxDataLength }))
}

/** Aborts the stream when the signal fires; returns the function that detaches the listener. */
export function abortStreamOn(stream: Stream, signal: AbortSignal): () => void {
  const onAbort = (): void => {
    stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
  }
  if (signal.aborted) onAbort()
  else signal.addEventListener('abort', onAbort, { once: true })
  return () => signal.removeEventListener('abort', onAbort)
}
