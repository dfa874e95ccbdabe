/** The data layer: instruction data sets, the prompt template, partitioners, pretraining text. */
export { DataFormatError, type InstructionExample, JsonlParseError, PartitionError } from './types.js'
export { formatAlpacaJsonl, type InstructionFormat, type JsonlReadOptions, parseInstructionJsonl, readInstructionJsonl } from './jsonl.js'
export { formatPrompt, RESPONSE_MARKER, targetMask, type TemplateOptions, type TextTokenizer, type TokenizedExample, tokenizeExample } from './template.js'
export {
  DEFAULT_EVAL_FRACTION,
  hashSplit,
  LEXNAMES,
  loadWordNet,
  type Synset,
  splitWordNet,
  type WordNet,
  type WordNetExample,
  type WordNetPos,
  type WordNetSplit,
  type WordNetTask,
  type WordNetTaskOptions,
  wordnetTask,
} from './wordnet.js'
export {
  assertExactCover,
  type ClientStats,
  type Partition,
  type PartitionSpec,
  partitionByCategory,
  partitionDirichlet,
  partitionExamples,
  partitionIid,
  partitionStats,
} from './partition.js'
export { buildPretrainText, DEFAULT_PRETRAIN_SEED, type PretrainTextOptions, pretrainEntries } from './pretrain-text.js'
