/**
 * P11 honest exit and P7 under `kill -9`, with real flora-peer processes: a peer killed
 * with SIGKILL mid-round and restarted with its key and state dir resumes from its last
 * committed round (nothing lost), does not found a chain of its own, catches up with the
 * members by verified state sync and contributes again; every peer's records hold one
 * chain and every peer exits 0. (A peer that cannot get the certified chain exits 3: see
 * one-chain.test.ts, the minority case.)
 */
import { afterEach, describe, expect, it } from 'vitest'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { live, peerProcess, type PeerProcess as Proc } from './peer-process.js'

/** A flora-peer process on the synthetic trainer. */
const peer = (args: string[]): Proc => peerProcess(['--trainer', 'synthetic', ...args])

describe('P11: honest exit, with flora-peer processes and kill -9', () => {
  afterEach(() => {
    for (const c of live) if (c.exitCode == null && c.signalCode == null) c.kill('SIGKILL')
    live.clear()
  })
  it('a peer killed with SIGKILL mid-round and restarted on its state dir resumes, catches up by state sync and contributes again; all exit 0 on one chain', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-exit-'))
    const procs: Proc[] = []
    try {
      // Each round's training blocks (in the worker) 1.2 s, so the swarm is still running when the killed peer is back.
      const swarm = ['--rounds', '10', '--min-peers', '3', '--deadline', '4000', '--grace', '1000', '--stall-timeout', '30000', '--linger', '500', '--train-busy-ms', '1200']
      const start = (i: number, bootstrap?: string): Proc => {
        const p = peer([
          ...swarm,
          '--data', `synthetic:${i}`,
          '--rank', String(2 + i),
          '--identity', join(dir, `peer-${i}.key`),
          '--state-dir', join(dir, `peer-${i}.state`),
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
      // Killed while it trains round 2.
      c.child.kill('SIGKILL')
      expect(await c.exit).toBeNull()
      const r1 = (await readFile(join(dir, 'records-2.jsonl'), 'utf8')).trim().split('\n')
      expect(r1.map((l) => (JSON.parse(l) as { round: number }).round)).toEqual([1])

      c = start(2, addr)
      const [codeA, codeB, codeC] = await Promise.all([a.exit, b.exit, c.exit])
      expect(codeA, a.stderr.slice(-2000)).toBe(0)
      expect(codeB, b.stderr.slice(-2000)).toBe(0)
      expect(codeC, c.stderr.slice(-3000)).toBe(0)
      expect(c.stderr).toMatch(/resuming from the state dir/)
      // The restarted peer resumed at round 1 (nothing lost), caught up (verified replay), then took part again.
      const rounds = c.events.filter((e) => e.event === 'round:complete') as Array<{ round: number; synced?: string; contributors: string[] }>
      expect(rounds[0].round).toBe(2)
      expect(rounds.map((r) => r.round)).toEqual(Array.from({ length: rounds.length }, (_, k) => k + 2))
      const chain = async (i: number) =>
        (await readFile(join(dir, `records-${i}.jsonl`), 'utf8'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { round: number; stateHash: string; contributors: string[] })
      const [ca, cb, cc] = await Promise.all([chain(0), chain(1), chain(2)])
      // --records holds one chain on every peer, each round once, the same hashes.
      expect(ca.map((r) => r.round)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      expect(cb.map((r) => r.stateHash)).toEqual(ca.map((r) => r.stateHash))
      expect(cc.map((r) => r.stateHash)).toEqual(ca.map((r) => r.stateHash))
      const idC = (JSON.parse(await readFile(join(dir, 'report-2.json'), 'utf8')) as { peerId: string }).peerId
      const back = ca.filter((r) => r.round > 2 && r.contributors.includes(idC))
      expect(back.length, JSON.stringify(ca.map((r) => r.contributors.length)) + c.stderr + "\n=====A\n" + a.stderr).toBeGreaterThan(0)
      expect(rounds.some((r) => r.synced == null)).toBe(true)
    } finally {
      for (const p of procs) if (p.child.exitCode == null && p.child.signalCode == null) p.child.kill('SIGKILL')
      await rm(dir, { recursive: true, force: true })
    }
  }, 120_000)
})
