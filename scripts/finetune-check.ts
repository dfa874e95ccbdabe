/**
 * Checks that LoRA fine-tuning of the bundled base model on the WordNet definition task
 * lowers the held-out (eval split) loss, with the TypeScript stack (src/model).
 *
 *   npx tsx scripts/finetune-check.ts [--model models/flora-tiny] [--steps 200] [--rank 8]
 *       [--alpha 16] [--lr 2e-3] [--batch 8] [--seq 128] [--eval 200] [--targets q_proj,v_proj]
 *       [--backend wasm] [--json]
 *
 * Prints the eval loss (response tokens only) before and after, and the numbers as one
 * JSON line at the end.
 */
import { parseArgs } from 'node:util'
import { initAdapter } from '../src/lora/init.js'
import { selectBackend, type BackendPreference } from '../src/model/backend.js'
import { loadModel } from '../src/model/checkpoint.js'
import { tokenizeExample } from '../src/model/data/template.js'
import { wordnetTask } from '../src/model/data/wordnet.js'
import { LINEAR_MODULES, type LinearModuleKind } from '../src/model/llama.js'
import { LlamaTokenizer } from '../src/model/tokenizer.js'
import { evaluate, trainLora, type TrainingExample } from '../src/model/trainer.js'

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/flora-tiny' },
    steps: { type: 'string', default: '200' },
    rank: { type: 'string', default: '8' },
    alpha: { type: 'string', default: '16' },
    lr: { type: 'string', default: '2e-3' },
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '128' },
    eval: { type: 'string', default: '200' },
    'max-train': { type: 'string', default: '20000' },
    targets: { type: 'string', default: 'q_proj,v_proj' },
    backend: { type: 'string', default: 'wasm' },
    seed: { type: 'string', default: 'finetune-check' },
  },
})
const num = (k: keyof typeof values): number => Number(values[k])
const steps = num('steps')
const rank = num('rank')
const alpha = num('alpha')
const lr = num('lr')
const batchSize = num('batch')
const seqLen = num('seq')
const targets = (values.targets ?? '').split(',').filter((t) => t.length > 0) as LinearModuleKind[]
for (const t of targets) if (!LINEAR_MODULES.includes(t)) throw new Error(`unknown target module ${t}`)

const backend = await selectBackend((values.backend ?? 'wasm') as BackendPreference)
const dir = values.model ?? 'models/flora-tiny'
const tok = await LlamaTokenizer.fromDir(dir)
const model = await loadModel(dir, { targetModules: targets })
const task = wordnetTask({ maxTrain: num('max-train'), maxEval: num('eval') })
const toExample = (ex: (typeof task.train)[number]): TrainingExample => {
  const t = tokenizeExample(ex, tok, seqLen)
  return { inputIds: t.inputIds, promptLength: t.promptLength }
}
const train = task.train.map(toExample)
const heldOut = task.eval.map(toExample)
const evalOpts = { seqLen, batchSize: 16, padId: tok.padId }

const before = await evaluate(model, heldOut, evalOpts)
console.log(`backend ${backend.backend}; base model held-out loss ${before.loss.toFixed(4)} (ppl ${before.perplexity.toFixed(2)}) on ${heldOut.length} eval examples`)
model.setAdapter(initAdapter({ shapes: model.targetModuleShapes(), rank, alpha, seed: values.seed ?? 'finetune-check' }))
const t0 = performance.now()
const result = await trainLora(model, train, {
  steps,
  batchSize,
  seqLen,
  lr,
  seed: values.seed ?? 'finetune-check',
  warmupSteps: Math.min(20, Math.floor(steps / 10)),
  schedule: 'cosine',
  padId: tok.padId,
  onStep: (s) => {
    if (s.step % 25 === 0 || s.step === s.steps) console.log(`step ${s.step}/${s.steps} loss ${s.loss.toFixed(4)} ${s.tokensPerSecond.toFixed(0)} tok/s`)
  },
})
const seconds = (performance.now() - t0) / 1000
const after = await evaluate(model, heldOut, evalOpts)
console.log(`after ${steps} LoRA steps: held-out loss ${after.loss.toFixed(4)} (ppl ${after.perplexity.toFixed(2)}); delta ${(after.loss - before.loss).toFixed(4)}`)
console.log(
  JSON.stringify({
    backend: backend.backend,
    steps,
    rank,
    alpha,
    lr,
    batchSize,
    seqLen,
    targets,
    trainExamples: train.length,
    evalExamples: heldOut.length,
    evalLossBefore: before.loss,
    evalLossAfter: after.loss,
    finalTrainLoss: result.finalLoss,
    seconds: Math.round(seconds),
  }),
)
