/**
 * Canonical binary wire format for one peer's AdapterSet (format version 1).
 *
 * These exact bytes are hashed (sha256) and gossiped, so there is exactly one encoding per
 * (adapter, dtype): modules in canonical name order, little-endian, fixed field layout, no
 * padding, no optional fields. decode(bytes) succeeding implies encode(decoded, dtype) ===
 * bytes (the tests check this on fuzzed input).
 *
 *   offset  size  field
 *   0       4     magic 'FLRA' (0x46 0x4c 0x52 0x41)
 *   4       2     format version, u16 = 1
 *   6       1     dtype, u8: 0 = f32, 1 = f16 (IEEE binary16), 2 = bf16
 *   7       1     reserved, u8 = 0
 *   8       4     module count M, u32 >= 1
 *   12            module table, M entries, names strictly increasing:
 *                   nameLen u16 (1..256) | name (nameLen bytes, ASCII 0x21..0x7e)
 *                   | rank u32 | in u32 | out u32 | alpha f64 | scaling f64
 *                 (31 + nameLen bytes per entry)
 *   ...           tensor data, for each module in table order:
 *                   loraA [rank, in] row-major, then loraB [out, rank] row-major,
 *                   each element 4 (f32) or 2 (f16, bf16) bytes little-endian
 *   end           nothing may follow
 *
 * Values must be finite; alpha finite and > 0; scaling exactly alpha/r or alpha/sqrt(r)
 * (both IEEE-exact, so checked bit for bit). f16/bf16 are produced by round-to-nearest-even
 * narrowing of the f32 values (see float16.ts); decode always yields Float32Array.
 *
 * Decoding treats the bytes as hostile: every field is checked, all declared sizes are
 * checked against the limits before anything is allocated, and every failure is an
 * AdapterDecodeError with a code; no partially built adapter is ever returned.
 */
import { createHash } from 'node:crypto'
import { AdapterDecodeError, InvalidAdapterError, LoraConfigError } from './errors.js'
import { f16ToF32Table, f32BitsToBf16Bits, f32BitsToF16Bits } from './float16.js'
import { isValidAlpha, scalingKind } from './scaling.js'
import type { AdapterSet, LoraModule, ModuleShape, WireDType } from './types.js'
import { compareModuleNames, indexShapes, MAX_MODULE_NAME_BYTES, validateModule } from './validate.js'

export const WIRE_MAGIC = Uint8Array.of(0x46, 0x4c, 0x52, 0x41) // 'FLRA'
export const WIRE_VERSION = 1
export const WIRE_FIXED_HEADER_BYTES = 12
/** Module table entry size without the name: nameLen u16 + 3 x u32 + 2 x f64. */
export const WIRE_MODULE_ENTRY_BYTES = 2 + 12 + 16
export const DEFAULT_MAX_RANK = 256
export const DEFAULT_MAX_BYTES = 512 * 1024 * 1024

const DTYPE_CODE: Record<WireDType, number> = { f32: 0, f16: 1, bf16: 2 }
const DTYPE_BY_CODE: readonly WireDType[] = ['f32', 'f16', 'bf16']
const DTYPE_BYTES: Record<WireDType, number> = { f32: 4, f16: 2, bf16: 2 }

const HOST_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1

export function isWireDType(x: unknown): x is WireDType {
  return x === 'f32' || x === 'f16' || x === 'bf16'
}

export function wireDTypeBytes(dtype: WireDType): number {
  return DTYPE_BYTES[dtype]
}

// ---------------------------------------------------------------------------------------
// Encode

export interface EncodeOptions {
  /** Element type of the tensors on the wire (default 'f32', lossless). */
  readonly dtype?: WireDType
  /** Refuse to produce more bytes than this (default DEFAULT_MAX_BYTES, the decoders' default). */
  readonly maxBytes?: number
}

/** Exact encoded size in bytes (does not validate the adapter). */
export function encodedAdapterSize(set: AdapterSet, dtype: WireDType = 'f32'): number {
  const elem = DTYPE_BYTES[dtype]
  let n = WIRE_FIXED_HEADER_BYTES
  for (const m of set.modules) {
    n += WIRE_MODULE_ENTRY_BYTES + m.name.length + elem * m.rank * (m.inFeatures + m.outFeatures)
  }
  return n
}

