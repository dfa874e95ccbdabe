/**
 * HF safetensors reader and writer.
 *
 *   [u64 little-endian N][N bytes of UTF-8 JSON header][data]
 *
 * The header maps tensor names to {dtype, shape, data_offsets: [begin, end)} relative to
 * the data section, plus an optional "__metadata__" string map. The reader is strict:
 * anything but a well-formed file whose tensors tile the data section exactly (sorted by
 * offset: no gap, no overlap, no trailing bytes) is refused with SafetensorsError naming
 * the tensor. F32, F16, BF16 (and F64) decode to Float32Array; other dtypes are refused.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { bf16BitsToF32Bits, f16ToF32Table, f32BitsToBf16Bits, f32BitsToF16Bits } from '../lora/float16.js'

export type SafetensorsDType = 'F32' | 'F16' | 'BF16'

/** All dtypes of the format; only F64/F32/F16/BF16 can be decoded here. */
const KNOWN_DTYPES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
}

/** Largest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000

export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError'
  /** The tensor at fault, when the problem is about one tensor. */
  readonly tensor: string | undefined
  /** The file, when reading one from disk. */
  readonly file: string | undefined
  /** The message without the file and tensor prefixes. */
  readonly detail: string

  constructor(detail: string, tensor?: string, file?: string) {
    const where = `${file !== undefined ? `${file}: ` : ''}${tensor !== undefined ? `tensor '${tensor}': ` : ''}`
    super(where + detail)
    this.tensor = tensor
    this.file = file
    this.detail = detail
  }
}

export interface TensorEntry {
  readonly dtype: string
  readonly shape: readonly number[]
  /** [begin, end) byte offsets relative to the data section. */
  readonly dataOffsets: readonly [number, number]
}

export interface SafetensorsHeader {
  readonly tensors: ReadonlyMap<string, TensorEntry>
  readonly metadata: Readonly<Record<string, string>>
  /** Byte offset of the data section in the file: 8 + header length. */
  readonly dataStart: number
}

export interface DecodedTensor {
  /** dtype as stored in the file. */
  readonly dtype: string
  readonly shape: readonly number[]
  readonly data: Float32Array
}

export interface TensorToWrite {
  readonly shape: readonly number[]
  readonly data: Float32Array
}

/** Parse and validate the header against the file's total size. */
export function parseSafetensorsHeader(bytes: Uint8Array, fileLength: number = bytes.length): SafetensorsHeader {
  if (bytes.length < 8) throw new SafetensorsError(`file is ${bytes.length} bytes, shorter than the 8-byte header length`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const n64 = view.getBigUint64(0, true)
  if (n64 === 0n) throw new SafetensorsError('header length is 0')
  if (n64 > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(`header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit`)
  const n = Number(n64)
  if (8 + n > fileLength || 8 + n > bytes.length) throw new SafetensorsError(`header length ${n} runs past the end of the ${fileLength}-byte file`)
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n))
  } catch {
    throw new SafetensorsError('header is not valid UTF-8')
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new SafetensorsError(`header is not valid JSON: ${(err as Error).message}`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new SafetensorsError('header must be a JSON object')
  }
  const dataStart = 8 + n
  const dataLen = fileLength - dataStart
  const tensors = new Map<string, TensorEntry>()
  let metadata: Record<string, string> = {}
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value)
      continue
    }
    tensors.set(name, parseEntry(name, value, dataLen))
  }
  // The tensors must tile [0, dataLen) exactly once sorted by offset.
  const sorted = [...tensors.entries()].sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1])
  let cursor = 0
  for (const [name, e] of sorted) {
    const [begin, end] = e.dataOffsets
    if (begin > cursor) throw new SafetensorsError(`gap in the data section: bytes [${cursor}, ${begin}) belong to no tensor`, name)
    if (begin < cursor) throw new SafetensorsError(`data [${begin}, ${end}) overlaps the previous tensor (which ends at ${cursor})`, name)
    cursor = end
  }
  if (cursor !== dataLen) {
    throw new SafetensorsError(`data section is ${dataLen} bytes but the tensors cover ${cursor} (trailing or missing bytes)`)
  }
  return { tensors, metadata, dataStart }
}

