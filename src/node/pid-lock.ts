/**
 * A lock file holding the pid of the process that uses a resource (a state dir, an identity
 * key): a second live process is refused; a lock left by a process that died is taken over.
 * Locks held in this process are tracked by path too (a pid cannot tell two holders in one
 * process apart).
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'

/** The resource is in use: `holder` is the pid of the process that holds it. */
export class PidLockBusy extends Error {
  override readonly name = 'PidLockBusy'
  constructor(
    readonly lockFile: string,
    readonly holder: number,
  ) {
    super(`${lockFile} is held by process ${holder}`)
  }
}

const HELD = new Set<string>()

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Takes `lockFile` for this process (PidLockBusy if a live process holds it); returns its release. */
export function acquirePidLock(lockFile: string): () => void {
  const key = resolve(lockFile)
  if (HELD.has(key)) throw new PidLockBusy(lockFile, process.pid)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lockFile, `${process.pid}\n`, { flag: 'wx' })
      HELD.add(key)
      let held = true
      return () => {
        if (!held) return
        held = false
        HELD.delete(key)
        rmSync(lockFile, { force: true })
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number.parseInt(readFileSync(lockFile, 'utf8'), 10)
      if (Number.isInteger(pid) && pid !== process.pid && pidAlive(pid)) throw new PidLockBusy(lockFile, pid)
      rmSync(lockFile, { force: true }) // left by a process that died (or by this pid before a restart)
    }
  }
  throw new Error(`${lockFile}: could not take the lock file`)
}
