/**
 * `flora export --state-dir DIR --out OUT [--model BASE]`: writes the model a peer agreed on
 * from its state dir, after the fact (a running peer writes it itself with `--out`).
 *   OUT/model/     the agreed weights: a Hugging Face model dir when --model names the base
 *                  checkpoint the swarm started from, else the target weights alone
 *   OUT/adapter/   the cumulative update since genesis as a PEFT adapter (when the peer
 *                  replayed every round; a peer that took a head snapshot has no history)
 *   OUT/flora.json provenance (swarm, round, state hash)
 */
import { basename, resolve } from 'node:path'
import { Command, Option } from 'commander'
import { CumulativeUpdate, exportFederatedModel } from './export.js'
import { readStateDirMeta, StateDir } from './state-dir.js'
import { EXIT_USAGE, parseCommandLine } from '../exit-codes.js'
import { withEnvAndConfig } from '../cli-options.js'

export async function main(argv: readonly string[] = process.argv): Promise<number> {
  const program = new Command('flora export')
    .description("Write the federated model from a peer's state dir: the agreed weights (model/) and the cumulative update as a PEFT adapter (adapter/).")
    .exitOverride()
    .addOption(new Option('-s, --state-dir <dir>', "the peer's state dir (flora-peer --state-dir; default next to its identity: .flora/peer.state)").default('.flora/peer.state'))
    .addOption(new Option('-o, --out <dir>', 'where to write model/, adapter/ and flora.json (required)'))
    .addOption(new Option('-m, --model <dir>', 'the base checkpoint the swarm started from (for a full Hugging Face model dir; without it, model/ holds the target weights only)'))
  withEnvAndConfig(program, 'FLORA_', 'FLORA_EXPORT_CONFIG')
  // argv: node, bin, 'export', ...flags
  const usage = parseCommandLine(program, [...argv.slice(0, 2), ...argv.slice(3)])
  if (usage !== undefined) return usage
  const o = program.opts<{ stateDir: string; out?: string; model?: string }>()
  if (o.out === undefined) {
    process.stderr.write("flora export: error: required option '-o, --out <dir>' not specified\n")
    return EXIT_USAGE
  }
  const meta = readStateDirMeta(o.stateDir)
  const sd = StateDir.open(o.stateDir, { swarmId: meta.swarmId, genesisStateHash: meta.genesisStateHash, peerId: meta.peerId })
  try {
    const loaded = sd.load(meta.targets)
    const head = loaded.head
    if (head == null) {
      process.stderr.write(`flora export: ${o.stateDir} holds no committed round yet\n`)
      return 1
    }
    let update: CumulativeUpdate | undefined
    const bytes = sd.loadUpdate()
    if (bytes != null) {
      const u = CumulativeUpdate.deserialize(bytes, meta.targets)
      if (u.round === head.round) update = u
    }
    const written = await exportFederatedModel(o.out, {
      round: head.round,
      stateHash: head.hash,
      swarmId: meta.swarmId,
      strategy: meta.strategy,
      weights: head.weights,
      shapes: meta.targets,
      update,
      global: head.global,
      baseModelDir: o.model != null ? resolve(o.model) : undefined,
      baseModelName: o.model != null ? basename(resolve(o.model)) : undefined,
    })
    process.stdout.write(
      `exported round ${head.round} (state ${head.hash.slice(0, 16)}) of swarm ${meta.swarmId.slice(0, 16)} to ${resolve(o.out)}: model/${update != null ? ' and adapter/' : ` (no adapter: ${bytes == null ? 'no cumulative update kept' : 'the kept update is of another round'})`}\n`,
    )
    void written
    return 0
  } finally {
    sd.close()
  }
}