/**
 * The largest encoding an adapter of these modules can have at rank `maxRank` (every
 * module present, at the largest rank): the payload cap a swarm derives from its config.
 */
export function maxEncodedAdapterSize(shapes: readonly ModuleShape[], maxRank: number, dtype: WireDType = 'f32'): number {
  const elem = DTYPE_BYTES[dtype]
  let n = WIRE_FIXED_HEADER_BYTES
  for (const m of shapes) n += WIRE_MODULE_ENTRY_BYTES + m.name.length + elem * maxRank * (m.inFeatures + m.outFeatures)
  return n
}

/**
 * Canonical encoding of an adapter. Modules are sorted by name here, so input order does
 * not matter. Throws InvalidAdapterError for an invalid adapter (see validateModule) or a
 * value that overflows the chosen dtype.
 */
export function encodeAdapter(set: AdapterSet, options: EncodeOptions = {}): Uint8Array {
  const dtype = options.dtype ?? 'f32'
  if (!isWireDType(dtype)) throw new LoraConfigError('dtype', `must be 'f32', 'f16' or 'bf16', got ${String(dtype)}`)
  const maxBytes = checkMaxBytes(options.maxBytes)
  if (set === null || typeof set !== 'object' || !Array.isArray(set.modules)) {
    throw new InvalidAdapterError('EMPTY', 'adapter must be an object with a modules array')
  }
  if (set.modules.length === 0) throw new InvalidAdapterError('EMPTY', 'adapter has no modules')
  if (set.modules.length > 0xffffffff) throw new InvalidAdapterError('SIZE_LIMIT', 'too many modules')
  for (const m of set.modules) validateModule(m)
  const modules = [...set.modules].sort((a, b) => compareModuleNames(a.name, b.name))
  for (let i = 1; i < modules.length; i++) {
    if (modules[i].name === modules[i - 1].name) {
      throw new InvalidAdapterError('DUPLICATE_MODULE', `module ${modules[i].name} appears twice`, modules[i].name)
    }
  }
  const total = encodedAdapterSize({ modules }, dtype)
  if (total > maxBytes) throw new InvalidAdapterError('SIZE_LIMIT', `encoding needs ${total} bytes, above maxBytes ${maxBytes}`)

  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  out.set(WIRE_MAGIC, 0)
  view.setUint16(4, WIRE_VERSION, true)
  view.setUint8(6, DTYPE_CODE[dtype])
  view.setUint8(7, 0)
  view.setUint32(8, modules.length, true)
  let o = WIRE_FIXED_HEADER_BYTES
  for (const m of modules) {
    view.setUint16(o, m.name.length, true)
    o += 2
    // Names are validated printable ASCII, so one char is one byte.
    for (let i = 0; i < m.name.length; i++) out[o + i] = m.name.charCodeAt(i)
    o += m.name.length
    view.setUint32(o, m.rank, true)
    view.setUint32(o + 4, m.inFeatures, true)
    view.setUint32(o + 8, m.outFeatures, true)
    view.setFloat64(o + 12, m.alpha, true)
    view.setFloat64(o + 20, m.scaling, true)
    o += 28
  }
  for (const m of modules) {
    o = writeTensor(out, view, o, m.loraA, dtype, m.name, 'loraA')
    o = writeTensor(out, view, o, m.loraB, dtype, m.name, 'loraB')
  }
  return out
}

function writeTensor(out: Uint8Array, view: DataView, o: number, t: Float32Array, dtype: WireDType, module: string, field: string): number {
  const n = t.length
  if (dtype === 'f32') {
    if (HOST_LITTLE_ENDIAN) {
      out.set(new Uint8Array(t.buffer, t.byteOffset, n * 4), o)
    } else {
      for (let i = 0; i < n; i++) view.setFloat32(o + 4 * i, t[i], true)
    }
    return o + 4 * n
  }
  const bits = new Uint32Array(t.buffer, t.byteOffset, n)
  const narrow = dtype === 'f16' ? f32BitsToF16Bits : f32BitsToBf16Bits
  const infMask = dtype === 'f16' ? 0x7c00 : 0x7f80
  for (let i = 0; i < n; i++) {
    const h = narrow(bits[i])
    // Inputs are finite (validated), so an all-ones exponent means the value overflowed.
    if ((h & infMask) === infMask) {
      throw new InvalidAdapterError('DTYPE_OVERFLOW', `module ${module}: ${field}[${i}] = ${t[i]} overflows ${dtype}`, module)
    }
    out[o] = h & 0xff
    out[o + 1] = h >>> 8
    o += 2
  }
  return o
}

