/**
 * The prebuilt native kernels shipped in the package (native/prebuilds, made by
 * `npm run native:prebuild`): linux-x64 ships one, it was built from the sources in the tree
 * (a changed flora_kernels.cc without a rebuilt prebuild fails here), its bytes are the ones
 * BUILD.json records, it needs only the C and C++ runtimes, and it computes a product right.
 */
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { NativeKernels } from '../../src/model/native.js'
import { describeBackend } from '../../src/model/backend.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const DIR = path.join(ROOT, 'native', 'prebuilds', `${process.platform}-${process.arch}`)
const BINARY = path.join(DIR, 'flora_kernels.napi.node')
const SOURCES = ['binding.gyp', 'flora_kernels.cc']

interface BuildInfo {
  sha256: string
  bytes: number
  sources: { sha256: string }
  glibcFloor: string | null
}

function sourcesHash(): string {
  const h = createHash('sha256')
  for (const f of SOURCES) h.update(`${f}\0`).update(readFileSync(path.join(ROOT, 'native', f)))
  return h.digest('hex')
}

describe('prebuilt native kernels', () => {
  it('ship for linux-x64', () => {
    expect(existsSync(path.join(ROOT, 'native', 'prebuilds', 'linux-x64', 'flora_kernels.napi.node'))).toBe(true)
  })

  const here = existsSync(BINARY)
  it.runIf(here)('match the sources in the tree and the bytes BUILD.json records', () => {
    const info = JSON.parse(readFileSync(path.join(DIR, 'BUILD.json'), 'utf8')) as BuildInfo
    expect(info.sources.sha256, 'native/ changed since the prebuild: run `npm run native:prebuild`').toBe(sourcesHash())
    const bytes = readFileSync(BINARY)
    expect(bytes.length).toBe(info.bytes)
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(info.sha256)
  })

  it.runIf(here && process.platform === 'linux')('need only the C and C++ runtimes (versions as BUILD.json records)', () => {
    const deps = execFileSync('objdump', ['-p', BINARY], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.trim().startsWith('NEEDED'))
      .map((l) => l.trim().split(/\s+/)[1])
    expect(deps.filter((d) => !/^(libc|libm|ld-linux[-\w]*|libpthread|libdl|libstdc\+\+|libgcc_s)\.so/.test(d ?? ''))).toEqual([])
    const info = JSON.parse(readFileSync(path.join(DIR, 'BUILD.json'), 'utf8')) as BuildInfo & { libstdcxxFloor: string | null }
    const symbols = execFileSync('objdump', ['-T', BINARY], { encoding: 'utf8' })
    expect(symbols).toContain(`GLIBC_${info.glibcFloor}`)
    if (info.libstdcxxFloor != null) expect(symbols).toContain(info.libstdcxxFloor)
  })

  it.runIf(here)('load and compute a matrix product like the reference', () => {
    const nk = createRequire(import.meta.url)(BINARY) as NativeKernels
    const m = 7
    const n = 5
    const k = 9
    const a = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i + 1))
    const b = Float32Array.from({ length: k * n }, (_, i) => Math.cos(2 * i + 1))
    const c = new Float32Array(m * n)
    nk.gemm(a, b, c, 1, m, n, k, false, false, 0, 0, false)
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0
        for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j]
        expect(c[i * n + j]).toBeCloseTo(s, 5)
      }
    }
  })

  it('are named in the backend line when in use', () => {
    const sel = { backend: 'wasm' as const, tfBackend: 'wasm', skipped: [], patchedKernels: [] }
    expect(describeBackend({ ...sel, native: { isa: 'avx2-fma', threads: 2, prebuilt: true } })).toBe('wasm + native avx2-fma x2 threads (prebuilt)')
    expect(describeBackend({ ...sel, native: { isa: 'avx2-fma', threads: 1, prebuilt: false } })).toBe('wasm + native avx2-fma x1 thread')
  })
})
