/**
 * Merges the results of evaluation runs that split one comparison between processes (for
 * example one process per rank setting, to use both cores), into one results.json,
 * results.md and plots:
 *
 *   npx tsx scripts/eval-merge.ts --out docs/results/skills runs/eval-homo16 runs/eval-hetero
 *
 * The runs must share everything but the settings they ran (same model weights, task,
 * budgets, seeds, strategies); a setting may come from only one of them. The summary is
 * recomputed from the merged runs.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Command } from 'commander'
import { writeOutputs } from '../src/eval/cli.js'
import { SETTINGS } from '../src/eval/settings.js'
import { summarize } from '../src/eval/simulate.js'
import type { EvalResults } from '../src/eval/types.js'

/** One results.json out of several that differ only in their settings. */
export function mergeResults(parts: readonly EvalResults[]): EvalResults {
  if (parts.length === 0) throw new Error('nothing to merge')
  const first = parts[0]
  const comparable = (r: EvalResults): string =>
    JSON.stringify({ ...r.config, settings: [], out: '' }) + JSON.stringify(r.backend) + JSON.stringify(r.base) + JSON.stringify(r.clients)
  const seen = new Set<string>()
  for (const [i, p] of parts.entries()) {
    if (comparable(p) !== comparable(first)) throw new Error(`part ${i + 1} differs from part 1 in more than its settings (config, model, base scores or clients)`)
    for (const s of p.config.settings) {
      if (seen.has(s)) throw new Error(`setting ${s} is in more than one part`)
      seen.add(s)
    }
  }
  const runs = parts.flatMap((p) => p.runs)
  return {
    ...first,
    config: { ...first.config, settings: SETTINGS.filter((s) => seen.has(s)) },
    runs,
    summary: summarize(runs),
    // Wall time of the slowest part: the parts ran side by side.
    seconds: Math.max(...parts.map((p) => p.seconds)),
    cacheHits: parts.reduce((a, p) => a + p.cacheHits, 0),
  }
}

async function main(): Promise<void> {
  const program = new Command('eval-merge')
    .description('Merge evaluation results that split one comparison by rank setting')
    .requiredOption('-o, --out <dir>', 'output directory')
    .argument('<dirs...>', 'directories holding results.json')
    .parse()
  const { out } = program.opts<{ out: string }>()
  const parts = await Promise.all(program.args.map(async (d) => JSON.parse(await readFile(join(d, 'results.json'), 'utf8')) as EvalResults))
  const files = await writeOutputs(mergeResults(parts), out)
  process.stderr.write(`wrote ${files.map((f) => join(out, f)).join(', ')}\n`)
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`eval-merge: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
