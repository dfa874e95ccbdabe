/**
 * Where every flora command takes its option values from, in order of precedence: the
 * command line, a FLORA_* environment variable, a JSON config file (`--config FILE`), the
 * default. One implementation for all commands (flora-peer, flora train|generate|export,
 * and the repository's scripts: swarm, soak, redteam, eval), on commander's own sources
 * ('cli', 'env', 'config', 'default').
 */
import { readFileSync } from 'node:fs'
import { InvalidArgumentError, Option, type Command } from 'commander'

/** A config file that cannot be read or holds a value its option refuses (a usage error: exit 2). */
export class ConfigFileError extends Error {
  override readonly name = 'ConfigFileError'
}

const NOT_CONFIGURABLE = new Set(['--help', '--version', '--config'])
/** Commands whose --config is an options file (flora-peer's --config is the swarm config). */
const OPTIONS_FILE_COMMANDS = new WeakSet<Command>()

/** `local-steps` with prefix `FLORA_SWARM_` -> `FLORA_SWARM_LOCAL_STEPS` (`--no-progress` -> `..._NO_PROGRESS`). */
export function envVariableName(prefix: string, option: Option): string {
  return `${prefix}${option.name().replace(/-/g, '_').toUpperCase()}`
}

/**
 * Gives every option of `cmd` that has none an environment variable `<prefix><NAME>` (shown
 * in --help), and adds `-c, --config <file>` (variable `configVariable`): a JSON object of
 * option values, read by `parseCommandLine` (src/exit-codes.ts) or `applyConfigFile`.
 */
export function withEnvAndConfig(cmd: Command, prefix: string, configVariable = `${prefix}CONFIG`): Command {
  for (const option of cmd.options) {
    if (option.envVar === undefined && option.long !== undefined && !NOT_CONFIGURABLE.has(option.long)) addEnvVariable(cmd, option, envVariableName(prefix, option))
  }
  if (cmd.options.some((o) => o.long === '--config')) throw new Error(`${cmd.name()} already has a --config option`)
  cmd.addOption(
    new Option('-c, --config <file>', 'JSON file of option values, keyed by option name (e.g. {"local-steps": 4}); flags and environment variables override it').env(configVariable),
  )
  OPTIONS_FILE_COMMANDS.add(cmd)
  return cmd
}

/**
 * Gives an option that is already on `cmd` an environment variable. (commander reads an
 * option's variable only when the option had it when it was added: this registers the
 * handler commander would have, with commander's precedence and error.)
 */
function addEnvVariable(cmd: Command, option: Option, variable: string): void {
  option.env(variable)
  cmd.on(`optionEnv:${option.name()}`, (value: string | undefined) => {
    const name = option.attributeName()
    let parsed: unknown = value
    if (option.negate) parsed = false
    else if (option.isBoolean()) parsed = true
    else if (option.parseArg !== undefined) {
      try {
        parsed = option.parseArg(value ?? '', cmd.getOptionValue(name))
      } catch (err) {
        cmd.error(`error: option '${option.flags}' value '${value}' from env '${variable}' is invalid. ${(err as Error).message}`, {
          exitCode: 1,
          code: 'commander.invalidArgument',
        })
      }
    }
    cmd.setOptionValueWithSource(name, parsed, 'env')
  })
}

/** Applies the options file named by `--config`, for a command set up by withEnvAndConfig (else nothing). */
export function applyConfigOption(cmd: Command): void {
  const file = cmd.getOptionValue('config') as unknown
  if (OPTIONS_FILE_COMMANDS.has(cmd) && typeof file === 'string') applyConfigFile(cmd, file)
}

/** The environment variables a command reads, one per option (for tests and docs). */
export function envVariables(cmd: Command): string[] {
  return cmd.options.map((o) => o.envVar).filter((v): v is string => v !== undefined)
}

/**
 * Sets a command's options from a JSON config file: keys are option names (`batch-size` or
 * `batchSize`), values what the flag takes (numbers, strings, lists for comma lists, booleans
 * for switches), checked by the same parsers as the flags. Commander's precedence holds: a
 * flag or an environment variable wins over the file, the file over the default.
 */
