#!/usr/bin/env node
// Plain JS on purpose: the Node version guard must run before anything that needs Node 22.
import './check-node.js'
import { existsSync } from 'node:fs'

// The compiled CLI when the package is built (npm run build), else the TypeScript source
// through tsx. FLORA_FROM_SOURCE=1 forces the source (so a stale dist/ is never mixed in).
const built = new URL('../dist/src/model/cli.js', import.meta.url)
let cli
if (process.env.FLORA_FROM_SOURCE !== '1' && existsSync(built)) {
  cli = await import(built.href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  cli = await import(new URL('../src/model/cli.ts', import.meta.url).href)
}
try {
  const code = await cli.main(process.argv)
  process.exit(code)
} catch (err) {
  process.stderr.write(`flora: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
}
