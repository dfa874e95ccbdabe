/**
 * Named errors of the adapter layer. Callers branch on `err.name` (or `instanceof`) and
 * then on `err.code`; messages are for humans and name the module/field at fault.
 */

/** Why a byte string was refused as an encoded adapter. */
export type AdapterDecodeErrorCode =
  | 'TRUNCATED' // input ends before the header or the declared data does
  | 'BAD_MAGIC' // first 4 bytes are not 'FLRA'
  | 'UNSUPPORTED_VERSION' // format version this reader does not know
  | 'BAD_DTYPE' // unknown dtype byte
  | 'BAD_HEADER' // other malformed header fields (reserved byte, zero modules, ...)
  | 'BAD_NAME' // module name empty, too long or outside the allowed charset
  | 'UNSORTED' // module names not in strictly increasing canonical order
  | 'DUPLICATE_MODULE' // same module name twice
  | 'UNKNOWN_MODULE' // module not in the declared base model (expectedShapes)
  | 'MISSING_MODULE' // requireAllModules and a declared module is absent
  | 'SHAPE_MISMATCH' // in/out features differ from the declared base model, or are zero
  | 'RANK_LIMIT' // rank 0 or above maxRank
  | 'BAD_ALPHA' // alpha not finite or not > 0
  | 'BAD_SCALING' // scaling is neither alpha/r nor alpha/sqrt(r)
  | 'SIZE_LIMIT' // input or declared size above maxBytes
  | 'NON_FINITE' // NaN or +-Inf in a tensor
  | 'TRAILING_BYTES' // bytes left over after the declared data

export interface AdapterDecodeErrorDetails {
  /** Module the error is about, when there is one. */
  readonly module?: string
  /** Header field or tensor ('loraA' / 'loraB') at fault, when there is one. */
  readonly field?: string
  /** Byte offset in the input where the problem was found, when known. */
  readonly offset?: number
}

/** Untrusted bytes that are not a valid encoded adapter. Never carries a partial adapter. */
export class AdapterDecodeError extends Error {
  override readonly name = 'AdapterDecodeError'
  readonly code: AdapterDecodeErrorCode
  readonly module: string | undefined
  readonly field: string | undefined
  readonly offset: number | undefined

  constructor(code: AdapterDecodeErrorCode, message: string, details: AdapterDecodeErrorDetails = {}) {
    super(`${code}: ${message}`)
    this.code = code
    this.module = details.module
    this.field = details.field
    this.offset = details.offset
  }
}

/** Why an in-memory adapter was refused (on encode, or by the validate helpers). */
export type InvalidAdapterErrorCode =
  | 'EMPTY' // no modules
  | 'BAD_NAME'
  | 'DUPLICATE_MODULE'
  | 'UNSORTED' // modules not in canonical order where that was required
  | 'UNKNOWN_MODULE'
  | 'MISSING_MODULE'
  | 'SHAPE_MISMATCH' // in/out not positive u32 integers, or differ from the declared shapes
  | 'BAD_RANK'
  | 'BAD_ALPHA'
  | 'BAD_SCALING'
  | 'BAD_TENSOR' // not a Float32Array, or wrong length for its shape
  | 'NON_FINITE'
  | 'SIZE_LIMIT' // encoding would exceed the maxBytes option
  | 'DTYPE_OVERFLOW' // a finite f32 value overflows the chosen wire dtype (e.g. |x| > 65504 in f16)

/** An in-memory AdapterSet that breaks the contract of types.ts. */
export class InvalidAdapterError extends Error {
  override readonly name = 'InvalidAdapterError'
  readonly code: InvalidAdapterErrorCode
  readonly module: string | undefined

  constructor(code: InvalidAdapterErrorCode, message: string, module?: string) {
    super(`${code}: ${message}`)
    this.code = code
    this.module = module
  }
}

/** Bad arguments to the layer's functions (rank, alpha, shapes, targets, options). */
export class LoraConfigError extends Error {
  override readonly name = 'LoraConfigError'
  /** The argument or option at fault. */
  readonly field: string

  constructor(field: string, message: string) {
    super(`${field}: ${message}`)
    this.field = field
  }
}
