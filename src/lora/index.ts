/** Public API of the adapter layer: types, PRNG, scaling, init, validation, wire format. */
export type { AdapterSet, LoraModule, ModuleShape, WireDType } from './types.js'
export {
  AdapterDecodeError,
  InvalidAdapterError,
  LoraConfigError,
  type AdapterDecodeErrorCode,
  type AdapterDecodeErrorDetails,
  type InvalidAdapterErrorCode,
} from './errors.js'
export { createPrng, deriveKey, prngFromKey, seedKey, type Prng, type SeedLike } from './prng.js'
export { isValidAlpha, isValidRank, loraScaling, scalingKind, type ScalingOptions } from './scaling.js'
export {
  bf16BitsToF32Bits,
  f16BitsToF32Bits,
  f16ToF32Table,
  f32Bits,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32FromBits,
  roundToBf16,
  roundToF16,
} from './float16.js'
export {
  compareModuleNames,
  indexShapes,
  isValidFeatureCount,
  isValidModuleName,
  matchesTarget,
  MAX_MODULE_NAME_BYTES,
  validateAdapter,
  validateAdapterAgainstShapes,
  validateModule,
  type ShapeCheckOptions,
  type ValidateAdapterOptions,
} from './validate.js'
export {
  adapterParamCount,
  cloneAdapter,
  findModule,
  INIT_STREAM_LABEL,
  initAdapter,
  sortAdapter,
  type InitAdapterOptions,
} from './init.js'
export {
  adapterDigest,
  decodeAdapter,
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_RANK,
  encodeAdapter,
  encodedAdapterSize,
  isWireDType,
  readAdapterHeader,
  WIRE_FIXED_HEADER_BYTES,
  WIRE_MAGIC,
  WIRE_MODULE_ENTRY_BYTES,
  WIRE_VERSION,
  wireDTypeBytes,
  type DecodeOptions,
  type EncodeOptions,
  type WireHeader,
  type WireModuleHeader,
} from './wire.js'