// ---------------------------------------------------------------------------------------
// Decode

export interface DecodeOptions {
  /**
   * The declared base model. When given, a module not in it is UNKNOWN_MODULE and one whose
   * in/out features differ is SHAPE_MISMATCH.
   */
  readonly expectedShapes?: readonly ModuleShape[]
  /** Every module of expectedShapes must be present (MISSING_MODULE otherwise). Default false. */
  readonly requireAllModules?: boolean
  /** Largest accepted rank (default 256). */
  readonly maxRank?: number
  /** Largest accepted input / declared size in bytes (default 512 MiB). */
  readonly maxBytes?: number
  /** Accept only this dtype (BAD_DTYPE otherwise). Default: any. */
  readonly dtype?: WireDType
}

/** One module table entry as read from the wire. */
export interface WireModuleHeader {
  readonly name: string
  readonly rank: number
  readonly inFeatures: number
  readonly outFeatures: number
  readonly alpha: number
  readonly scaling: number
  readonly rslora: boolean
  /** Byte offset of this module's loraA data; loraB follows it. */
  readonly dataOffset: number
}

export interface WireHeader {
  readonly version: number
  readonly dtype: WireDType
  readonly modules: readonly WireModuleHeader[]
  /** Bytes of the fixed header plus module table (= offset of the tensor data). */
  readonly headerBytes: number
  /** Exact size of the whole encoding, equal to the input length. */
  readonly totalBytes: number
}

/**
 * Reads and fully checks the header and module table without touching the tensor data
 * (beyond requiring its exact length): cheap validation of a payload's metadata, e.g.
 * against a gossiped announcement, before paying for decoding.
 */
