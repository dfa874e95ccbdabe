/**
 * A real flora-peer process for tests: started from source with --json, its JSON events
 * collected as they arrive, `until` to wait for one, `exit` for its exit code. Every process
 * started is in `live`, so a test's afterEach can kill what a timed-out test left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { join, resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '..', '..')
const BIN = join(ROOT, 'bin', 'flora-peer.js')

export interface PeerProcess {
  child: ChildProcess
  events: Array<Record<string, unknown>>
  stderr: string
  exit: Promise<number | null>
  /** Resolves with the first event matching `pred`. */
  until(pred: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
}

/** Every process a test started: killed after it, even when the test timed out (its finally never runs then). */
export const live = new Set<ChildProcess>()

/** Start `flora-peer --json ...args`, with `env` added to this process's environment. */
export function peerProcess(args: string[], env: NodeJS.ProcessEnv = {}): PeerProcess {
  const child = spawn(process.execPath, [BIN, '--json', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FLORA_FROM_SOURCE: '1', ...env },
  })
  live.add(child)
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
  const p: PeerProcess = {
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
