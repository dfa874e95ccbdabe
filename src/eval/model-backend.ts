/**
 * The bundled Llama and a task (WordNet definitions, or the skills suite) as a SimBackend.
 *
 * Data (`config.data`):
 *  - wordnet (default): `wordnetTask` (src/model/data/wordnet.ts): "Define the word X
 *    (noun)." -> gloss, category = lexicographer file, a fixed held-out split by synset hash.
 *  - skills: `skillsSuite` (src/model/data/skills.ts): questions about words and sums,
 *    category = task type (so the non-IID split gives each client a few task types), held
 *    out = the questions about held-out words and sums. Each held-out question is also
 *    scored by exact match, strictly, by teacher forcing (strictExactByTeacherForcing in
 *    src/model/exact-match.ts: one forward pass per accepted answer, no decoding loop;
 *    tests check it against greedy decoding); the reference answer's bit comes from the
 *    loss pass, so only the other accepted answers are forwarded again.
 * Examples are
 * tokenized once with the Alpaca-style template, loss on the response tokens only.
 * Training: `trainLora` (src/model/trainer.ts): AdamW, fresh optimizer per call, LoRA
 * dropout 0.05 as in the paper. Scoring: per-example summed next-token loss and argmax
 * hits over the response tokens (teacher forcing, scoreResponses in
 * src/model/response-scores.ts; the trainer's `evaluate` returns only the pooled mean).
 *
 * Without a checkpoint in the model directory (config.json + model.safetensors) the
 * backend falls back to a small randomly initialized Llama with the bundled tokenizer and
 * says so in its description: the harness then still runs end to end (CI), but its
 * numbers say nothing about fine-tuning a pretrained model.
 */
