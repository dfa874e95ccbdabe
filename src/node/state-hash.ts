/**
 * Hash of the shared state, over src/aggregation's canonical named-tensor layout:
 *   weights/<module>              [out, in]   the target weights
 *   global/<module>/<k>/loraA     [r, in]     global adapter terms (strategies that keep one)
 *   global/<module>/<k>/loraB     [out, r]
 *   global/<module>/<k>/coef      [2]         the float64 coefficient's 8 bytes, as 2 float32 bit patterns
 * For FLoRA the global part is empty, so the hash is exactly that of the weights.
 */
import { stateHash, type NamedTensor } from '../aggregation/state-hash.js'
import type { ModuleTerms } from '../aggregation/types.js'
import type { ModuleShape } from '../lora/types.js'

export function computeStateHash(
  weights: ReadonlyMap<string, Float32Array>,
  global: ModuleTerms,
  shapes: readonly ModuleShape[],
): string {
  const byName = new Map(shapes.map((s) => [s.name, s]))
  const tensors: NamedTensor[] = []
  for (const [name, data] of weights) {
    const shape = byName.get(name)
    if (shape == null) throw new Error(`state hash: no shape for module ${name}`)
    tensors.push({ name: `weights/${name}`, shape: [shape.outFeatures, shape.inFeatures], data })
  }
  for (const [name, terms] of global) {
    terms.forEach((t, k) => {
      const inF = t.loraA.length / t.rank
      const out = t.loraB.length / t.rank
      tensors.push({ name: `global/${name}/${k}/loraA`, shape: [t.rank, inF], data: t.loraA })
      tensors.push({ name: `global/${name}/${k}/loraB`, shape: [out, t.rank], data: t.loraB })
      tensors.push({ name: `global/${name}/${k}/coef`, shape: [2], data: new Float32Array(new Float64Array([t.coef]).buffer) })
    })
  }
  return stateHash(tensors)
}