export function applyConfigFile(cmd: Command, file: string): void {
  let raw: string
  try {
    raw = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigFileError(`--config ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`)
  }
  let values: unknown
  try {
    values = JSON.parse(raw)
  } catch (err) {
    throw new ConfigFileError(`--config ${file}: not JSON (${(err as Error).message})`)
  }
  if (values === null || typeof values !== 'object' || Array.isArray(values)) throw new ConfigFileError(`--config ${file}: expected a JSON object of option values`)
  const options = cmd.options.filter((o) => o.long === undefined || !NOT_CONFIGURABLE.has(o.long))
  const camel = (k: string): string => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
  for (const [key, value] of Object.entries(values)) {
    // "progress": false for --no-progress; a positive option of the same name comes first.
    const option = options.find((o) => o.attributeName() === camel(key) && !o.negate) ?? options.find((o) => o.attributeName() === camel(key))
    if (option === undefined) {
      throw new ConfigFileError(`--config ${file}: unknown option "${key}" (known: ${[...new Set(options.map((o) => o.attributeName()))].join(', ')})`)
    }
    const name = option.attributeName()
    const source = cmd.getOptionValueSource(name)
    if (source === 'cli' || source === 'env') continue
    let parsed: unknown
    if (option.isBoolean() || option.negate) {
      if (typeof value !== 'boolean') throw new ConfigFileError(`--config ${file}: "${key}" must be true or false`)
      parsed = value
    } else {
      if (value === null || (typeof value === 'object' && !Array.isArray(value))) throw new ConfigFileError(`--config ${file}: "${key}" must be a number, a string or a list`)
      const text = Array.isArray(value) ? value.map(String).join(',') : String(value)
      if (option.argChoices !== undefined && !option.argChoices.includes(text)) {
        throw new ConfigFileError(`--config ${file}: "${key}" must be one of ${option.argChoices.join(', ')} (got ${JSON.stringify(value)})`)
      }
      try {
        parsed = option.parseArg !== undefined ? option.parseArg(text, undefined) : text
      } catch (err) {
        throw new ConfigFileError(`--config ${file}: "${key}": ${(err as Error).message}`)
      }
    }
    cmd.setOptionValueWithSource(name, parsed, 'config')
  }
}

/** `--json`, as flora-peer and flora train have it: JSON lines on stdout instead of text. */
export function jsonOption(): Option {
  return new Option('--json', 'JSON lines on stdout instead of text (the default when stdout is not a terminal; the text then goes to stderr)')
}

/** JSON lines on stdout when asked, or whenever stdout is not a terminal (piped, redirected). */
export function jsonOutput(flag: boolean | undefined, stdout: { isTTY?: boolean } = process.stdout): boolean {
  return flag === true || stdout.isTTY !== true
}

/** A flag's parser: an integer >= `min`, else a usage error naming the flag. */
export function intAtLeast(flag: string, min: number): (value: string) => number {
  return (value: string): number => {
    const x = Number(value)
    if (value.trim() === '' || !Number.isInteger(x) || x < min) throw new InvalidArgumentError(`${flag} must be an integer >= ${min}`)
    return x
  }
}

/** A flag's parser: a finite number > 0, else a usage error naming the flag. */
export function positiveNumber(flag: string): (value: string) => number {
  return (value: string): number => {
    const x = Number(value)
    if (value.trim() === '' || !Number.isFinite(x) || x <= 0) throw new InvalidArgumentError(`${flag} must be a positive number`)
    return x
  }
}

/** A flag's parser: a number in [0, 1), else a usage error naming the flag. */
export function fraction(flag: string): (value: string) => number {
  return (value: string): number => {
    const x = Number(value)
    if (value.trim() === '' || !Number.isFinite(x) || x < 0 || x >= 1) throw new InvalidArgumentError(`${flag} must be in [0, 1)`)
    return x
  }
}