function parseMetadata(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SafetensorsError('__metadata__ must be an object of strings')
  }
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new SafetensorsError(`__metadata__ value for '${k}' is not a string`)
    out[k] = v
  }
  return out
}

function parseEntry(name: string, value: unknown, dataLen: number): TensorEntry {
  if (name.length === 0) throw new SafetensorsError('empty tensor name')
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SafetensorsError('header entry must be an object with dtype, shape and data_offsets', name)
  }
  const v = value as Record<string, unknown>
  for (const key of Object.keys(v)) {
    if (key !== 'dtype' && key !== 'shape' && key !== 'data_offsets') throw new SafetensorsError(`unknown field '${key}'`, name)
  }
  const dtype = v.dtype
  if (typeof dtype !== 'string' || !(dtype in KNOWN_DTYPES)) throw new SafetensorsError(`unknown dtype ${JSON.stringify(dtype)}`, name)
  const shape = v.shape
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`, name)
  }
  const offsets = v.data_offsets
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    throw new SafetensorsError(`data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`, name)
  }
  const [begin, end] = offsets as [number, number]
  if (end > dataLen) throw new SafetensorsError(`data_offsets [${begin}, ${end}) run past the ${dataLen}-byte data section`, name)
  let elements = 1
  for (const d of shape as number[]) elements *= d
  const expected = elements * KNOWN_DTYPES[dtype]
  if (!Number.isSafeInteger(expected) || end - begin !== expected) {
    throw new SafetensorsError(`holds ${end - begin} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${expected}`, name)
  }
  return { dtype, shape: shape as number[], dataOffsets: [begin, end] }
}

/** Decode one validated tensor of `bytes` (the whole file) to float32. */
export function decodeTensor(bytes: Uint8Array, header: SafetensorsHeader, name: string): DecodedTensor {
  const e = header.tensors.get(name)
  if (e === undefined) throw new SafetensorsError('not in the file', name)
  const start = header.dataStart + e.dataOffsets[0]
  return { dtype: e.dtype, shape: e.shape, data: decodeTensorBytes(e, name, bytes.subarray(start, start + e.dataOffsets[1] - e.dataOffsets[0])) }
}

/** Decodes one tensor's own bytes (as stored: `entry.dtype`, little-endian) to float32. */
export function decodeTensorBytes(e: TensorEntry, name: string, bytes: Uint8Array): Float32Array {
  const start = 0
  const len = e.dataOffsets[1] - e.dataOffsets[0]
  if (bytes.length !== len) throw new SafetensorsError(`${bytes.length} bytes given, the entry holds ${len}`, name)
  const view = new DataView(bytes.buffer, bytes.byteOffset, len)
  let data: Float32Array
  switch (e.dtype) {
    case 'F32': {
      data = new Float32Array(len / 4)
      if (LITTLE_ENDIAN) new Uint8Array(data.buffer).set(bytes.subarray(start, start + len))
      else for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(i * 4, true)
      break
    }
    case 'F64': {
      data = new Float32Array(len / 8)
      for (let i = 0; i < data.length; i++) data[i] = view.getFloat64(i * 8, true)
      break
    }
    case 'F16': {
      const table = f16ToF32Table()
      data = new Float32Array(len / 2)
      for (let i = 0; i < data.length; i++) data[i] = table[view.getUint16(i * 2, true)]
      break
    }
    case 'BF16': {
      data = new Float32Array(len / 2)
      const bits = new Uint32Array(data.buffer)
      for (let i = 0; i < data.length; i++) bits[i] = bf16BitsToF32Bits(view.getUint16(i * 2, true))
      break
    }
    default:
      throw new SafetensorsError(`dtype ${e.dtype} cannot be decoded to float32 (supported: F32, F16, BF16, F64)`, name)
  }
  return data
}

/** Whether this machine stores numbers little-endian, as safetensors files do. */
export const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

export interface ParsedSafetensors {
  readonly tensors: Map<string, DecodedTensor>
  readonly metadata: Readonly<Record<string, string>>
}

/** Parse a whole file: every tensor decoded to float32. */
export function parseSafetensors(bytes: Uint8Array): ParsedSafetensors {
  const header = parseSafetensorsHeader(bytes)
  const tensors = new Map<string, DecodedTensor>()
  for (const name of header.tensors.keys()) tensors.set(name, decodeTensor(bytes, header, name))
  return { tensors, metadata: header.metadata }
}

export interface SerializeOptions {
  /** Storage dtype of every tensor (default F32). */
  readonly dtype?: SafetensorsDType
  readonly metadata?: Readonly<Record<string, string>>
}

/** Serialize tensors (written in name order) to safetensors bytes. */
export function serializeSafetensors(
  tensors: ReadonlyMap<string, TensorToWrite> | Readonly<Record<string, TensorToWrite>>,
  options: SerializeOptions = {},
): Uint8Array {
  const dtype = options.dtype ?? 'F32'
  const width = dtype === 'F32' ? 4 : 2
  const all: [string, TensorToWrite][] = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)
  const entries = all.sort((a, b) =>
    a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0,
  )
  const header: Record<string, unknown> = {}
  if (options.metadata !== undefined) header.__metadata__ = { ...options.metadata }
  let offset = 0
  for (const [name, t] of entries) {
    if (name === '__metadata__' || name.length === 0) throw new SafetensorsError('reserved or empty tensor name', name)
    const elements = t.shape.reduce((a, d) => a * d, 1)
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new SafetensorsError(`bad shape [${t.shape.join(', ')}]`, name)
    if (t.data.length !== elements) {
      throw new SafetensorsError(`has ${t.data.length} values but shape [${t.shape.join(', ')}] needs ${elements}`, name)
    }
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + elements * width] }
    offset += elements * width
  }
  let headerBytes = new TextEncoder().encode(JSON.stringify(header))
  // Pad the header with spaces so the data section starts 8-byte aligned, as HF does.
  const padded = Math.ceil(headerBytes.length / 8) * 8
  if (padded !== headerBytes.length) {
    const p = new Uint8Array(padded).fill(0x20)
    p.set(headerBytes)
    headerBytes = p
  }
  const out = new Uint8Array(8 + headerBytes.length + offset)
  const view = new DataView(out.buffer)
  view.setBigUint64(0, BigInt(headerBytes.length), true)
  out.set(headerBytes, 8)
  let pos = 8 + headerBytes.length
  const f32 = new Float32Array(1)
  const u32 = new Uint32Array(f32.buffer)
  for (const [, t] of entries) {
    const d = t.data
    if (dtype === 'F32') {
      if (LITTLE_ENDIAN) out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), pos)
      else for (let i = 0; i < d.length; i++) view.setFloat32(pos + i * 4, d[i], true)
    } else {
      const narrow = dtype === 'F16' ? f32BitsToF16Bits : f32BitsToBf16Bits
      for (let i = 0; i < d.length; i++) {
        f32[0] = d[i]
        view.setUint16(pos + i * 2, narrow(u32[0]), true)
      }
    }
    pos += d.length * width
  }
  return out
}

export async function readSafetensorsFile(path: string): Promise<ParsedSafetensors> {
  const bytes = await readFile(path)
  try {
    return parseSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength))
  } catch (err) {
    if (err instanceof SafetensorsError) throw new SafetensorsError(err.detail, err.tensor, path)
    throw err
  }
}

export async function writeSafetensorsFile(
  path: string,
  tensors: ReadonlyMap<string, TensorToWrite> | Readonly<Record<string, TensorToWrite>>,
  options: SerializeOptions = {},
): Promise<void> {
  await writeFile(path, serializeSafetensors(tensors, options))
}
