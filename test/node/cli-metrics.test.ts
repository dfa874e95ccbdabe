/**
 * `flora-peer --metrics [HOST:]PORT`: the value parser (clear errors for bad values, from
 * the flag and from FLORA_METRICS), and a real flora-peer process serving its metrics.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { CommanderError } from 'commander'
import { buildProgram } from '../../src/node/cli.js'
import { MetricsAddressError, parseMetricsAddress } from '../../src/node/metrics.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const BIN = join(ROOT, 'bin', 'flora-peer.js')

describe('parseMetricsAddress', () => {
  it.each([
    ['9464', { host: '127.0.0.1', port: 9464 }],
    ['0', { host: '127.0.0.1', port: 0 }],
    [' 127.0.0.1:0 ', { host: '127.0.0.1', port: 0 }],
    ['0.0.0.0:9464', { host: '0.0.0.0', port: 9464 }],
    ['localhost:65535', { host: 'localhost', port: 65535 }],
    ['metrics.example.org:80', { host: 'metrics.example.org', port: 80 }],
    ['[::1]:9464', { host: '::1', port: 9464 }],
    ['[::]:0', { host: '::', port: 0 }],
  ])('%j', (value, expected) => {
    expect(parseMetricsAddress(value)).toEqual(expected)
  })

  it('a bare port listens on the default host given', () => {
    expect(parseMetricsAddress('9464', '0.0.0.0')).toEqual({ host: '0.0.0.0', port: 9464 })
  })

  it.each([
    ['', /the port must be an integer from 0 to 65535/],
    ['abc', /the port must be an integer from 0 to 65535 \(0: any free port\), got "abc"/],
    ['65536', /the port must be an integer from 0 to 65535/],
    ['-1', /the port must be an integer/],
    ['94.64', /the port must be an integer/],
    ['1e3', /the port must be an integer/],
    ['localhost:', /the port must be an integer .* got ""/],
    ['localhost:http', /got "http"/],
    [':9464', /no host before ':'.*0\.0\.0\.0:PORT for every interface/],
    ['::1:9464', /put an IPv6 host in brackets, e\.g\. \[::1\]:9464/],
    ['[::1]', /needs a port after it/],
    ['[]:9464', /the brackets hold no IPv6 address/],
    ['my host:9464', /"my host" is not a host name or IP address/],
    ['http://localhost:9464', /give HOST:PORT, not a URL/],
    ['localhost:9464/metrics', /the port must be an integer .* got "9464\/metrics"/],
    ['local/host:9464', /"local\/host" is not a host name or IP address/],
  ])('%j is refused', (value, why) => {
    let err: unknown
    try {
      parseMetricsAddress(value)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(MetricsAddressError)
    expect((err as Error).message).toMatch(why)
    expect((err as Error).message.startsWith(`${JSON.stringify(value)} is not [HOST:]PORT (e.g. 9464, 0.0.0.0:9464 or [::1]:9464): `)).toBe(true)
  })
})

describe('flora-peer --metrics', () => {
  /** Parses argv with the real program; returns its --metrics value, or the usage error it would print. */
  function parse(args: string[], env: Record<string, string> = {}): { metrics?: unknown; error?: string } {
    const saved = { ...process.env }
    Object.assign(process.env, env)
    let stderr = ''
    const program = buildProgram()
      .exitOverride()
      .configureOutput({ writeErr: (s) => (stderr += s), writeOut: () => {} })
    try {
      program.parse(['node', 'flora-peer', ...args])
      return { metrics: program.opts().metrics }
    } catch (err) {
      if (!(err instanceof CommanderError)) throw err
      return { error: stderr }
    } finally {
      for (const k of Object.keys(env)) {
        if (saved[k] === undefined) delete process.env[k]
        else process.env[k] = saved[k]
      }
    }
  }

  it('is off unless given', () => {
    expect(parse([])).toEqual({ metrics: undefined })
  })

  it('takes [HOST:]PORT from the flag or FLORA_METRICS (the flag wins)', () => {
    expect(parse(['--metrics', '9464'])).toEqual({ metrics: { host: '127.0.0.1', port: 9464 } })
    expect(parse([], { FLORA_METRICS: '0.0.0.0:0' })).toEqual({ metrics: { host: '0.0.0.0', port: 0 } })
    expect(parse(['--metrics', '[::1]:9100'], { FLORA_METRICS: '0.0.0.0:0' })).toEqual({ metrics: { host: '::1', port: 9100 } })
  })

  it('says what is wrong with a bad value', () => {
    expect(parse(['--metrics', 'abc']).error).toBe(
      `error: option '--metrics <[host:]port>' argument 'abc' is invalid. Expected [HOST:]PORT (e.g. 9464, 0.0.0.0:9464 or [::1]:9464): the port must be an integer from 0 to 65535 (0: any free port), got "abc"\n`,
    )
    expect(parse(['--metrics', '::1:9464']).error).toMatch(/argument '::1:9464' is invalid\. .*put an IPv6 host in brackets/)
    expect(parse([], { FLORA_METRICS: ':9464' }).error).toMatch(/value ':9464' from env 'FLORA_METRICS' is invalid\. .*no host before ':'/)
  })
})