export function readAdapterHeader(bytes: Uint8Array, options: DecodeOptions = {}): WireHeader {
  if (!(bytes instanceof Uint8Array)) throw new LoraConfigError('bytes', 'must be a Uint8Array')
  const maxRank = options.maxRank ?? DEFAULT_MAX_RANK
  if (!Number.isInteger(maxRank) || maxRank < 1 || maxRank > 0xffffffff) throw new LoraConfigError('maxRank', `must be an integer in [1, 2^32-1], got ${maxRank}`)
  const maxBytes = checkMaxBytes(options.maxBytes)
  if (options.dtype !== undefined && !isWireDType(options.dtype)) throw new LoraConfigError('dtype', `must be 'f32', 'f16' or 'bf16', got ${String(options.dtype)}`)
  const expected = options.expectedShapes === undefined ? undefined : indexShapes(options.expectedShapes, 'expectedShapes')
  if (options.requireAllModules === true && expected === undefined) {
    throw new LoraConfigError('requireAllModules', 'needs expectedShapes')
  }

  const len = bytes.length
  if (len > maxBytes) fail('SIZE_LIMIT', `input is ${len} bytes, above maxBytes ${maxBytes}`, { offset: 0 })
  for (let i = 0; i < 4; i++) {
    if (i >= len) fail('TRUNCATED', `input ends at byte ${len}, inside the magic`, { offset: len })
    if (bytes[i] !== WIRE_MAGIC[i]) fail('BAD_MAGIC', `expected 'FLRA' at offset 0`, { offset: i, field: 'magic' })
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const need = (o: number, n: number, what: string, module?: string): void => {
    if (o + n > len) fail('TRUNCATED', `input ends at byte ${len}, inside ${what}${module === undefined ? '' : ` of module ${module}`}`, { offset: o, field: what, module })
  }
  need(4, 2, 'version')
  const version = view.getUint16(4, true)
  if (version !== WIRE_VERSION) fail('UNSUPPORTED_VERSION', `format version ${version}, this reader supports ${WIRE_VERSION}`, { offset: 4, field: 'version' })
  need(6, 1, 'dtype')
  const dtypeCode = bytes[6]
  const dtype = DTYPE_BY_CODE[dtypeCode]
  if (dtype === undefined) fail('BAD_DTYPE', `unknown dtype code ${dtypeCode}`, { offset: 6, field: 'dtype' })
  if (options.dtype !== undefined && dtype !== options.dtype) fail('BAD_DTYPE', `dtype ${dtype}, expected ${options.dtype}`, { offset: 6, field: 'dtype' })
  need(7, 1, 'reserved')
  if (bytes[7] !== 0) fail('BAD_HEADER', `reserved byte is ${bytes[7]}, must be 0`, { offset: 7, field: 'reserved' })
  need(8, 4, 'module count')
  const count = view.getUint32(8, true)
  if (count === 0) fail('BAD_HEADER', 'module count is 0', { offset: 8, field: 'moduleCount' })
  let o = WIRE_FIXED_HEADER_BYTES
  // Each entry needs at least 31 bytes: fail before looping over an absurd count.
  if (o + count * (WIRE_MODULE_ENTRY_BYTES + 1) > len) {
    fail('TRUNCATED', `module count ${count} needs at least ${count * (WIRE_MODULE_ENTRY_BYTES + 1)} table bytes, input has ${len - o}`, { offset: 8, field: 'moduleCount' })
  }

  const elem = DTYPE_BYTES[dtype]
  const entries: Array<Omit<WireModuleHeader, 'dataOffset'>> = []
  let dataBytes = 0
  let prev: string | undefined
  for (let k = 0; k < count; k++) {
    need(o, 2, 'name length', `#${k}`)
    const nameLen = view.getUint16(o, true)
    if (nameLen === 0 || nameLen > MAX_MODULE_NAME_BYTES) fail('BAD_NAME', `module #${k}: name length ${nameLen} outside 1..${MAX_MODULE_NAME_BYTES}`, { offset: o, field: 'nameLength' })
    o += 2
    need(o, nameLen, 'name', `#${k}`)
    let name = ''
    for (let i = 0; i < nameLen; i++) {
      const c = bytes[o + i]
      if (c < 0x21 || c > 0x7e) fail('BAD_NAME', `module #${k}: name byte ${i} is 0x${c.toString(16)}, allowed 0x21..0x7e`, { offset: o + i, field: 'name' })
      name += String.fromCharCode(c)
    }
    const nameOffset = o
    o += nameLen
    if (prev !== undefined) {
      const cmp = compareModuleNames(prev, name)
      if (cmp === 0) fail('DUPLICATE_MODULE', `module ${name} appears twice`, { module: name, offset: nameOffset, field: 'name' })
      if (cmp > 0) fail('UNSORTED', `module ${name} follows ${prev}: modules must be sorted by name`, { module: name, offset: nameOffset, field: 'name' })
    }
    prev = name
    need(o, 28, 'module header', name)
    const rank = view.getUint32(o, true)
    const inFeatures = view.getUint32(o + 4, true)
    const outFeatures = view.getUint32(o + 8, true)
    const alpha = view.getFloat64(o + 12, true)
    const scaling = view.getFloat64(o + 20, true)
    const d = { module: name }
    if (rank === 0 || rank > maxRank) fail('RANK_LIMIT', `module ${name}: rank ${rank} outside 1..${maxRank}`, { ...d, offset: o, field: 'rank' })
    if (inFeatures === 0 || outFeatures === 0) fail('SHAPE_MISMATCH', `module ${name}: zero features (${outFeatures}x${inFeatures}, out x in)`, { ...d, offset: o + 4, field: 'features' })
    if (expected !== undefined) {
      const s = expected.get(name)
      if (s === undefined) fail('UNKNOWN_MODULE', `module ${name} is not in the base model`, { ...d, offset: nameOffset, field: 'name' })
      if (s.inFeatures !== inFeatures || s.outFeatures !== outFeatures) {
        fail('SHAPE_MISMATCH', `module ${name}: adapter is ${outFeatures}x${inFeatures} (out x in), base model has ${s.outFeatures}x${s.inFeatures}`, { ...d, offset: o + 4, field: 'features' })
      }
    }
    if (!isValidAlpha(alpha)) fail('BAD_ALPHA', `module ${name}: alpha ${alpha} must be finite and > 0`, { ...d, offset: o + 12, field: 'alpha' })
    const kind = scalingKind(alpha, rank, scaling)
    if (kind === undefined) {
      fail('BAD_SCALING', `module ${name}: scaling ${scaling} is neither alpha/r = ${alpha / rank} nor alpha/sqrt(r) = ${alpha / Math.sqrt(rank)}`, { ...d, offset: o + 20, field: 'scaling' })
    }
    o += 28
    // Products of u32 fields may exceed 2^53 and lose precision, but then they exceed
    // maxBytes (<= 2^53 - 1) by far, which is all this comparison needs.
    dataBytes += elem * rank * (inFeatures + outFeatures)
    if (o + dataBytes > maxBytes) fail('SIZE_LIMIT', `declared size reaches ${o + dataBytes} bytes at module ${name}, above maxBytes ${maxBytes}`, { ...d, field: 'rank' })
    entries.push({ name, rank, inFeatures, outFeatures, alpha, scaling, rslora: kind === 'rslora' })
  }
  if (options.requireAllModules === true && expected !== undefined) {
    const present = new Set(entries.map((e) => e.name))
    for (const s of expected.values()) {
      if (!present.has(s.name)) fail('MISSING_MODULE', `module ${s.name} of the base model is missing`, { module: s.name })
    }
  }
  const headerBytes = o
  const totalBytes = headerBytes + dataBytes
  if (len < totalBytes) fail('TRUNCATED', `input is ${len} bytes, header declares ${totalBytes}`, { offset: len, field: 'data' })
  if (len > totalBytes) fail('TRAILING_BYTES', `${len - totalBytes} bytes after the declared end at ${totalBytes}`, { offset: totalBytes })

  let dataOffset = headerBytes
  const modules = entries.map((e): WireModuleHeader => {
    const m = { ...e, dataOffset }
    dataOffset += elem * e.rank * (e.inFeatures + e.outFeatures)
    return m
  })
  return { version, dtype, modules, headerBytes, totalBytes }
}

/**
 * Decodes and fully validates an encoded adapter (see the layout above). Throws
 * AdapterDecodeError (with a code) for anything that is not a canonical, valid encoding
 * within the limits; LoraConfigError for bad options.
 */
export function decodeAdapter(bytes: Uint8Array, options: DecodeOptions = {}): AdapterSet {
  const header = readAdapterHeader(bytes, options)
  const modules = header.modules.map((h): LoraModule => {
    const nA = h.rank * h.inFeatures
    const nB = h.outFeatures * h.rank
    const elem = DTYPE_BYTES[header.dtype]
    const loraA = readTensor(bytes, h.dataOffset, nA, header.dtype, h.name, 'loraA')
    const loraB = readTensor(bytes, h.dataOffset + elem * nA, nB, header.dtype, h.name, 'loraB')
    return { name: h.name, rank: h.rank, inFeatures: h.inFeatures, outFeatures: h.outFeatures, alpha: h.alpha, scaling: h.scaling, loraA, loraB }
  })
  return { modules }
}

function readTensor(bytes: Uint8Array, o: number, n: number, dtype: WireDType, module: string, field: string): Float32Array {
  const out = new Float32Array(n)
  if (dtype === 'f32') {
    if (HOST_LITTLE_ENDIAN) {
      new Uint8Array(out.buffer).set(bytes.subarray(o, o + 4 * n))
    } else {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(o + 4 * i, true)
    }
  } else if (dtype === 'f16') {
    const table = f16ToF32Table()
    for (let i = 0; i < n; i++) out[i] = table[bytes[o + 2 * i] | (bytes[o + 2 * i + 1] << 8)]
  } else {
    const bits = new Uint32Array(out.buffer)
    for (let i = 0; i < n; i++) bits[i] = ((bytes[o + 2 * i] | (bytes[o + 2 * i + 1] << 8)) << 16) >>> 0
  }
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(out[i])) {
      const elemBytes = DTYPE_BYTES[dtype]
      fail('NON_FINITE', `module ${module}: ${field}[${i}] is ${out[i]}`, { module, field, offset: o + elemBytes * i })
    }
  }
  return out
}

/** sha256 of the exact bytes, lowercase hex: the payload's content id. */
export function adapterDigest(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

function checkMaxBytes(maxBytes: number | undefined): number {
  const v = maxBytes ?? DEFAULT_MAX_BYTES
  if (!Number.isSafeInteger(v) || v < WIRE_FIXED_HEADER_BYTES) throw new LoraConfigError('maxBytes', `must be a safe integer >= ${WIRE_FIXED_HEADER_BYTES}, got ${v}`)
  return v
}

function fail(code: AdapterDecodeError['code'], message: string, details: { module?: string; field?: string; offset?: number } = {}): never {
  throw new AdapterDecodeError(code, message, details)
}
