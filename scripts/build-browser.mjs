#!/usr/bin/env node
/**
 * Bundles the model layer for a browser tab (src/model/browser.ts) with esbuild into
 * dist/browser/flora-model.js (an ES module, about 3 MB with tfjs and its WebGPU backend).
 * Node built-ins that modules on the way import for their file or addon code (never called
 * in a tab) resolve to a stub that throws if it is ever used.
 *
 *   npm run build:browser [-- --out FILE]
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const BROWSER_BUNDLE = path.join(ROOT, 'dist', 'browser', 'flora-model.js')

/** node:* imports become a module whose every export throws: the browser bundle must never call them. */
const nodeStub = {
  name: 'node-builtins-stub',
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: 'node-stub' }))
    build.onLoad({ filter: /.*/, namespace: 'node-stub' }, (args) => ({
      contents: `const fail = () => { throw new Error(${JSON.stringify(`${args.path} is not available in a browser tab`)}) }
export default new Proxy({}, { get: fail })
export const readFile = fail, writeFile = fail, createHash = fail, createRequire = fail, existsSync = fail,
  readdirSync = fail, statSync = fail, openSync = fail, readSync = fail, closeSync = fail, fstatSync = fail,
  fileURLToPath = fail, endianness = () => 'LE', availableParallelism = () => 1`,
      loader: 'js',
    }))
  },
}

/** Builds the bundle; returns the output file and its size in bytes. */
export async function buildBrowserBundle(outfile = BROWSER_BUNDLE) {
  const result = await esbuild.build({
    entryPoints: [path.join(ROOT, 'src', 'model', 'browser.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile,
    plugins: [nodeStub],
    metafile: true,
    logLevel: 'warning',
  })
  const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0)
  return { outfile, bytes }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--out')
  const t0 = performance.now()
  const { outfile, bytes } = await buildBrowserBundle(i >= 0 ? path.resolve(process.argv[i + 1]) : undefined)
  console.log(`build-browser: ${path.relative(process.cwd(), outfile)} (${(bytes / 2 ** 20).toFixed(1)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
}