describe('a flora-peer process with --metrics 127.0.0.1:0', () => {
  const live = new Set<ChildProcess>()
  afterEach(() => {
    for (const c of live) if (c.exitCode == null && c.signalCode == null) c.kill('SIGKILL')
    live.clear()
  })

  it('serves flora and libp2p metrics at the URL it prints, until it stops', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-metrics-'))
    try {
      // A swarm of one: its rounds commit alone; it lingers (serving) until told to stop.
      const child = spawn(
        process.execPath,
        [BIN, '--trainer', 'synthetic', '--json', '--rounds', '2', '--min-peers', '1', '--linger', '120000', '--no-state',
          '--identity', join(dir, 'peer.key'), '--listen', '/ip4/127.0.0.1/tcp/0', '--metrics', '127.0.0.1:0', '--http', '127.0.0.1:0'],
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FLORA_FROM_SOURCE: '1' } },
      )
      live.add(child)
      let stderr = ''
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
      const exit = new Promise<number | null>((res) => child.on('exit', (code) => res(code)))
      const events: Array<Record<string, unknown>> = []
      // Resolves once it printed its addresses and committed its last round (its 'done' line
      // only comes when it exits).
      const ready = new Promise<void>((res, rej) => {
        let buf = ''
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString()
          let nl
          while ((nl = buf.indexOf('\n')) >= 0) {
            events.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>)
            buf = buf.slice(nl + 1)
          }
          if (events.some((e) => e.event === 'listening') && events.some((e) => e.event === 'round:complete' && e.round === 2)) res()
        })
        void exit.then((code) => rej(new Error(`flora-peer exited (${code}) first; stderr:\n${stderr.slice(-3000)}`)))
      })
      await ready
      const listening = events.find((e) => e.event === 'listening') as { metrics: string; multiaddrs: string[] }
      expect(listening.metrics).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*\/metrics$/)
      expect(listening.multiaddrs.length).toBeGreaterThan(0)
      expect(stderr).toContain(`"msg":"metrics on ${listening.metrics}"`)

      const res = await fetch(listening.metrics)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
      const text = await res.text()
      expect(text).toMatch(/^flora_rounds_committed_total 2$/m)
      expect(text).toMatch(/^flora_head_round 2$/m)
      expect(text).toMatch(/^flora_done 1$/m)
      // flora-peer evaluates the agreed weights: the newest eval loss is exported.
      const evalLoss = (events.find((e) => e.event === 'round:complete' && e.round === 2) as { evalLoss: number }).evalLoss
      expect(text).toContain(`\nflora_eval_loss ${evalLoss}\n`)
      expect(text).toMatch(/^libp2p_\w+/m)
      expect(text).toMatch(/^process_cpu_seconds_total /m)
      expect((await fetch(listening.metrics.replace(/\/metrics$/, '/'))).status).toBe(404)

      // --http: the status page, its JSON (with the eval losses flora-peer computed) and the metrics again.
      const statusUrl = (listening as unknown as { status: string }).status
      expect(statusUrl).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*\/$/)
      expect(stderr).toContain(`"msg":"status page on ${statusUrl}"`)
      expect(await (await fetch(statusUrl)).text()).toMatch(/^<!doctype html>/)
      const st = (await (await fetch(`${statusUrl}status.json`)).json()) as { head: { round: number }; rank: number; rounds: number; history: Array<{ round: number; evalLoss?: number }> }
      expect(st.head.round).toBe(2)
      expect([st.rank, st.rounds]).toEqual([8, 2]) // flora-peer's default rank
      const evalOf = (round: number): number => (events.find((e) => e.event === 'round:complete' && e.round === round) as { evalLoss: number }).evalLoss
      expect(st.history.map((r) => [r.round, r.evalLoss])).toEqual([[1, evalOf(1)], [2, evalOf(2)]])
      expect(await (await fetch(`${statusUrl}metrics`)).text()).toMatch(/^flora_head_round 2$/m)

      child.kill('SIGTERM')
      expect(await exit, stderr.slice(-2000)).toBe(130)
      await expect(fetch(listening.metrics)).rejects.toThrow()
      await expect(fetch(statusUrl)).rejects.toThrow()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
