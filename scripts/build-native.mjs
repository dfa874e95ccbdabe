#!/usr/bin/env node
/**
 * Builds the optional native kernels (native/flora_kernels.cc) with node-gyp. npm runs it
 * at install time; run it again with `npm run build:native` to see the compiler output.
 *
 * It never fails the install: without a C++ toolchain (python3, make, g++ or clang) the
 * model layer runs on the wasm kernels, several times slower, and says so when a backend
 * is selected. FLORA_NATIVE=0 skips the build.
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dir = path.join(root, 'native')
const verbose = process.argv.includes('--verbose')
const strict = process.argv.includes('--strict')

function done(ok, message) {
  const line = `flora: native kernels ${ok ? 'built' : 'not built'}: ${message}`
  if (ok) console.log(line)
  else console.warn(`${line}\n  The model runs on the wasm kernels instead (slower). See README "Native kernels".`)
  process.exit(ok || !strict ? 0 : 1)
}

if (['0', 'false', 'off'].includes(process.env.FLORA_NATIVE ?? '')) done(false, 'skipped (FLORA_NATIVE=0)')
if (!existsSync(path.join(dir, 'binding.gyp'))) done(false, 'native/binding.gyp is missing')

// npm puts its bundled node-gyp on PATH for lifecycle scripts and names it in
// npm_config_node_gyp; outside npm, fall back to npm's copy next to this node.
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
].filter((p) => p !== undefined && p !== '' && existsSync(p))
const cmd = candidates.length > 0 ? [process.execPath, candidates[0]] : ['node-gyp']
// The addon uses only Node-API, whose ABI is stable across Node versions, so any local
// Node headers will do; without them node-gyp downloads the headers of this node.
const nodedir =
  process.env.npm_config_nodedir ||
  [path.join(path.dirname(process.execPath), '..'), '/usr', '/usr/local'].find((d) => existsSync(path.join(d, 'include', 'node', 'node_api.h')))
const args = [...cmd.slice(1), 'rebuild', '--directory', dir, ...(nodedir ? [`--nodedir=${nodedir}`] : [])]
const started = Date.now()
const res = spawnSync(cmd[0], args, { cwd: root, encoding: 'utf8', stdio: verbose ? 'inherit' : 'pipe' })
if (res.error !== undefined) done(false, `could not run node-gyp (${res.error.message})`)
if (res.status !== 0) {
  const out = `${res.stdout ?? ''}\n${res.stderr ?? ''}`.split('\n').filter((l) => /error|not found|ERR!/i.test(l)).slice(0, 6)
  done(false, `node-gyp failed (exit ${res.status})${out.length > 0 ? `:\n    ${out.join('\n    ')}` : ''}`)
}
done(true, `native/build/Release/flora_kernels.node in ${((Date.now() - started) / 1000).toFixed(1)} s`)
