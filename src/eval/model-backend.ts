/**
 * The bundled Llama and the WordNet definition task as a SimBackend.
 *
 * Data: `wordnetTask` (src/model/data/wordnet.ts): "Define the word X (noun)." -> gloss,
 * category = lexicographer file, a fixed held-out split by synset hash. Examples are
 * tokenized once with the Alpaca-style template, loss on the response tokens only.
 * Training: `trainLora` (src/model/trainer.ts): AdamW, fresh optimizer per call, LoRA
 * dropout 0.05 as in the paper. Scoring: per-example summed next-token loss and argmax
 * hits over the response tokens (teacher forcing), computed here because the trainer's
 * `evaluate` returns only the pooled mean.
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
import * as tf from '@tensorflow/tfjs'
import { type BackendSelection, describeBackend, selectBackend } from '../model/backend.js'
import { llamaConfig, parameterCount } from '../model/config.js'
import { tokenizeExample } from '../model/data/template.js'
import { wordnetTask } from '../model/data/wordnet.js'
import { LlamaModel } from '../model/llama.js'
import { openModelForTraining } from '../model/open-model.js'
import { TRAINING_RECIPE } from '../model/recipe.js'
import { LlamaTokenizer } from '../model/tokenizer.js'
import { makeBatch, trainLora, type TrainingExample } from '../model/trainer.js'
import type { EvalConfig, ExampleScores, SimBackend, TrainJob, TrainOutcome } from './types.js'

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

export async function createModelBackend(config: EvalConfig): Promise<SimBackend> {
  const dir = config.modelDir ?? DEFAULT_MODEL_DIR
  const pretrained = (await exists(path.join(dir, 'config.json'))) && (await exists(path.join(dir, 'model.safetensors')))
  const { model, tokenizer, backend: selection } = pretrained
    ? await openModelForTraining(dir)
    : await randomModel(dir, config.maxLen)
  const weightsSha256 = pretrained
    ? createHash('sha256').update(await readFile(path.join(dir, 'model.safetensors'))).digest('hex').slice(0, 16)
    : 'none'
  const task = wordnetTask({ maxTrain: config.trainExamples, maxEval: config.evalExamples })
  const tokenize = (ex: (typeof task.train)[number]): TrainingExample => {
    const t = tokenizeExample(ex, tokenizer, config.maxLen)
    return { inputIds: t.inputIds, promptLength: t.promptLength }
  }
  const train = task.train.map(tokenize)
  const held = task.eval.map(tokenize)
  const padId = tokenizer.padId
  const c = model.config

  const scoreBatch = (examples: readonly TrainingExample[], out: ExampleScores, offset: number): void => {
    const batch = makeBatch(examples, config.maxLen, padId, c.vocabSize)
    if (batch.rows.length === 0) return
    const [nll, hit] = tf.tidy(() => {
      const ids = tf.tensor2d(batch.ids, [batch.batchSize, batch.seqLen], 'int32')
      const rows = tf.tensor1d(batch.rows, 'int32')
      const targets = tf.tensor1d(batch.targets, 'int32')
      const logits = model.lmHead(tf.gather(model.hiddenStates(ids), rows) as tf.Tensor2D)
      // nll_i = logsumexp(z_i) - z_i[t_i];  hit_i = [argmax z_i == t_i]
      const lse = tf.logSumExp(logits, 1)
      const m = batch.rows.length
      const picked = tf.gatherND(logits, tf.stack([tf.range(0, m, 1, 'int32'), targets], 1))
      return [lse.sub(picked), tf.equal(tf.argMax(logits, 1), targets)]
    })
    const nllV = nll.dataSync()
    const hitV = hit.dataSync()
    tf.dispose([nll, hit])
    batch.rows.forEach((row, i) => {
      const e = offset + Math.floor(row / batch.seqLen)
      out.lossSum[e] += nllV[i]
      out.tokens[e] += 1
      out.correct[e] += hitV[i]
    })
  }

  return {
    description: {
      model: pretrained ? path.basename(path.resolve(dir)) : 'random-init Llama (no checkpoint found: numbers are not meaningful)',
      weightsSha256,
      parameters: parameterCount(c),
      layers: c.numLayers,
      hidden: c.hiddenSize,
      vocab: c.vocabSize,
      targets: 'q_proj, v_proj',
      loraDropout: LORA_DROPOUT,
      tfjs: describeBackend(selection),
      task: `WordNet definitions (${task.categories.length} categories)`,
    },
    shapes: model.targetModuleShapes(),
    trainExamples: task.train,
    evalExamples: task.eval,
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
            lr: config.lr,
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
      const out: ExampleScores = {
        lossSum: new Float64Array(idx.length),
        tokens: new Float64Array(idx.length),
        correct: new Float64Array(idx.length),
      }
      for (let i = 0; i < idx.length; i += EVAL_BATCH) {
        scoreBatch(idx.slice(i, i + EVAL_BATCH).map((j) => held[j]), out, i)
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
      return out
    },
    dispose() {
      model.dispose()
    },
  }
}
