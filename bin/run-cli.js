// Plain JS on purpose: imported by the bins only after check-node.js has run.
import { existsSync } from 'node:fs'

/**
 * Runs a CLI's `main(argv)`: the compiled module when the package is built (npm run build),
 * else the TypeScript source through tsx. FLORA_FROM_SOURCE=1 forces the source (the swarm
 * script sets it when it runs from source, so a stale dist/ is never mixed in).
 * @param {string} name program name for error messages
 * @param {string} modulePath path under src/ without extension, e.g. 'node/cli'
 */
export async function runCli(name, modulePath) {
  const built = new URL(`../dist/src/${modulePath}.js`, import.meta.url)
  let cli
  if (process.env.FLORA_FROM_SOURCE !== '1' && existsSync(built)) {
    cli = await import(built.href)
  } else {
    let tsx
    try {
      tsx = await import('tsx/esm/api')
    } catch {
      process.stderr.write(`${name}: the compiled package (dist/) is missing and tsx, which runs the TypeScript sources, is not installed: run \`npm run build\` (or \`npm ci\` in a clone of the repository)\n`)
      process.exit(1)
    }
    tsx.register()
    cli = await import(new URL(`../src/${modulePath}.ts`, import.meta.url).href)
  }
  try {
    process.exit(await cli.main(process.argv))
  } catch (err) {
    process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  }
}
