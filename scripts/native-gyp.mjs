/**
 * Running node-gyp on native/ (shared by build-native.mjs, which npm runs at install, and
 * prebuild-native.mjs, which makes the prebuilt binaries shipped in the package).
 */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const NATIVE_DIR = path.join(ROOT, 'native')
/** The functions a usable addon exports (kept in step with src/model/native.ts). */
export const REQUIRED_EXPORTS = [
  'gemm', 'attention', 'attentionGrad', 'rmsNorm', 'rmsNormGrad', 'rope', 'swiglu', 'swigluGrad',
  'crossEntropy', 'binary', 'transpose0213', 'setThreads', 'setIsa', 'info',
]

/** node-gyp: npm's copy (npm names it in npm_config_node_gyp for lifecycle scripts), or the one next to this node, or on PATH. */
export function nodeGypCommand() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  ].filter((p) => p !== undefined && p !== '' && existsSync(p))
  return candidates.length > 0 ? [process.execPath, candidates[0]] : ['node-gyp']
}

/**
 * Local Node headers. The addon uses only Node-API, whose ABI is stable across Node
 * versions, so any will do; without them node-gyp downloads the headers of this node.
 */
export function localNodeDir() {
  return (
    process.env.npm_config_nodedir ||
    [path.join(path.dirname(process.execPath), '..'), '/usr', '/usr/local'].find((d) => existsSync(path.join(d, 'include', 'node', 'node_api.h')))
  )
}

/** `node-gyp rebuild` in `dir` (a directory holding binding.gyp); returns spawnSync's result. */
export function runNodeGyp(dir, { verbose = false, env = process.env } = {}) {
  const cmd = nodeGypCommand()
  const nodedir = localNodeDir()
  const args = [...cmd.slice(1), 'rebuild', '--directory', dir, ...(nodedir ? [`--nodedir=${nodedir}`] : [])]
  return spawnSync(cmd[0], args, { cwd: ROOT, encoding: 'utf8', stdio: verbose ? 'inherit' : 'pipe', env })
}

/** The lines of node-gyp's output that say why it failed. */
export function gypErrors(res) {
  return `${res.stdout ?? ''}\n${res.stderr ?? ''}`.split('\n').filter((l) => /error|not found|ERR!/i.test(l)).slice(0, 6)
}

/** The prebuilt binary for this platform, if the package ships one: native/prebuilds/<platform>-<arch>/flora_kernels.napi.node. */
export function prebuiltPath(platform = process.platform, arch = process.arch) {
  return path.join(NATIVE_DIR, 'prebuilds', `${platform}-${arch}`, 'flora_kernels.napi.node')
}

/** The addon's sources (native/): what a prebuilt binary is built from. */
export const SOURCES = ['binding.gyp', 'flora_kernels.cc']

/** sha256 over the addon's sources, in order (BUILD.json records it; a test compares it with the tree). */
export function sourcesHash(dir = NATIVE_DIR) {
  const h = createHash('sha256')
  for (const f of SOURCES) h.update(`${f}\0`).update(readFileSync(path.join(dir, f)))
  return h.digest('hex')
}
