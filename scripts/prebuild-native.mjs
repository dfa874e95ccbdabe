#!/usr/bin/env node
/**
 * Builds the prebuilt native kernels shipped in the package, so that `npm install flora-p2p`
 * needs no C++ toolchain on this platform (the node-gyp-build convention):
 *
 *   native/prebuilds/<platform>-<arch>/flora_kernels.napi.node
 *   native/prebuilds/<platform>-<arch>/BUILD.json   (sha256 of the binary and of its sources, compiler, glibc floor)
 *
 * The build is reproducible: sources copied to a fresh temporary directory, node-gyp with
 * Node-API only (one binary for every Node >= 22), symbols stripped. `--check` builds again
 * and fails unless the bytes equal the committed binary's. BUILD.json records the glibc and
 * libstdc++ the binary needs (built on Debian 12: glibc >= 2.34, GLIBCXX_3.4.30, i.e.
 * Debian 12, Ubuntu 22.04 and later); where it does not load, the install compiles instead.
 *
 *   node scripts/prebuild-native.mjs          # (re)write the prebuild for this platform
 *   node scripts/prebuild-native.mjs --check  # rebuild and compare with the committed one
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { gypErrors, NATIVE_DIR, prebuiltPath, REQUIRED_EXPORTS, ROOT, runNodeGyp, SOURCES, sourcesHash } from './native-gyp.mjs'

const check = process.argv.includes('--check')
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

function fail(message) {
  console.error(`prebuild-native: ${message}`)
  process.exit(1)
}

/** The newest `PREFIX_x.y[.z]` symbol version the binary needs (its floor for glibc, GLIBC_, or libstdc++, GLIBCXX_). */
function symbolFloor(file, prefix) {
  try {
    const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
    const versions = [...out.matchAll(new RegExp(`\\b${prefix}_([\\d.]+)`, 'g'))].map((m) => m[1].split('.').map(Number))
    versions.sort((a, b) => { for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0); return 0 })
    return versions.at(-1)?.join('.')
  } catch {
    return undefined
  }
}

function build() {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'flora-prebuild-'))
  try {
    for (const f of SOURCES) copyFileSync(path.join(NATIVE_DIR, f), path.join(tmp, f))
    const started = Date.now()
    const res = runNodeGyp(tmp, { verbose: false })
    if (res.error !== undefined) fail(`could not run node-gyp: ${res.error.message}`)
    if (res.status !== 0) fail(`node-gyp failed (exit ${res.status}):\n  ${gypErrors(res).join('\n  ')}`)
    const built = path.join(tmp, 'build', 'Release', 'flora_kernels.node')
    execFileSync('strip', ['--strip-unneeded', built])
    const addon = createRequire(import.meta.url)(built)
    const missing = REQUIRED_EXPORTS.filter((name) => typeof addon[name] !== 'function')
    if (missing.length > 0) fail(`the built addon lacks ${missing.join(', ')}`)
    const bytes = readFileSync(built)
    const compiler = execFileSync(process.env.CXX ?? 'c++', ['--version'], { encoding: 'utf8' }).split('\n')[0]
    return { bytes, ms: Date.now() - started, compiler, glibc: symbolFloor(built, 'GLIBC'), glibcxx: symbolFloor(built, 'GLIBCXX'), isa: addon.info().isa }
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

const out = prebuiltPath()
const b = build()
const info = {
  file: path.basename(out),
  platform: process.platform,
  arch: process.arch,
  sha256: sha256(b.bytes),
  bytes: b.bytes.length,
  sources: { files: SOURCES.map((f) => `native/${f}`), sha256: sourcesHash() },
  compiler: b.compiler,
  glibcFloor: b.glibc ?? null,
  libstdcxxFloor: b.glibcxx != null ? `GLIBCXX_${b.glibcxx}` : null,
  nodeApi: true,
}
if (check) {
  if (!existsSync(out)) fail(`${path.relative(ROOT, out)} does not exist: run without --check first`)
  const committed = sha256(readFileSync(out))
  if (committed !== info.sha256) fail(`not reproducible: the rebuilt binary is ${info.sha256}, the committed one ${committed}`)
  console.log(`prebuild-native: reproducible: ${path.relative(ROOT, out)} rebuilt to the same ${info.bytes} bytes (sha256 ${info.sha256.slice(0, 16)}) in ${(b.ms / 1000).toFixed(1)} s`)
} else {
  mkdirSync(path.dirname(out), { recursive: true })
  writeFileSync(out, b.bytes)
  writeFileSync(path.join(path.dirname(out), 'BUILD.json'), `${JSON.stringify(info, null, 2)}\n`)
  console.log(`prebuild-native: wrote ${path.relative(ROOT, out)} (${info.bytes} bytes, sha256 ${info.sha256.slice(0, 16)}, glibc >= ${info.glibcFloor}, ${info.libstdcxxFloor ?? 'no libstdc++'}, ${b.compiler}) in ${(b.ms / 1000).toFixed(1)} s`)
}
