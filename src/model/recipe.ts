/**
 * The one training recipe: the defaults every way of training a LoRA starts from (`flora
 * train`, the peer's model trainer, `flora-peer`'s flags and the swarm script). A flag
 * overrides a value for one run; nothing else keeps its own copy, so the three cannot drift
 * apart again. Free of tfjs, so a CLI can show the values in --help without loading it.
 *
 * The values suit the bundled model (a 2.4M-parameter Llama) and short local budgets; for a
 * checkpoint of a billion parameters, a learning rate of 1e-4 to 3e-4 is the usual choice.
 */
import type { BackendPreference } from './backend-names.js'
import { LINEAR_MODULES } from './config.js'
export const TRAINING_RECIPE = {
  /** LoRA rank (each peer may choose its own). Alpha defaults to 2 x rank, as in the FLoRA paper. */
  rank: 8,
  /** The FLoRA paper's (and PEFT's usual) targets. */
  targets: ['q_proj', 'v_proj'] as readonly ('q_proj' | 'v_proj')[],
  /** AdamW learning rate (the FLoRA paper's 3e-4 is for a 7B model and one local epoch). */
  lr: 1e-3,
  /** Examples per step (16 at lr 1e-3 fell every round in a swarm; 8 was noisier: docs/FEDERATION.md). */
  batchSize: 16,
  /** Tokens per example; longer ones are cut (128 keeps 99.7% of the WordNet examples whole, 64 only 63%). */
  seqLen: 128,
  /** The FLoRA paper's LoRA dropout. */
  loraDropout: 0.05,
  /** Examples per forward pass when evaluating (no gradients: larger than a training batch). */
  evalBatchSize: 16,
  /** tfjs backend: the best available (backend.ts). */
  backend: 'auto' as BackendPreference,
} as const

/**
 * What `--data skills` (the skills suite, src/model/data/skills.ts) trains with where no flag
 * says otherwise: LoRA on every linear module (q_proj and v_proj alone learned a third as
 * much on the suite, docs/DATA.md), a larger step for the short answers, and 64 tokens,
 * which hold every question with its longest answer.
 */
export const SKILLS_RECIPE = {
  targets: LINEAR_MODULES,
  lr: 3e-3,
  seqLen: 64,
} as const
