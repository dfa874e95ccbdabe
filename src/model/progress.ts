/**
 * Training progress for the CLI: a progress bar on a TTY, one JSON line per step otherwise.
 */
import cliProgress from 'cli-progress'
import type { StepInfo } from './trainer.js'

export interface ProgressReporter {
  readonly onStep: (info: StepInfo) => void
  /** Finish the bar (no-op for JSON lines). */
  stop(): void
}

export interface ProgressOptions {
  readonly stream?: NodeJS.WriteStream
  /** Force JSON lines (true) or the bar (false); default: bar iff the stream is a TTY. */
  readonly json?: boolean
  readonly label?: string
}

export function createProgressReporter(options: ProgressOptions = {}): ProgressReporter {
  const stream = options.stream ?? process.stderr
  const json = options.json ?? !stream.isTTY
  if (json) {
    return {
      onStep: (i) => {
        stream.write(
          JSON.stringify({
            event: 'train_step',
            ...(options.label !== undefined ? { label: options.label } : {}),
            step: i.step,
            steps: i.steps,
            loss: round(i.loss, 5),
            gradNorm: round(i.gradNorm, 5),
            lr: i.lr,
            tokensPerSecond: round(i.tokensPerSecond, 1),
            elapsedMs: Math.round(i.elapsedMs),
            ...(i.eval !== undefined ? { evalLoss: round(i.eval.loss, 5), evalPerplexity: round(i.eval.perplexity, 3) } : {}),
          }) + '\n',
        )
      },
      stop: () => {},
    }
  }
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${options.label ?? 'train'} [{bar}] {value}/{total} loss {loss} | {tps} tok/s | eta {eta_formatted}`,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  )
  let started = false
  return {
    onStep: (i) => {
      const payload = { loss: i.loss.toFixed(4), tps: Math.round(i.tokensPerSecond) }
      if (!started) {
        bar.start(i.steps, i.step, payload)
        started = true
      } else bar.update(i.step, payload)
    },
    stop: () => {
      if (started) bar.stop()
    },
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}
