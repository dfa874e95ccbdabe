/**
 * Closed federations: the private-network swarm key (libp2p pnet) and the two small
 * commands that help set one up.
 *
 * A swarm key file is the format go-ipfs and @libp2p/pnet share:
 *
 *   /key/swarm/psk/1.0.0/
 *   /base16/
 *   <64 hex digits: 32 random bytes>
 *
 * Every connection of a peer started with `--swarm-key FILE` is wrapped in XSalsa20 under
 * that key before anything else is said (multistream, Noise), so hosts without the same
 * key cannot even complete a handshake. The key is a network secret, not part of the swarm
 * config or id: it is never sent anywhere.
 *
 *   flora swarm-key FILE [--force]   writes a new key (mode 0600)
 *   flora id [--identity FILE]       prints this machine's peer id (for a swarm's member list),
 *                                    creating the identity file flora-peer will use if missing
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { loadOrCreateIdentity } from './identity.js'

export class SwarmKeyError extends Error {
  override readonly name = 'SwarmKeyError'
}

const HEADER = '/key/swarm/psk/1.0.0/'
const CODEC = '/base16/'
const KEY_BYTES = 32

/**
 * Validates swarm key file contents and returns them in canonical form (the bytes pnet's
 * `preSharedKey({ psk })` takes): the three lines, lowercase hex, no trailing newline.
 * Tolerates CRLF line ends, surrounding whitespace and a trailing newline.
 * @param source names the file in error messages
 */
export function parseSwarmKey(contents: string | Uint8Array, source = 'swarm key'): Uint8Array {
  const text = typeof contents === 'string' ? contents : new TextDecoder('utf-8', { fatal: false }).decode(contents)
  const lines = text.split(/\r\n|\r|\n/).map((l) => l.trim())
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop()
  if (lines.length === 0) throw new SwarmKeyError(`${source} is empty (create a swarm key with: flora swarm-key <file>)`)
  if (lines[0] !== HEADER) {
    throw new SwarmKeyError(`${source} is not a swarm key file: its first line must be '${HEADER}' (create one with: flora swarm-key <file>)`)
  }
  if (lines[1] !== CODEC) {
    throw new SwarmKeyError(
      `${source}: unsupported swarm key encoding ${lines[1] == null ? '(missing)' : `'${lines[1].slice(0, 32)}'`}; only '${CODEC}' is supported`,
    )
  }
  const hex = lines[2] ?? ''
  if (!/^[0-9a-fA-F]*$/.test(hex)) throw new SwarmKeyError(`${source}: the key (line 3) must be hexadecimal`)
  if (hex.length !== 2 * KEY_BYTES) {
    throw new SwarmKeyError(`${source}: the key (line 3) must be ${2 * KEY_BYTES} hex digits (${KEY_BYTES} bytes), got ${hex.length}`)
  }
  if (lines.length > 3) throw new SwarmKeyError(`${source}: unexpected content after the key (line 4)`)
  return new TextEncoder().encode(`${HEADER}\n${CODEC}\n${hex.toLowerCase()}`)
}

/** Reads and validates a swarm key file (see parseSwarmKey). */
export async function readSwarmKey(path: string): Promise<Uint8Array> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new SwarmKeyError(`swarm key file ${path} does not exist (create one with: flora swarm-key ${path})`)
    throw new SwarmKeyError(`cannot read swarm key file ${path}: ${(err as Error).message}`)
  }
  if (bytes.length > 4096) throw new SwarmKeyError(`${path} is not a swarm key file (${bytes.length} bytes)`)
  return parseSwarmKey(new Uint8Array(bytes), path)
}

/** A new random swarm key in the file format (canonical form). */
export function generateSwarmKey(): Uint8Array {
  return new TextEncoder().encode(`${HEADER}\n${CODEC}\n${randomBytes(KEY_BYTES).toString('hex')}`)
}

/**
 * Writes a new swarm key to `path` (mode 0600, its directory created), never replacing an
 * existing file unless `force`. Returns the key.
 */
export async function writeSwarmKey(path: string, options: { force?: boolean } = {}): Promise<Uint8Array> {
  const key = generateSwarmKey()
  await mkdir(dirname(path), { recursive: true })
  try {
    await writeFile(path, `${new TextDecoder().decode(key)}\n`, { mode: 0o600, flag: options.force === true ? 'w' : 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new SwarmKeyError(`${path} already exists; pass --force to replace it (every member then needs the new key)`)
    }
    throw err
  }
  return key
}

/**
 * A short, non-secret tag of a key (sha256 of the 32 key bytes, 16 hex digits), for logs:
 * members can compare it to check they hold the same key without showing the key.
 */
export function swarmKeyFingerprint(key: Uint8Array): string {
  const hex = new TextDecoder().decode(parseSwarmKey(key)).split('\n')[2]
  return createHash('sha256').update(Buffer.from(hex, 'hex')).digest('hex').slice(0, 16)
}

/** `flora swarm-key FILE` and `flora id` (bin/flora.js dispatches both here). */
export async function main(argv: readonly string[] = process.argv): Promise<number> {
  const sub = argv[2]
  const program =
    sub === 'id'
      ? new Command('flora id')
          .description("Print this peer's id (what a closed swarm's member list holds); creates the identity file if it is missing.")
          .addOption(new Option('-i, --identity <file>', "the peer's key file (flora-peer --identity)").default('.flora/peer.key').env('FLORA_IDENTITY'))
      : new Command('flora swarm-key')
          .description(
            'Write a new private-network key (libp2p pnet). Give it to every member over a secure channel; ' +
              'peers started with flora-peer --swarm-key FILE only talk to hosts holding the same key.',
          )
          .argument('<file>', 'where to write the key (mode 0600)')
          .addOption(new Option('-f, --force', 'replace an existing file'))
  program.exitOverride()
  try {
    // argv: node, bin, subcommand, ...
    program.parse([...argv.slice(0, 2), ...argv.slice(3)])
  } catch (err) {
    if (err instanceof CommanderError) return err.code === 'commander.helpDisplayed' ? 0 : 2
    throw err
  }
  if (sub === 'id') {
    const o = program.opts<{ identity: string }>()
    const { privateKey, created } = await loadOrCreateIdentity(o.identity)
    if (created) process.stderr.write(`created a new identity in ${resolve(o.identity)}\n`)
    process.stdout.write(`${peerIdFromPrivateKey(privateKey).toString()}\n`)
    return 0
  }
  const file = program.args[0]
  const o = program.opts<{ force?: boolean }>()
  try {
    const key = await writeSwarmKey(file, { force: o.force })
    process.stdout.write(
      `wrote a new swarm key to ${resolve(file)} (fingerprint ${swarmKeyFingerprint(key)})\n` +
        `share it with every member over a secure channel, and start each peer with: flora-peer --swarm-key ${file} ...\n`,
    )
  } catch (err) {
    if (err instanceof SwarmKeyError) {
      process.stderr.write(`flora swarm-key: ${err.message}\n`)
      return 1
    }
    throw err
  }
  return 0
}
