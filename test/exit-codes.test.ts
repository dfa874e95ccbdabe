/** Every command exits 2 on a usage error and 0 on --help (src/exit-codes.ts; README "Exit codes"). */
import { execFile } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { commanderExitCode, EXIT_USAGE } from '../src/exit-codes.js'
import { CommanderError } from 'commander'

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env: { ...process.env, FLORA_FROM_SOURCE: '1' }, timeout: 60_000 }, (err, _stdout, stderr) => {
      resolve({ code: err == null ? 0 : typeof err.code === 'number' ? err.code : null, stderr })
    })
  })
}

const TSX = ['--import', 'tsx']

describe('exit codes', () => {
  it('maps commander errors: help and version 0, anything else 2', () => {
    expect(commanderExitCode(new CommanderError(0, 'commander.helpDisplayed', '(help)'))).toBe(0)
    expect(commanderExitCode(new CommanderError(0, 'commander.version', '1.0.0'))).toBe(0)
    expect(commanderExitCode(new CommanderError(1, 'commander.unknownOption', 'x'))).toBe(EXIT_USAGE)
    expect(commanderExitCode(new CommanderError(1, 'commander.help', '(no command)'))).toBe(EXIT_USAGE)
  })

  it.each([
    ['flora-peer', ['bin/flora-peer.js', '--bogus']],
    ['flora train', ['bin/flora.js', 'train', '--bogus']],
    ['flora export', ['bin/flora.js', 'export', '--bogus', '--out', 'x']],
    ['swarm', [...TSX, 'scripts/swarm.ts', '--bogus']],
    ['soak', [...TSX, 'scripts/soak.ts', '--bogus']],
    ['redteam', [...TSX, 'scripts/redteam.ts', '--bogus']],
    ['eval', [...TSX, 'scripts/eval.ts', '--bogus']],
  ])('%s: an unknown flag exits 2 with one line naming it', async (_name, args) => {
    const r = await run(args)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/unknown option '--bogus'/)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
  }, 60_000)

  it.each([
    ['flora-peer', ['bin/flora-peer.js', '--help']],
    ['swarm', [...TSX, 'scripts/swarm.ts', '--help']],
  ])('%s --help exits 0', async (_name, args) => {
    expect((await run(args)).code).toBe(0)
  }, 60_000)
})
