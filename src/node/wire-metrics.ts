/**
 * A minimal libp2p Metrics component that counts raw bytes on every connection's
 * transport (TCP payload: encrypted, with Noise and Yamux framing), so benchmarks can
 * report what a peer really received, not just what flora asked for. Everything else in
 * the Metrics interface is a no-op.
 */
import type { Metrics, MultiaddrConnection } from '@libp2p/interface'

export interface WireCounter {
  bytesIn: number
  bytesOut: number
}

interface Countable {
  onData(data: Uint8Array): void
  sendData(data: Iterable<Uint8Array>): { sentBytes: number; canSendMore: boolean }
}

export function wireMetrics(counter: WireCounter): () => Metrics {
  const noop = (): never => ({ update() {}, increment() {}, decrement() {}, reset() {}, timer: () => () => {}, observe() {} }) as never
  return () => ({
    trackMultiaddrConnection(maConn: MultiaddrConnection): void {
      const c = maConn as unknown as Countable
      if (typeof c.onData !== 'function' || typeof c.sendData !== 'function') return
      const onData = c.onData.bind(c)
      const sendData = c.sendData.bind(c)
      c.onData = (data) => {
        counter.bytesIn += data.byteLength
        onData(data)
      }
      c.sendData = (data) => {
        const r = sendData(data)
        counter.bytesOut += r.sentBytes
        return r
      }
    },
    trackProtocolStream(): void {},
    registerMetric: noop,
    registerMetricGroup: noop,
    registerCounter: noop,
    registerCounterGroup: noop,
    registerHistogram: noop,
    registerHistogramGroup: noop,
    registerSummary: noop,
    registerSummaryGroup: noop,
    traceFunction: ((_name: string, fn: unknown) => fn) as Metrics['traceFunction'],
    createTrace: () => undefined,
  })
}
