/**
 * Defaults of the `model` training backend (model-trainer.ts): the shared training recipe
 * (src/model/recipe.ts) plus what only a peer has. Kept apart so the CLI can show them in
 * --help without loading tfjs.
 */
import { TRAINING_RECIPE } from '../model/recipe.js'

export const MODEL_TRAINER_DEFAULTS = {
  ...TRAINING_RECIPE,
  /** The bundled WordNet definition task. */
  data: 'wordnet',
  /** WordNet's held-out synsets (never trained on, in pretraining or by any peer). */
  evalData: 'wordnet',
  localSteps: 20,
  /** Held-out examples evaluated before round 1 and after every round. */
  evalExamples: 128,
  /** WordNet: training examples (a fixed, category-mixed prefix of the train split) split over the peers. */
  wordnetTrainExamples: 2000,
  /** Shards per peer of the category split (pathological non-IID: ~2 dominant categories per peer). */
  shardsPerPeer: 2,
} as const