import { createHash } from 'node:crypto'
import { access, readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { type BackendSelection, describeBackend, selectBackend } from '../model/backend.js'
import { llamaConfig, parameterCount } from '../model/config.js'
import { majorityAnswers, scoreAnswers, skillsSuite, type SkillExample } from '../model/data/skills.js'
import { isSkillQuestions, strictExactByTeacherForcing } from '../model/exact-match.js'
import { tokenizeExample } from '../model/data/template.js'
import type { InstructionExample } from '../model/data/types.js'
import { wordnetTask } from '../model/data/wordnet.js'
import { LINEAR_MODULES, type LinearModuleKind, LlamaModel } from '../model/llama.js'
import { openModelForTraining } from '../model/open-model.js'
import { TRAINING_RECIPE } from '../model/recipe.js'
import { LlamaTokenizer } from '../model/tokenizer.js'
import { scoreResponses } from '../model/response-scores.js'
import { trainLora, type TrainingExample } from '../model/trainer.js'
import type { EvalConfig, ExampleScores, SimBackend, TaskExample, TrainJob, TrainOutcome } from './types.js'

/** models/flora-tiny in this repository. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../../models/flora-tiny/', import.meta.url))

/** The paper's LoRA dropout (the training recipe's). */
export const LORA_DROPOUT = TRAINING_RECIPE.loraDropout

const EVAL_BATCH = TRAINING_RECIPE.evalBatchSize

async function exists(file: string): Promise<boolean> {
  try {
    await access(file)
    return true
  } catch {
    return false
  }
}

/**
 * The view of the model trainLora sees for FFA-LoRA: the same model, but only the B
 * factors are trainable (trainableVariables() lists A then B per module). trainLora uses
 * nothing else of the model than these five members.
 */
function onlyB(model: LlamaModel): LlamaModel {
  const view: Pick<LlamaModel, 'config' | 'compute' | 'hiddenStates' | 'lmHead' | 'trainableVariables'> = {
    config: model.config,
    compute: model.compute,
    hiddenStates: (ids, options) => model.hiddenStates(ids, options),
    lmHead: (hidden) => model.lmHead(hidden),
    trainableVariables: () => model.trainableVariables().filter((_, i) => i % 2 === 1),
  }
  return view as LlamaModel
}

/** Without a checkpoint: a small random Llama on the directory's tokenizer (see the module comment). */
async function randomModel(dir: string, maxLen: number): Promise<{ model: LlamaModel; tokenizer: LlamaTokenizer; backend: BackendSelection }> {
  const backend = await selectBackend(TRAINING_RECIPE.backend)
  const tokenizer = await LlamaTokenizer.fromDir(dir)
  const c = llamaConfig({ vocabSize: tokenizer.vocabSize, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, maxPositionEmbeddings: Math.max(64, maxLen) })
  return { model: LlamaModel.random(c, 'flora-eval/random-base'), tokenizer, backend }
}

interface EvalTask {
  readonly train: readonly (InstructionExample & TaskExample)[]
  readonly eval: readonly (InstructionExample & TaskExample)[]
  readonly description: string
  /** Skills suite: the answer that ignores the question, scored on `eval`. */
  readonly ignoreQuestionBaseline?: number
}

function evalTask(config: EvalConfig): EvalTask {
  if ((config.data ?? 'wordnet') === 'wordnet') {
    const task = wordnetTask({ maxTrain: config.trainExamples, maxEval: config.evalExamples })
    return { train: task.train, eval: task.eval, description: `WordNet definitions (${task.categories.length} categories)` }
  }
  const suite = skillsSuite()
  if (config.trainExamples > suite.train.length) throw new RangeError(`--train-examples ${config.trainExamples}: the skills suite has ${suite.train.length} training questions`)
  if (config.evalExamples > suite.eval.length) throw new RangeError(`--eval-examples ${config.evalExamples}: the skills suite has ${suite.eval.length} held-out questions`)
  const train = suite.train.slice(0, config.trainExamples)
  const held = suite.eval.slice(0, config.evalExamples)
  const majority = majorityAnswers(suite.train)
  const ignore = scoreAnswers(held, held.map((q) => majority.get(q.category) ?? ''))
  return { train, eval: held, description: 'skills suite (exact match; category = task type)', ignoreQuestionBaseline: ignore.all }
}

function targetModules(config: EvalConfig): readonly LinearModuleKind[] | undefined {
  if (config.targets === undefined) return undefined
  for (const t of config.targets) {
    if (!(LINEAR_MODULES as readonly string[]).includes(t)) throw new RangeError(`--targets: unknown module '${t}' (choose from ${LINEAR_MODULES.join(', ')})`)
  }
  return config.targets as readonly LinearModuleKind[]
}

export async function createModelBackend(config: EvalConfig): Promise<SimBackend> {
  const dir = config.modelDir ?? DEFAULT_MODEL_DIR
  const pretrained = (await exists(path.join(dir, 'config.json'))) && (await exists(path.join(dir, 'model.safetensors')))
  const targets = targetModules(config)
  const task = evalTask(config)
  const { model, tokenizer, backend: selection } = pretrained
    ? await openModelForTraining(dir, targets !== undefined ? { targets } : {})
    : await randomModel(dir, config.maxLen)
  const weightsSha256 = pretrained
    ? createHash('sha256').update(await readFile(path.join(dir, 'model.safetensors'))).digest('hex').slice(0, 16)
    : 'none'
  const tokenize = (ex: InstructionExample): TrainingExample => {
    const t = tokenizeExample(ex, tokenizer, config.maxLen)
    return { inputIds: t.inputIds, promptLength: t.promptLength }
  }
  const train = task.train.map(tokenize)
  const held = task.eval.map(tokenize)
  const padId = tokenizer.padId
  const c = model.config

  return {
    description: {
      model: pretrained ? path.basename(path.resolve(dir)) : 'random-init Llama (no checkpoint found: numbers are not meaningful)',
      weightsSha256,
      parameters: parameterCount(c),
      layers: c.numLayers,
      hidden: c.hiddenSize,
      vocab: c.vocabSize,
      targets: (targets ?? TRAINING_RECIPE.targets).join(', '),
      loraDropout: LORA_DROPOUT,
      tfjs: describeBackend(selection),
      task: task.description,
    },
    shapes: model.targetModuleShapes(),
    trainExamples: task.train,
    evalExamples: task.eval,
    ...(task.ignoreQuestionBaseline !== undefined ? { ignoreQuestionBaseline: task.ignoreQuestionBaseline } : {}),
    getBaseWeight: (module) => model.getBaseWeight(module),
    setBaseWeight: (module, weight) => model.setBaseWeight(module, weight),
    async train(job: TrainJob): Promise<TrainOutcome> {
      model.setAdapter(job.start)
      try {
        const result = await trainLora(
          job.freezeA ? onlyB(model) : model,
          job.examples.map((i) => train[i]),
          {
            steps: job.steps,
            batchSize: config.batchSize,
            seqLen: config.maxLen,
            lr: job.lr ?? config.lr,
            seed: job.seed,
            padId,
            loraDropout: LORA_DROPOUT,
          },
        )
        const adapter = model.getAdapter()
        return { adapter, meanLoss: result.losses.reduce((a, b) => a + b, 0) / result.losses.length }
      } finally {
        model.clearAdapter()
      }
    },
    async evaluate(idx: readonly number[]): Promise<ExampleScores> {
      model.clearAdapter()
      const out = await scoreResponses(model, idx.map((j) => held[j] as TrainingExample), { seqLen: config.maxLen, padId, batchSize: EVAL_BATCH })
      if (!isSkillQuestions(task.eval)) return out
      const questions = task.eval
      const exact = await strictExactByTeacherForcing(model, tokenizer, idx.map((j) => questions[j] as SkillExample), {
        maxLen: config.maxLen,
        batchSize: EVAL_BATCH,
        referenceScores: out,
      })
      return { ...out, exact }
    },
    dispose() {
      model.dispose()
    },
  }
}
