/**
 * Every command takes its options from flags, FLORA_* variables and a JSON --config file, in
 * that order of precedence (src/cli-options.ts; README "Configuration").
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command, InvalidArgumentError, Option } from 'commander'
import { describe, expect, it } from 'vitest'
import { envVariables, withEnvAndConfig } from '../src/cli-options.js'
import { EXIT_USAGE, parseCommandLine } from '../src/exit-codes.js'
import { parseEvalArgs, UsageError } from '../src/eval/cli.js'

const dir = mkdtempSync(join(tmpdir(), 'flora-cli-options-'))
function file(name: string, text: string): string {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}

function positive(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer')
  return n
}

function program(): Command {
  return withEnvAndConfig(
    new Command('demo')
      .option('-p, --peers <n>', 'peers', positive, 3)
      .option('--ranks <list>', 'ranks', (v: string) => v.split(',').map(positive))
      .option('--out <dir>', 'out', 'runs/x')
      .option('--no-progress', 'no bar')
      .addOption(new Option('--trainer <name>', 'trainer').choices(['model', 'synthetic']).default('model')),
    'FLORA_DEMO_',
  )
}

function parse(argv: string[], env: Record<string, string> = {}): { code: number | undefined; opts: Record<string, unknown>; stderr: string } {
  const saved = { ...process.env }
  Object.assign(process.env, env)
  let stderr = ''
  try {
    const p = program().configureOutput({ writeErr: (s) => (stderr += s), writeOut: () => {} })
    const code = parseCommandLine(p, ['node', 'demo', ...argv], { write: (s: string) => (stderr += s) })
    return { code, opts: p.opts(), stderr }
  } finally {
    for (const k of Object.keys(env)) delete process.env[k]
    Object.assign(process.env, saved)
  }
}

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', ...args], { env: { ...process.env, FLORA_FROM_SOURCE: '1', ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

describe('options from flags, FLORA_* variables and --config files', () => {
  it('gives every option a variable named after it, and --config one of its own', () => {
    expect(envVariables(program()).sort()).toEqual(
      ['FLORA_DEMO_CONFIG', 'FLORA_DEMO_NO_PROGRESS', 'FLORA_DEMO_OUT', 'FLORA_DEMO_PEERS', 'FLORA_DEMO_RANKS', 'FLORA_DEMO_TRAINER'].sort(),
    )
    expect(program().helpInformation()).toContain('env: FLORA_DEMO_PEERS')
  })

  it('takes the flag over the variable, the variable over the file, the file over the default', () => {
    const cfg = file('demo.json', JSON.stringify({ peers: 5, ranks: [16, 8], out: 'runs/from-file', progress: false, trainer: 'synthetic' }))
    expect(parse([]).opts).toMatchObject({ peers: 3, out: 'runs/x', progress: true, trainer: 'model' })
    expect(parse(['--config', cfg]).opts).toMatchObject({ peers: 5, ranks: [16, 8], out: 'runs/from-file', progress: false, trainer: 'synthetic' })
    expect(parse(['--config', cfg], { FLORA_DEMO_PEERS: '7' }).opts).toMatchObject({ peers: 7, out: 'runs/from-file' })
    expect(parse(['--config', cfg, '--peers', '9'], { FLORA_DEMO_PEERS: '7' }).opts).toMatchObject({ peers: 9 })
    // The file named by the variable.
    expect(parse([], { FLORA_DEMO_CONFIG: cfg }).opts).toMatchObject({ peers: 5 })
  })

  it('checks file values with the flags\' own parsers: one line and exit 2 for a bad one', () => {
    const cases: Array<[string, RegExp]> = [
      ['{"peers": 0}', /"peers": must be a positive integer/],
      ['{"trainer": "gpu"}', /"trainer" must be one of model, synthetic/],
      ['{"progress": "no"}', /"progress" must be true or false/],
      ['{"bogus": 1}', /unknown option "bogus"/],
      ['[1, 2]', /expected a JSON object/],
      ['{peers: 1}', /not JSON/],
    ]
    for (const [text, message] of cases) {
      const r = parse(['--config', file('bad.json', text)])
      expect(r.code).toBe(EXIT_USAGE)
      expect(r.stderr).toMatch(message)
      expect(r.stderr.trim().split('\n')).toHaveLength(1)
    }
    expect(parse(['--config', join(dir, 'missing.json')]).stderr).toMatch(/--config .*missing\.json: no such file/)
  })

  it('eval: variables and a config file, checked like the flags', () => {
    const cfg = file('eval.json', JSON.stringify({ clients: 4, rounds: 2, quick: true, strategies: ['flora', 'fedit'], out: 'runs/e' }))
    const c = parseEvalArgs(['--config', cfg])
    expect(c).toMatchObject({ clients: 4, rounds: 2, quick: true, strategies: ['flora', 'fedit'], out: 'runs/e' })
    process.env.FLORA_EVAL_CLIENTS = '6'
    try {
      expect(parseEvalArgs(['--config', cfg]).clients).toBe(6)
    } finally {
      delete process.env.FLORA_EVAL_CLIENTS
    }
    expect(() => parseEvalArgs(['--config', file('eval-bad.json', '{"clients": "many", "out": "x"}')])).toThrow(UsageError)
  })

  it.each([
    ['swarm', 'scripts/swarm.ts', 'FLORA_SWARM_PEERS', /--peers/],
    ['soak', 'scripts/soak.ts', 'FLORA_SOAK_PEERS', /--peers/],
    ['redteam', 'scripts/redteam.ts', 'FLORA_REDTEAM_PEERS', /--peers/],
  ])('%s reads its FLORA_* variables (a bad one is a usage error naming the flag)', async (_name, script, variable, message) => {
    const r = await run([script], { [variable]: '0' })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
  }, 60_000)

  it('scripts read --config files: redteam {"list": true} lists the attacks and starts nothing', async () => {
    const r = await run(['scripts/redteam.ts', '--config', file('redteam.json', '{"list": true}')])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/manifest-flood/)
    const bad = await run(['scripts/swarm.ts', '--config', file('swarm.json', '{"peers": -1}')])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/swarm: --config .*swarm\.json: "peers"/)
  }, 60_000)
})
