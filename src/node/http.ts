/**
 * A peer's HTTP server (plain node:http): the live status page at `/`, the same data as
 * JSON at `/status.json` (see status.ts), and Prometheus metrics at `/metrics` (see
 * metrics.ts). Each route is served when its source is given; anything else is 404.
 *
 *   const server = await startPeerHttpServer({ port: 8080, status, registry })
 *   console.log(server.url)   // http://127.0.0.1:8080
 *   await server.close()
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import { STATUS_PAGE_HTML } from './status-page.js'
import type { PeerStatus } from './status.js'

export interface PeerHttpServerOptions {
  /** Interface to listen on (default 127.0.0.1: only this machine can connect). */
  host?: string
  /** TCP port; 0 picks a free one (see `url`). */
  port: number
  /** Prometheus metrics, served at /metrics. */
  registry?: Registry
  /** The live status (a StatusTracker), served at / and /status.json. */
  status?: { snapshot(): PeerStatus }
}

export interface PeerHttpServer {
  /** The server's base URL, e.g. http://127.0.0.1:8080 (the real port when 0 was asked). */
  readonly url: string
  /** Stops listening and drops open (keep-alive) connections. Idempotent. */
  close(): Promise<void>
}

const TEXT = { 'content-type': 'text/plain; charset=utf-8' }

export async function startPeerHttpServer(options: PeerHttpServerOptions): Promise<PeerHttpServer> {
  const { registry, status } = options
  const routes = [...(status != null ? ['/', '/status.json'] : []), ...(registry != null ? ['/metrics'] : [])]
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]
    if (!routes.includes(path)) {
      res.writeHead(404, TEXT).end(`not found: this peer serves ${routes.join(', ')}\n`)
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...TEXT, allow: 'GET, HEAD' }).end('method not allowed\n')
      return
    }
    const send = (type: string, body: string): void => {
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' })
      res.end(req.method === 'HEAD' ? undefined : body)
    }
    if (path === '/' && status != null) return send('text/html; charset=utf-8', STATUS_PAGE_HTML)
    if (path === '/status.json' && status != null) return send('application/json; charset=utf-8', JSON.stringify(status.snapshot()))
    if (path === '/metrics' && registry != null) {
      registry.metrics().then(
        (body) => send(registry.contentType, body),
        (err: unknown) => {
          res.writeHead(500, TEXT).end(`collecting the metrics failed: ${err instanceof Error ? err.message : String(err)}\n`)
        },
      )
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  let closing: Promise<void> | undefined
  return {
    url: `http://${host}:${address.port}`,
    close: () => {
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err != null ? reject(err) : resolve()))
        server.closeAllConnections()
      })
      return closing
    },
  }
}
