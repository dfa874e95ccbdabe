/**
 * One identity file, one running peer. Two peers started on one key are one peer id twice:
 * by hand on one machine (the default `.flora/peer.key`) the second one bootstrapped to
 * itself and waited for swarm members forever. Now the identity file is locked by the peer
 * that uses it (`<file>.lock`, its pid; a dead holder's lock is taken over), and a bootstrap
 * address with the peer's own id is refused with the reason.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { identityFromSeed, loadOrCreateIdentity } from '../../src/node/identity.js'
import { createPeer, PeerOptionsError, type FloraPeer } from '../../src/node/peer.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const { config, weights } = syntheticSwarm({ round: { deadlineMs: 20_000, graceMs: 3000, minPeers: 2 } })

function peerOn(identityFile: string): Promise<FloraPeer> {
  return createPeer({ config, weights, rank: 2, trainer: syntheticTrainer(), rounds: 1, identityFile, listen: ['/ip4/127.0.0.1/tcp/0'] })
}

/** A process that lives until killed, and a function that kills it and waits for its exit. */
function sleeper(): { pid: number; stop: () => Promise<void> } {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  return {
    pid: child.pid as number,
    stop: async () => {
      child.kill('SIGKILL')
      await exited
    },
  }
}

describe('the identity file is one running peer', () => {
  let dir = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flora-idlock-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('a second peer on the same identity file is refused while the first runs, and allowed once it stopped', async () => {
    const file = join(dir, 'a', 'peer.key')
    const first = await peerOn(file)
    expect((await readFile(`${file}.lock`, 'utf8')).trim()).toBe(String(process.pid))
    await expect(peerOn(file)).rejects.toThrow(PeerOptionsError)
    await expect(peerOn(file)).rejects.toThrow(/identity .*peer\.key is in use by process \d+ \(this one: another peer here uses it\)/)
    await first.stop()
    const again = await peerOn(file)
    expect(again.peerId).toBe(first.peerId)
    await again.stop()
  })

  it('says which live process holds it, and takes over the lock of a process that died', async () => {
    const file = join(dir, 'b', 'peer.key')
    await loadOrCreateIdentity(file)
    const holder = sleeper()
    await writeFile(`${file}.lock`, `${holder.pid}\n`)
    await expect(peerOn(file)).rejects.toThrow(new RegExp(`in use by process ${holder.pid} \\(another flora-peer\\?\\): .*give each peer its own --identity`))
    await holder.stop()
    const peer = await peerOn(file)
    expect((await readFile(`${file}.lock`, 'utf8')).trim()).toBe(String(process.pid))
    await peer.stop()
  })

  it('a bootstrap address with the peer\'s own id is refused, naming the cause', async () => {
    const key = await identityFromSeed('self-bootstrap')
    const self = peerIdFromPrivateKey(key).toString()
    await expect(
      createPeer({ config, weights, rank: 2, trainer: syntheticTrainer(), privateKey: key, bootstrap: [`/ip4/127.0.0.1/tcp/4001/p2p/${self}`] }),
    ).rejects.toThrow(/is this peer's own id: another peer runs with the same identity/)
  })

  it('two flora-peer processes on one identity file: the second exits with the reason', async () => {
    const file = join(dir, 'c', 'peer.key')
    const args = (state: string) => [join(ROOT, 'bin', 'flora-peer.js'), '--trainer', 'synthetic', '--rounds', '1', '--min-peers', '2', '--listen', '/ip4/127.0.0.1/tcp/0', '--json', '--identity', file, '--state-dir', join(dir, state)]
    const env = { ...process.env, FLORA_FROM_SOURCE: '1' }
    const first = spawn(process.execPath, args('s1'), { env, stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      await new Promise<void>((ok, fail) => {
        first.stdout.on('data', (d: Buffer) => d.toString().includes('"listening"') && ok())
        first.once('exit', (code) => fail(new Error(`the first peer exited (${code})`)))
      })
      const second = spawn(process.execPath, args('s2'), { env, stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      second.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
      const code = await new Promise<number | null>((r) => second.once('exit', r))
      expect(code).toBe(1)
      expect(stderr).toMatch(new RegExp(`identity .*peer\\.key is in use by process ${first.pid} \\(another flora-peer\\?\\)`))
    } finally {
      first.kill('SIGTERM')
      await new Promise((r) => first.once('exit', r))
    }
  }, 60_000)
})
