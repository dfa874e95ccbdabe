/** Public API of the model layer: backends, config, safetensors, Llama + LoRA, checkpoints, tokenizer, trainer, generation. */
export {
  BackendUnavailableError,
  describeBackend,
  installWasmKernelPatches,
  nativeKernelsActive,
  selectBackend,
  type BackendName,
  type BackendPreference,
  type BackendSelection,
  type SelectBackendOptions,
  type SkippedBackend,
} from './backend.js'
export {
  fromHfConfig,
  llamaConfig,
  ModelConfigError,
  parameterCount,
  toHfConfig,
  UnsupportedModelError,
  validateConfig,
  type LlamaConfig,
  type RopeScaling,
  type SupportedModelType,
} from './config.js'
export {
  decodeTensor,
  decodeTensorBytes,
  MAX_HEADER_BYTES,
  parseSafetensors,
  parseSafetensorsHeader,
  readSafetensorsFile,
  SafetensorsError,
  serializeSafetensors,
  writeSafetensorsFile,
  type DecodedTensor,
  type ParsedSafetensors,
  type SafetensorsDType,
  type SafetensorsHeader,
  type SerializeOptions,
  type TensorEntry,
  type TensorToWrite,
} from './safetensors.js'
export {
  AUTO_NATIVE_FROZEN_BYTES,
  DEFAULT_TARGET_MODULES,
  expectedWeightShapes,
  hasBias,
  LINEAR_MODULES,
  LlamaModel,
  ModelWeightError,
  moduleName,
  randomLlamaWeights,
  ropeInvFreq,
  ropeTableValues,
  tfjsBaseWeightBytes,
  WASM_BASE_WEIGHT_CEILING,
  type ForwardOptions,
  type LinearModuleKind,
  type LlamaModelOptions,
  type WeightMap,
  type WeightSource,
} from './llama.js'
export { canHoldFrozenWeights, losslessStorage, NativeFrozenWeight, type FrozenDtype, type HalfBits } from './frozen-weight.js'
export { readSafetensorsHeaderSync, StreamedWeights } from './streamed-weights.js'
export { BACKEND_DEAD } from './backend-dead.js'
export { frozenMatMul, LoraLinear, transpose2d, type DropoutFn, type LoraState } from './lora-layer.js'
export { availableComputePath, type ComputePath, fusedCausalSoftmax, fusedCrossEntropy, fusedKernelsAvailable, fusedRmsNorm, fusedRope, fusedSwiglu, resolveComputePath } from './kernels.js'
export { loadNativeKernels, type NativeFrozenHandle, type NativeKernels, type NativeLoadResult } from './native.js'
export {
  CheckpointError,
  loadModel,
  loadPeftAdapter,
  openCheckpoint,
  readCheckpoint,
  saveCheckpoint,
  saveModel,
  savePeftAdapter,
  type Checkpoint,
  type SaveCheckpointOptions,
  type SavePeftOptions,
} from './checkpoint.js'
export { LlamaTokenizer, TokenizerError, type DecodeOptions, type EncodeOptions, type SpecialTokenOverrides } from './tokenizer.js'
export {
  adapterGradients,
  evaluate,
  exampleTargets,
  explainWasmAbort,
  IGNORE_INDEX,
  learningRate,
  makeBatch,
  trainLora,
  TrainingAbortedError,
  TrainingError,
  type Batch,
  type EvalOptions,
  type EvalResult,
  type ModuleGradient,
  type LrSchedule,
  type StepInfo,
  type TrainingExample,
  type TrainOptions,
  type TrainResult,
} from './trainer.js'
export { argmax, generate, GenerationError, sampleTopP, type GenerateOptions } from './generate.js'
export { createProgressReporter, type ProgressOptions, type ProgressReporter } from './progress.js'
export { TRAINING_RECIPE } from './recipe.js'
export { checkModelDir, ModelOpenError, openModelForTraining, type OpenedModel, type OpenModelOptions } from './open-model.js'
