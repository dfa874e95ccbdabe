/**
 * A head snapshot: one committed state (target weights and global adapter) as a
 * safetensors file, so it can be written to disk atomically, served in chunks to a peer
 * that syncs, and opened by any safetensors reader.
 *
 *   weights/<module>            F32 [out, in]
 *   global/<module>/<k>/loraA   F32 [r, in]
 *   global/<module>/<k>/loraB   F32 [out, r]
 *   metadata: format "flora-head/1", swarmId, round, stateHash,
 *             global: JSON {module: [coef, ...]} (float64 coefficients; JSON keeps them exact)
 *
 * Parsing never trusts the file: every module must have its configured shape and the
 * state hash is recomputed from the tensors and compared with the one expected.
 */
import type { LowRankTerm, ModuleTerms } from '../aggregation/types.js'
import type { ModuleShape } from '../lora/types.js'
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from '../model/safetensors.js'
import { computeStateHash } from './state-hash.js'
import type { SwarmState } from './state.js'

export const SNAPSHOT_FORMAT = 'flora-head/1'

export class SnapshotError extends Error {
  override readonly name = 'SnapshotError'
}

export function serializeSnapshot(state: SwarmState, swarmId: string): Uint8Array {
  const tensors = new Map<string, TensorToWrite>()
  const coefs: Record<string, number[]> = {}
  for (const [name, w] of state.weights) {
    // Shapes are implied by the swarm config; store them flat-checked on load.
    tensors.set(`weights/${name}`, { shape: [w.length], data: w })
  }
  for (const [name, terms] of state.global) {
    coefs[name] = terms.map((t) => t.coef)
    terms.forEach((t, k) => {
      tensors.set(`global/${name}/${k}/loraA`, { shape: [t.rank, t.loraA.length / t.rank], data: t.loraA })
      tensors.set(`global/${name}/${k}/loraB`, { shape: [t.loraB.length / t.rank, t.rank], data: t.loraB })
    })
  }
  return serializeSafetensors(tensors, {
    metadata: { format: SNAPSHOT_FORMAT, swarmId, round: String(state.round), stateHash: state.hash, global: JSON.stringify(coefs) },
  })
}

/** The state in a snapshot; throws SnapshotError unless it is well-formed, of this swarm, and hashes to `expectHash` (when given). */
export function parseSnapshot(bytes: Uint8Array, shapes: readonly ModuleShape[], expect: { swarmId: string; round?: number; stateHash?: string }): SwarmState {
  let parsed
  try {
    parsed = parseSafetensors(bytes)
  } catch (err) {
    throw new SnapshotError(`not a head snapshot: ${(err as Error).message}`)
  }
  const md = parsed.metadata
  if (md.format !== SNAPSHOT_FORMAT) throw new SnapshotError(`not a head snapshot (format ${JSON.stringify(md.format)}, expected ${SNAPSHOT_FORMAT})`)
  if (md.swarmId !== expect.swarmId) throw new SnapshotError(`snapshot of swarm ${String(md.swarmId).slice(0, 12)}, this peer is in swarm ${expect.swarmId.slice(0, 12)}`)
  const round = Number(md.round)
  if (!Number.isSafeInteger(round) || round < 0) throw new SnapshotError(`snapshot round ${JSON.stringify(md.round)} is not a round number`)
  if (expect.round !== undefined && round !== expect.round) throw new SnapshotError(`snapshot is of round ${round}, expected ${expect.round}`)
  const weights = new Map<string, Float32Array>()
  for (const s of [...shapes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const t = parsed.tensors.get(`weights/${s.name}`)
    if (t == null) throw new SnapshotError(`snapshot lacks module ${s.name}`)
    if (t.dtype !== 'F32' || t.data.length !== s.outFeatures * s.inFeatures) throw new SnapshotError(`snapshot module ${s.name} is not F32 [${s.outFeatures}, ${s.inFeatures}]`)
    weights.set(s.name, t.data)
  }
  let coefs: Record<string, unknown>
  try {
    coefs = JSON.parse(md.global ?? '{}') as Record<string, unknown>
  } catch {
    throw new SnapshotError('snapshot global adapter metadata is not JSON')
  }
  const byName = new Map(shapes.map((s) => [s.name, s]))
  const global = new Map<string, LowRankTerm[]>()
  let globalTensors = 0
  for (const [name, list] of Object.entries(coefs)) {
    const shape = byName.get(name)
    if (shape == null || !Array.isArray(list)) throw new SnapshotError(`snapshot global adapter names unknown module ${name}`)
    const terms: LowRankTerm[] = []
    list.forEach((coef, k) => {
      const a = parsed.tensors.get(`global/${name}/${k}/loraA`)
      const b = parsed.tensors.get(`global/${name}/${k}/loraB`)
      if (typeof coef !== 'number' || !Number.isFinite(coef) || a == null || b == null || a.dtype !== 'F32' || b.dtype !== 'F32') {
        throw new SnapshotError(`snapshot global term ${name}/${k} is incomplete`)
      }
      const rank = a.shape[0]
      if (a.shape.length !== 2 || a.shape[1] !== shape.inFeatures || b.shape.length !== 2 || b.shape[0] !== shape.outFeatures || b.shape[1] !== rank || rank < 1) {
        throw new SnapshotError(`snapshot global term ${name}/${k} has the wrong shape`)
      }
      terms.push({ coef, rank, loraA: a.data, loraB: b.data })
      globalTensors += 2
    })
    global.set(name, terms)
  }
  if (parsed.tensors.size !== weights.size + globalTensors) throw new SnapshotError('snapshot holds tensors this swarm does not have')
  const hash = computeStateHash(weights, global as ModuleTerms, shapes)
  if (hash !== md.stateHash) throw new SnapshotError(`snapshot tensors hash to ${hash.slice(0, 12)}, its metadata says ${String(md.stateHash).slice(0, 12)} (corrupt)`)
  if (expect.stateHash !== undefined && hash !== expect.stateHash) {
    throw new SnapshotError(`snapshot of round ${round} hashes to ${hash.slice(0, 12)}, the certified chain says ${expect.stateHash.slice(0, 12)}`)
  }
  return { round, weights, global, hash }
}
