/**
 * P11 honest exit and P7 under `kill -9`, with real flora-peer processes: a peer killed
 * with SIGKILL after round 1 and restarted with its key and records file knows it is
 * behind (its records end at round 1, the members report more), does not found a chain of
 * its own from genesis, appends nothing to its records, and exits 3 saying why; the
 * others finish every round on one chain and exit 0.
 */
import { describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '..', '..')
const BIN = join(ROOT, 'bin', 'flora-peer.js')

interface Proc {
  child: ChildProcess
  events: Array<Record<string, unknown>>
  stderr: string
  exit: Promise<number | null>
  /** Resolves with the first event matching `pred`. */
  until(pred: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
}

function peer(args: string[]): Proc {
  const child = spawn(process.execPath, [BIN, '--trainer', 'synthetic', '--json', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FLORA_FROM_SOURCE: '1' },
  })
  const events: Array<Record<string, unknown>> = []
  const waiters: Array<{ pred: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }> = []
  let buf = ''
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      let e: Record<string, unknown>
      try {
        e = JSON.parse(line) as Record<string, unknown>
      } catch {
        continue
      }
      events.push(e)
      for (const w of [...waiters]) {
        if (w.pred(e)) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(e)
        }
      }
    }
  })
  const p: Proc = {
    child,
    events,
    stderr: '',
    exit: new Promise((res) => child.on('exit', (code) => res(code))),
    until: (pred) =>
      new Promise((res, rej) => {
        const hit = events.find(pred)
        if (hit != null) return res(hit)
        waiters.push({ pred, resolve: res })
        void p.exit.then((code) => rej(new Error(`peer exited (${code}) first; stderr:\n${p.stderr.slice(-3000)}`)))
      }),
  }
  child.stderr?.on('data', (d: Buffer) => (p.stderr += d.toString()))
  return p
}

describe('P11: honest exit, with flora-peer processes and kill -9', () => {
  it('a peer killed after round 1 and restarted follows instead of forking, exits 3 and says why; the others finish on one chain', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-exit-'))
    const procs: Proc[] = []
    try {
      const swarm = ['--rounds', '4', '--min-peers', '3', '--deadline', '3000', '--grace', '1000', '--stall-timeout', '6000', '--linger', '500']
      const start = (i: number, bootstrap?: string): Proc => {
        const p = peer([
          ...swarm,
          '--data', `synthetic:${i}`,
          '--rank', String(2 + i),
          '--identity', join(dir, `peer-${i}.key`),
          '--records', join(dir, `records-${i}.jsonl`),
          '--report', join(dir, `report-${i}.json`),
          '--listen', '/ip4/127.0.0.1/tcp/0',
          ...(bootstrap != null ? ['--bootstrap', bootstrap] : []),
        ])
        procs.push(p)
        return p
      }
      const a = start(0)
      const addr = ((await a.until((e) => e.event === 'listening')).multiaddrs as string[])[0]
      const b = start(1, addr)
      let c = start(2, addr)
      await Promise.all([a, b, c].map((p) => p.until((e) => e.event === 'round:complete' && e.round === 1)))
      c.child.kill('SIGKILL')
      expect(await c.exit).toBeNull()
      const r1 = (await readFile(join(dir, 'records-2.jsonl'), 'utf8')).trim().split('\n')
      expect(r1.map((l) => (JSON.parse(l) as { round: number }).round)).toEqual([1])

      c = start(2, addr)
      const [codeA, codeB, codeC] = await Promise.all([a.exit, b.exit, c.exit])
      expect(codeA, a.stderr.slice(-2000)).toBe(0)
      expect(codeB, b.stderr.slice(-2000)).toBe(0)
      expect(codeC).toBe(3)
      expect(c.stderr).toMatch(/behind the swarm/)
      expect(c.stderr).toMatch(/left the swarm without the certified chain/)
      // The restarted peer committed nothing: its records still hold one chain, round 1 once.
      const after = (await readFile(join(dir, 'records-2.jsonl'), 'utf8')).trim().split('\n')
      expect(after.map((l) => (JSON.parse(l) as { round: number }).round)).toEqual([1])
      const report = JSON.parse(await readFile(join(dir, 'report-2.json'), 'utf8')) as { finished: boolean; stalled: { behind: boolean } | null; rounds: unknown[] }
      expect(report.finished).toBe(false)
      expect(report.stalled?.behind).toBe(true)
      expect(report.rounds).toEqual([])
      // A and B: one chain, the same hashes, round 1 with 3 contributors, rounds 2..4 with 2.
      const chain = async (i: number) =>
        (await readFile(join(dir, `records-${i}.jsonl`), 'utf8'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { round: number; stateHash: string; contributors: string[] })
      const [ca, cb] = await Promise.all([chain(0), chain(1)])
      expect(ca.map((r) => r.round)).toEqual([1, 2, 3, 4])
      expect(cb.map((r) => r.stateHash)).toEqual(ca.map((r) => r.stateHash))
      expect(ca.map((r) => r.contributors.length)).toEqual([3, 2, 2, 2])
    } finally {
      for (const p of procs) if (p.child.exitCode == null && p.child.signalCode == null) p.child.kill('SIGKILL')
      await rm(dir, { recursive: true, force: true })
    }
  }, 120_000)
})
