/**
 * Opening a model for training: the one place that does it, for `flora train`, the peer's
 * model trainer (src/node/model-trainer.ts) and the evaluation harness (src/eval).
 *
 * In order, cheapest check first: the directory and its config.json and tokenizer.json
 * exist (with a hint when it is the bundled model and it has not been built); the tfjs
 * backend is chosen (backend.ts; `auto` falls back and says why); the tokenizer is read;
 * the checkpoint is streamed into a LlamaModel tensor by tensor (checkpoint.ts loadModel),
 * with the compute path chosen once (kernels.ts ComputePath) and frozen weights where the
 * model options say; the tokenizer's vocabulary is checked against the config.
 *
 * A missing directory or file, an unavailable backend or a mismatched tokenizer is a
 * ModelOpenError with the flag in its message (`--model DIR: ...`), which callers rethrow
 * as their own usage errors; a bad checkpoint keeps its own error type (checkpoint.ts).
 */
import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { BackendUnavailableError, type BackendPreference, type BackendSelection, selectBackend } from './backend.js'
import { defaultModelDir } from './bundled.js'
import { loadModel } from './checkpoint.js'
import { tokenizeExample } from './data/template.js'
import type { InstructionExample } from './data/types.js'
import type { ComputePath } from './kernels.js'
import type { LinearModuleKind, LlamaModel, LlamaModelOptions } from './llama.js'
import { TRAINING_RECIPE } from './recipe.js'
import { LlamaTokenizer } from './tokenizer.js'
import type { TrainingExample } from './trainer.js'

/** A model directory that cannot be opened for training, or options that do not fit it. */
export class ModelOpenError extends Error {
  override readonly name = 'ModelOpenError'
}

export interface OpenModelOptions {
  /** Default: TRAINING_RECIPE.backend ('auto', which falls back to the next backend and says why). */
  readonly backend?: BackendPreference
  /** Linear layers that take a LoRA (default: TRAINING_RECIPE.targets). */
  readonly targets?: readonly LinearModuleKind[]
  /** Where frozen weights live (LlamaModelOptions.frozenWeights; default 'auto'). */
  readonly frozenWeights?: LlamaModelOptions['frozenWeights']
  /** Default: the fastest the chosen backend offers. */
  readonly compute?: ComputePath
  /** Called once the backend is chosen, before the (possibly long) load: to show it. */
  readonly onBackend?: (backend: BackendSelection) => void
}

export interface OpenedModel {
  /** The model directory as given (the bundled model when none was). */
  readonly dir: string
  /** Whether it is the bundled model (models/flora-tiny). */
  readonly bundled: boolean
  readonly backend: BackendSelection
  readonly model: LlamaModel
  readonly tokenizer: LlamaTokenizer
  /** sha256 (hex) of tokenizer.json's bytes: part of a swarm's base model identity. */
  readonly tokenizerSha256: string
  /**
   * The sequence length to train with: `requested` when the model's positions hold it (else
   * a ModelOpenError naming `flag`); by default the recipe's, capped at the model's
   * max_position_embeddings.
   */
  seqLen(requested: number | undefined, flag?: string): number
  /** Instruction examples as training examples (the prompt template, cut to seqLen tokens), and how many were cut. */
  tokenize(examples: readonly InstructionExample[], seqLen: number): { examples: TrainingExample[]; truncated: number }
}

async function kind(p: string): Promise<'file' | 'dir' | undefined> {
  try {
    const s = await stat(p)
    return s.isDirectory() ? 'dir' : s.isFile() ? 'file' : undefined
  } catch {
    return undefined
  }
}

/**
 * Check a model directory without loading anything: it exists and holds config.json and
 * tokenizer.json. Cheap, so commands call it before slower checks.
 */
export async function checkModelDir(dir: string | undefined): Promise<{ dir: string; bundled: boolean }> {
  const bundled = dir === undefined || path.resolve(dir) === path.resolve(defaultModelDir())
  const resolved = dir ?? defaultModelDir()
  const hint = bundled ? ' (the bundled base model has not been built yet: see scripts/pretrain.py, or pass --model DIR with a Llama-family checkpoint)' : ''
  if ((await kind(resolved)) !== 'dir') throw new ModelOpenError(`--model ${resolved}: no such directory${hint}`)
  for (const f of ['config.json', 'tokenizer.json']) {
    if ((await kind(path.join(resolved, f))) !== 'file') {
      const why = f === 'tokenizer.json' ? ' (training needs it to tokenize the data)' : ''
      throw new ModelOpenError(`--model ${resolved}: ${f} is missing${why}${hint}`)
    }
  }
  return { dir: resolved, bundled }
}

/** Open a model directory (default: the bundled model) for LoRA training; see the module comment. */
export async function openModelForTraining(dir: string | undefined, options: OpenModelOptions = {}): Promise<OpenedModel> {
  const checked = await checkModelDir(dir)
  const preference = options.backend ?? TRAINING_RECIPE.backend
  let backend: BackendSelection
  try {
    backend = await selectBackend(preference, { fallback: preference === 'auto' })
  } catch (err) {
    // One backend asked for by name: its reason alone (the flag already names it).
    const why = err instanceof BackendUnavailableError && err.skipped.length === 1 ? err.skipped[0].reason : (err as Error).message
    throw new ModelOpenError(`--backend ${preference}: ${why}`)
  }
  options.onBackend?.(backend)
  const tokenizerBytes = await readFile(path.join(checked.dir, 'tokenizer.json'))
  const tokenizer = await LlamaTokenizer.fromDir(checked.dir)
  // Checkpoint errors (CheckpointError, UnsupportedModelError, ...) keep their types; their messages name the file.
  const model = await loadModel(checked.dir, {
    targetModules: options.targets ?? TRAINING_RECIPE.targets,
    ...(options.frozenWeights !== undefined ? { frozenWeights: options.frozenWeights } : {}),
    ...(options.compute !== undefined ? { compute: options.compute } : {}),
  })
  const c = model.config
  if (tokenizer.vocabSize > c.vocabSize) {
    model.dispose()
    throw new ModelOpenError(`--model ${checked.dir}: the tokenizer has ${tokenizer.vocabSize} tokens but config.json says vocab_size ${c.vocabSize}`)
  }
  return {
    ...checked,
    backend,
    model,
    tokenizer,
    tokenizerSha256: createHash('sha256').update(tokenizerBytes).digest('hex'),
    seqLen(requested: number | undefined, flag = '--seq-len'): number {
      if (requested === undefined) return Math.min(TRAINING_RECIPE.seqLen, c.maxPositionEmbeddings)
      if (requested > c.maxPositionEmbeddings) throw new ModelOpenError(`${flag} ${requested} exceeds the model's max_position_embeddings (${c.maxPositionEmbeddings})`)
      return requested
    },
    tokenize(examples: readonly InstructionExample[], seqLen: number) {
      let truncated = 0
      const out = examples.map((ex): TrainingExample => {
        const t = tokenizeExample(ex, tokenizer, seqLen)
        if (t.truncated) truncated++
        return { inputIds: t.inputIds, promptLength: t.promptLength }
      })
      return { examples: out, truncated }
    },
  }
}
