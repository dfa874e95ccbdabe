/**
 * Persistent peer identity: an Ed25519 libp2p private key in a file (protobuf bytes,
 * mode 0600), so a restarted peer keeps its peer id, and with it its place in the
 * manifest chain and the proposer order.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, generateKeyPairFromSeed, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { createHash } from 'node:crypto'

export class IdentityError extends Error {
  override readonly name = 'IdentityError'
}

/** Loads the key in `path`, or creates one there (and its directory) if the file is absent. */
export async function loadOrCreateIdentity(path: string): Promise<{ privateKey: PrivateKey; created: boolean }> {
  let bytes: Buffer | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (bytes != null) {
    try {
      return { privateKey: privateKeyFromProtobuf(new Uint8Array(bytes)), created: false }
    } catch (err) {
      throw new IdentityError(`${path} is not a libp2p private key file: ${(err as Error).message}`)
    }
  }
  const privateKey = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true })
  // 'wx': never overwrite a key another process created meanwhile.
  await writeFile(path, privateKeyToProtobuf(privateKey), { mode: 0o600, flag: 'wx' })
  return { privateKey, created: true }
}

/** A deterministic key for tests and reproducible local swarms (never for real deployments). */
export async function identityFromSeed(seed: string): Promise<PrivateKey> {
  const bytes = createHash('sha256').update(`flora-identity:${seed}`).digest()
  return generateKeyPairFromSeed('Ed25519', new Uint8Array(bytes))
}
