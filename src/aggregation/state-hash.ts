/**
 * State hash: sha256 over a canonical byte layout of named float32 tensors, so peers can
 * prove they hold bit-identical weights (docs/MERGE.md).
 *
 * Layout (all integers u32 little-endian):
 *   magic   "flora-state-v1" (14 ASCII bytes)      domain separation / versioning
 *   count   number of tensors
 *   then, for each tensor in ascending byte order of its UTF-8 name:
 *     nameLen, name (UTF-8 bytes), ndim, dims[0..ndim), data (prod(dims) float32, little-endian)
 * Every field is length-prefixed, so no two different states share a byte string. The
 * input order never matters; renaming, reshaping or flipping any bit changes the hash.
 * Raw bits are hashed as they are: -0 and +0 differ, NaN payloads differ.
 */
import { createHash } from 'node:crypto'
import { endianness } from 'node:os'
import { StateHashInputError } from './errors.js'

export const STATE_HASH_MAGIC = 'flora-state-v1'

export interface NamedTensor {
  readonly name: string
  /** Dimensions (row-major); their product must equal data.length. [] is a scalar. */
  readonly shape: readonly number[]
  readonly data: Float32Array
}

const LITTLE_ENDIAN_HOST = endianness() === 'LE'

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n, 0)
  return b
}

/** Little-endian bytes of a float32 array (a view on little-endian hosts, a copy otherwise). */
function f32Bytes(data: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  const out = new Uint8Array(data.byteLength)
  const view = new DataView(out.buffer)
  for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i], true)
  return out
}

/** sha256 (lowercase hex) of the canonical layout above. */
export function stateHash(tensors: Iterable<NamedTensor>): string {
  return stateHashStreamed([...tensors].map((t) => ({ name: t.name, shape: t.shape, data: () => t.data })))
}

/** A tensor whose values are read only when the hash reaches it. */
export interface DeferredNamedTensor {
  readonly name: string
  readonly shape: readonly number[]
  /** Called once, in hash order; the array may be dropped (or reused) after. */
  readonly data: () => Float32Array
}

/**
 * stateHash over tensors read one at a time, in hash order: hashing a checkpoint this way
 * holds one tensor in memory, not the model. Same hash as stateHash of the same values.
 */
export function stateHashStreamed(tensors: Iterable<DeferredNamedTensor>): string {
  const entries = [...tensors].map((t) => ({ t, name: Buffer.from(t.name, 'utf8') }))
  entries.sort((a, b) => Buffer.compare(a.name, b.name))
  for (let i = 1; i < entries.length; i++) {
    if (Buffer.compare(entries[i].name, entries[i - 1].name) === 0) {
      throw new StateHashInputError(`duplicate tensor name '${entries[i].t.name}'`)
    }
  }
  const h = createHash('sha256')
  h.update(Buffer.from(STATE_HASH_MAGIC, 'ascii'))
  h.update(u32(entries.length))
  for (const { t, name } of entries) {
    let n = 1
    for (const d of t.shape) {
      if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new StateHashInputError(`tensor '${t.name}': bad dimension ${d}`)
      n *= d
    }
    const data = t.data()
    if (n !== data.length) {
      throw new StateHashInputError(`tensor '${t.name}': shape [${t.shape.join(', ')}] needs ${n} elements, data has ${data.length}`)
    }
    h.update(u32(name.length))
    h.update(name)
    h.update(u32(t.shape.length))
    for (const d of t.shape) h.update(u32(d))
    h.update(f32Bytes(data))
  }
  return h.digest('hex')
}
