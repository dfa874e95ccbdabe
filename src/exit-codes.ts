/**
 * The exit codes of every flora command (flora-peer, flora train|generate|export, and the
 * repository's scripts: swarm, soak, redteam, eval), documented in the README:
 *
 *   0   success (also --help and --version)
 *   1   runtime failure: something went wrong while running (a peer exited badly, a
 *       target was missed, a file could not be written, ...)
 *   2   usage or configuration error: an unknown flag, a bad value, a missing input file,
 *       a swarm this peer cannot join as configured; nothing was started
 *   3   flora-peer only: a round stalled (no certificate within --stall-timeout)
 *   130 interrupted (Ctrl-C / SIGINT, SIGTERM)
 */
import { CommanderError, type Command } from 'commander'
import { applyConfigOption, ConfigFileError } from './cli-options.js'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
export const EXIT_STALLED = 3
export const EXIT_INTERRUPTED = 130

/** The exit code for an error commander raised while parsing (help and version are not errors). */
export function commanderExitCode(err: CommanderError): number {
  if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_OK
  // A program run without its required subcommand prints its help as an error.
  if (err.code === 'commander.help') return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE
  return EXIT_USAGE
}

/**
 * Parses `argv` with `program` (set to throw instead of exiting), then applies its
 * `--config FILE` if it has one (src/cli-options.ts). Returns undefined when the command
 * should run, or the exit code when it should not (--help, --version: 0; a usage error,
 * whose message has been printed: 2).
 */
export function parseCommandLine(program: Command, argv: readonly string[], stderr: { write(s: string): unknown } = process.stderr): number | undefined {
  program.exitOverride()
  try {
    program.parse([...argv])
    applyConfigOption(program)
    return undefined
  } catch (err) {
    if (err instanceof CommanderError) return commanderExitCode(err)
    if (err instanceof ConfigFileError) {
      stderr.write(`${program.name()}: ${err.message}\n`)
      return EXIT_USAGE
    }
    throw err
  }
}
