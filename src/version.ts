/**
 * flora's version, as package.json says (read once, from the source tree or from the
 * installed package: this module sits in src/ or dist/src/).
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const PACKAGE_NAME = 'flora-p2p'

function readVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let up = 0; up < 4; up++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown }
      if (pkg.name === PACKAGE_NAME && typeof pkg.version === 'string') return pkg.version
    } catch {
      // no package.json here: look one level up
    }
    dir = dirname(dir)
  }
  throw new Error(`cannot find ${PACKAGE_NAME}'s package.json above ${fileURLToPath(import.meta.url)}`)
}

export const VERSION: string = readVersion()
