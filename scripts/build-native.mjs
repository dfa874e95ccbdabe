#!/usr/bin/env node
/**
 * Makes the native kernels (native/flora_kernels.cc) available. npm runs it at install time.
 *
 * - Where the package ships a prebuilt binary for this platform (native/prebuilds/, made by
 *   scripts/prebuild-native.mjs) and it loads here, nothing is compiled: no toolchain needed.
 * - Otherwise it builds native/build/Release/flora_kernels.node with node-gyp (python3,
 *   make and g++ or clang). `npm run build:native` (--force) always builds, printing the
 *   compiler output; a local build is preferred to the prebuilt one when both exist.
 *
 * It never fails the install: without either the model layer runs on the wasm kernels,
 * several times slower, and says so when a backend is selected. FLORA_NATIVE=0 skips all.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { gypErrors, NATIVE_DIR, prebuiltPath, REQUIRED_EXPORTS, ROOT, runNodeGyp } from './native-gyp.mjs'

const verbose = process.argv.includes('--verbose')
const strict = process.argv.includes('--strict')
const force = process.argv.includes('--force')

function done(ok, message) {
  const line = `flora: native kernels ${ok ? 'ready' : 'not built'}: ${message}`
  if (ok) console.log(line)
  else console.warn(`${line}\n  The model runs on the wasm kernels instead (slower). See README "Native kernels".`)
  process.exit(ok || !strict ? 0 : 1)
}

/** Why `file` is not a usable addon here (undefined: it is). */
function unusable(file) {
  try {
    const addon = createRequire(import.meta.url)(file)
    const missing = REQUIRED_EXPORTS.filter((name) => typeof addon[name] !== 'function')
    return missing.length > 0 ? `it lacks ${missing.join(', ')}` : undefined
  } catch (err) {
    return (err instanceof Error ? err.message : String(err)).split('\n')[0]
  }
}

if (['0', 'false', 'off'].includes(process.env.FLORA_NATIVE ?? '')) done(false, 'skipped (FLORA_NATIVE=0)')
if (!existsSync(path.join(NATIVE_DIR, 'binding.gyp'))) done(false, 'native/binding.gyp is missing')

const prebuilt = prebuiltPath()
let prebuiltProblem
if (!force && existsSync(prebuilt)) {
  prebuiltProblem = unusable(prebuilt)
  if (prebuiltProblem === undefined) done(true, `using the prebuilt ${path.relative(ROOT, prebuilt)} (no compiler needed; \`npm run build:native\` compiles your own)`)
}

const started = Date.now()
const res = runNodeGyp(NATIVE_DIR, { verbose })
const why = prebuiltProblem !== undefined ? ` (the prebuilt binary does not load here: ${prebuiltProblem})` : ''
if (res.error !== undefined) done(false, `could not run node-gyp (${res.error.message})${why}`)
if (res.status !== 0) {
  const out = gypErrors(res)
  done(false, `node-gyp failed (exit ${res.status})${why}${out.length > 0 ? `:\n    ${out.join('\n    ')}` : ''}`)
}
done(true, `built native/build/Release/flora_kernels.node in ${((Date.now() - started) / 1000).toFixed(1)} s`)
