import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The bundled base model: models/flora-tiny of this package (resolved from src/ or dist/src/). */
export function defaultModelDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const candidates = [path.resolve(here, '../../models/flora-tiny'), path.resolve(here, '../../../models/flora-tiny')]
  return candidates.find((c) => existsSync(path.join(c, 'tokenizer.json'))) ?? candidates[0]
}
