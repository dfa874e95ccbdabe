/**
 * Defaults of the `model` training backend (model-trainer.ts). Kept apart so the CLI can
 * show them in --help without loading tfjs.
 */
export const MODEL_TRAINER_DEFAULTS = {
  /** The bundled WordNet definition task. */
  data: 'wordnet',
  /** WordNet's held-out synsets (never trained on, in pretraining or by any peer). */
  evalData: 'wordnet',
  localSteps: 20,
  batchSize: 16,
  seqLen: 64,
  lr: 1e-3,
  /** Held-out examples evaluated before round 1 and after every round. */
  evalExamples: 128,
  /** WordNet: training examples (a fixed, category-mixed prefix of the train split) split over the peers. */
  wordnetTrainExamples: 2000,
  /** The FLoRA paper's LoRA dropout. */
  loraDropout: 0.05,
  /** The FLoRA paper's (and PEFT's usual) targets. */
  targets: ['q_proj', 'v_proj'] as readonly string[],
  backend: 'auto' as 'auto' | 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu',
  /** Shards per peer of the category split (pathological non-IID: ~2 dominant categories per peer). */
  shardsPerPeer: 2,
} as const
