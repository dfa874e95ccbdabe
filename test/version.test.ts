/** Every CLI says its version (package.json's), and peers greet each other with it. */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { VERSION } from '../src/version.js'
import { FLORA_AGENT } from '../src/node/service.js'

const run = promisify(execFile)
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }

describe('--version', () => {
  it('is package.json\'s version, also in the hello agent string', () => {
    expect(VERSION).toBe(pkg.version)
    expect(FLORA_AGENT).toBe(`flora/${pkg.version}`)
  })

  it.each([
    ['flora-peer', 'bin/flora-peer.js'],
    ['flora', 'bin/flora.js'],
  ])('%s --version and -V print it and exit 0', async (_name, bin) => {
    for (const flag of ['--version', '-V']) {
      const { stdout } = await run(process.execPath, [bin, flag], { env: { ...process.env, FLORA_FROM_SOURCE: '1' } })
      expect(stdout.trim()).toBe(pkg.version)
    }
  }, 60_000)
})
