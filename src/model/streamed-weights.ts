/**
 * A checkpoint's weights read tensor by tensor, on demand: only the safetensors headers are
 * read up front (one file or the shards of model.safetensors.index.json), and `get(name)`
 * reads and decodes one tensor. The model copies each tensor where it lives (tfjs tensors
 * or the native addon) and drops it, so loading never holds the file and its tensors
 * twice: the peak is what the model keeps plus one tensor in flight.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import type { HalfBits } from './frozen-weight.js'
import { decodeTensorBytes, LITTLE_ENDIAN, parseSafetensorsHeader, SafetensorsError, type SafetensorsHeader } from './safetensors.js'

interface Located {
  readonly file: string
  readonly fd: number
  readonly header: SafetensorsHeader
}

/** Reads exactly `length` bytes at `position` (readSync may return fewer), into `into` when given (its first `length` bytes). */
function readExactly(fd: number, length: number, position: number, file: string, what: string, into?: Uint8Array): Uint8Array {
  const buf = into !== undefined ? into.subarray(0, length) : new Uint8Array(length)
  let done = 0
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done)
    if (n === 0) throw new SafetensorsError(`file ends before ${what} (${done} of ${length} bytes read)`, undefined, file)
    done += n
  }
  return buf
}

/** The header of a safetensors file open as `fd` (8-byte length, then JSON), checked against the file's size. */
export function readSafetensorsHeaderSync(fd: number, file: string): SafetensorsHeader {
  const size = fstatSync(fd).size
  if (size < 8) throw new SafetensorsError(`file is ${size} bytes, shorter than the 8-byte header length`, undefined, file)
  const prefix = readExactly(fd, 8, 0, file, 'the header length')
  const n = new DataView(prefix.buffer).getBigUint64(0, true)
  if (n > BigInt(size - 8)) throw new SafetensorsError(`header length ${n} runs past the end of the ${size}-byte file`, undefined, file)
  const bytes = new Uint8Array(8 + Number(n))
  bytes.set(prefix)
  bytes.set(readExactly(fd, Number(n), 8, file, 'the end of the header'), 8)
  try {
    return parseSafetensorsHeader(bytes, size)
  } catch (err) {
    if (err instanceof SafetensorsError) throw new SafetensorsError(err.detail, err.tensor, file)
    throw err
  }
}

export class StreamedWeights {
  readonly #where = new Map<string, Located>()
  readonly #fds: number[] = []
  /** One read buffer, reused: a load makes no garbage the size of the checkpoint. */
  #scratch = new Uint8Array(0)

  #read(w: Located, begin: number, end: number, name: string): Uint8Array {
    const length = end - begin
    if (this.#scratch.length < length) this.#scratch = new Uint8Array(length)
    return readExactly(w.fd, length, w.header.dataStart + begin, w.file, `tensor '${name}'`, this.#scratch)
  }

  /**
   * Opens `files` (name -> the tensors the index lists in it, or undefined for a single
   * file holding all) and reads their headers. Throws on a tensor in two files or one the
   * index lists but its shard lacks.
   */
  constructor(files: ReadonlyMap<string, ReadonlySet<string> | undefined>) {
    try {
      for (const [file, listed] of files) {
        let fd: number
        try {
          fd = openSync(file, 'r')
        } catch {
          throw new SafetensorsError('cannot read the file', undefined, file)
        }
        this.#fds.push(fd)
        const header = readSafetensorsHeaderSync(fd, file)
        for (const name of listed ?? header.tensors.keys()) {
          if (!header.tensors.has(name)) throw new SafetensorsError(`tensor '${name}' is listed in the index but not in this shard`, undefined, file)
        }
        for (const name of header.tensors.keys()) {
          if (this.#where.has(name)) throw new SafetensorsError(`tensor '${name}' appears in more than one shard`, undefined, file)
          this.#where.set(name, { file, fd, header })
        }
      }
    } catch (err) {
      this.close()
      throw err
    }
  }

  keys(): IterableIterator<string> {
    return this.#where.keys()
  }

  has(name: string): boolean {
    return this.#where.has(name)
  }

  /** Shape as the header states it (undefined: no such tensor). */
  shapeOf(name: string): readonly number[] | undefined {
    const w = this.#where.get(name)
    return w?.header.tensors.get(name)?.shape
  }

  /** The file a tensor is in. */
  fileOf(name: string): string | undefined {
    return this.#where.get(name)?.file
  }

  /** Reads and decodes one tensor to float32 (a fresh array; undefined: no such tensor). */
  get(name: string): Float32Array | undefined {
    const w = this.#where.get(name)
    if (w === undefined) return undefined
    const e = w.header.tensors.get(name)
    if (e === undefined) return undefined
    const [begin, end] = e.dataOffsets
    const bytes = this.#read(w, begin, end, name)
    try {
      return decodeTensorBytes(e, name, bytes)
    } catch (err) {
      if (err instanceof SafetensorsError) throw new SafetensorsError(err.detail, err.tensor, w.file)
      throw err
    }
  }

  /**
   * A BF16 or F16 tensor's bits as stored (undefined for another dtype or name): what the
   * native addon keeps, with no float32 copy on the way. The bits are a view of the read
   * buffer, valid until the next get/getHalf: copy them (the addon does).
   */
  getHalf(name: string): HalfBits | undefined {
    const w = this.#where.get(name)
    const e = w?.header.tensors.get(name)
    if (w === undefined || e === undefined || (e.dtype !== 'BF16' && e.dtype !== 'F16') || !LITTLE_ENDIAN) return undefined
    const [begin, end] = e.dataOffsets
    const bytes = this.#read(w, begin, end, name)
    return { dtype: e.dtype === 'BF16' ? 'bf16' : 'f16', bits: new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2) }
  }

  close(): void {
    for (const fd of this.#fds.splice(0)) closeSync(fd)
  }
}
