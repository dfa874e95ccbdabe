/** The swarm script end to end: three real flora-peer processes on loopback (synthetic trainer; the model trainer's run is in model-trainer.test.ts). */
import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { buildReport, type SwarmReport } from '../../scripts/swarm.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs')

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [TSX, join(ROOT, 'scripts', 'swarm.ts'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('exit', (code) => res({ code, stdout, stderr }))
  })
}

describe('npm run swarm', () => {
  it('runs 3 peer processes with heterogeneous ranks, agrees on every round and writes report.json', async () => {
    const out = await mkdtemp(join(tmpdir(), 'flora-swarm-'))
    try {
      const { code, stdout, stderr } = await run(['--trainer', 'synthetic', '--peers', '3', '--rounds', '2', '--ranks', '8,4,2', '--out', out, '--no-progress'])
      expect(code, stderr).toBe(0)
      // Piped: the summary text on stderr, the report as one JSON line on stdout.
      expect(stderr).toMatch(/round 2: hashes agree/)
      const line = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as SwarmReport & { event: string }
      expect(line.event).toBe('swarm:report')
      expect(line.agreement).toBe(true)
      const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8')) as SwarmReport
      expect(report.agreement).toBe(true)
      expect(report.allFinished).toBe(true)
      expect(report.rounds).toHaveLength(2)
      const ids = report.peers.map((p) => p.peerId).sort()
      for (const r of report.rounds) {
        expect([...r.contributors].sort()).toEqual(ids)
        expect(new Set(Object.values(r.hashes)).size).toBe(1)
        for (const loss of Object.values(r.evalLoss)) expect(loss).toBeTypeOf('number')
      }
      // The synthetic task's held-out loss falls with the merged updates.
      const l0 = report.genesis.evalLoss as number
      const l2 = Object.values(report.rounds[1].evalLoss)[0] as number
      expect(l2).toBeLessThan(l0)
      expect(report.peers.map((p) => p.rank)).toEqual([8, 4, 2])
      for (const p of report.peers) {
        expect(p.exitCode).toBe(0)
        expect(p.bytesReceived).toBeGreaterThan(0)
        expect(p.samples).toBeGreaterThan(0)
      }
    } finally {
      await rm(out, { recursive: true, force: true })
    }
  }, 180_000)

  it('reports disagreement when two peers end a round on different hashes', async () => {
    const out = await mkdtemp(join(tmpdir(), 'flora-swarm-report-'))
    try {
      const peer = (id: string, hash: string) => ({
        peerId: id,
        swarmId: 's',
        genesis: { stateHash: 'g', evalLoss: 1 },
        samples: 1,
        rounds: [{ round: 1, stateHash: hash, parentStateHash: 'g', proposer: 'a', contributors: ['a', 'b'], evalLoss: 0.5, metrics: {} }],
        rejected: {},
        stats: { payloadBytesReceived: 1, payloadBytesSent: 1, gossipBytesReceived: 0, wireBytesIn: 0, wireBytesOut: 0 },
        finished: true,
      })
      await writeFile(join(out, 'peer-0.json'), JSON.stringify(peer('a', 'h1')))
      await writeFile(join(out, 'peer-1.json'), JSON.stringify(peer('b', 'h2')))
      const report = await buildReport(out, 2, [4, 2], 'flora', 'synthetic', 1, [0, 0], 1)
      expect(report.agreement).toBe(false)
      expect(report.rounds[0].agree).toBe(false)
    } finally {
      await rm(out, { recursive: true, force: true })
    }
  })
})
