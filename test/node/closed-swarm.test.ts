/**
 * Closed federations (issue 10): a private-network swarm key (libp2p pnet) keeps hosts
 * without the key out at the transport, and a member list (config.members) makes the
 * connection gater refuse every other peer id. Swarm key files fail with clear errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { makeSwarmConfig, SwarmConfigError } from '../../src/node/config.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { createPeer, PeerOptionsError, type FloraPeer } from '../../src/node/peer.js'
import { parseMembers, readMembersFile, setupPeer } from '../../src/node/setup.js'
import {
  generateSwarmKey,
  main as swarmKeyMain,
  parseSwarmKey,
  readSwarmKey,
  swarmKeyFingerprint,
  SwarmKeyError,
  writeSwarmKey,
} from '../../src/node/swarm-key.js'
import { syntheticSwarm } from '../../src/node/synthetic.js'
import { syntheticTrainer } from '../../src/node/trainer.js'
import { startTestSwarm, testPeerIds, waitForEvent, type TestSwarm } from './helpers.js'

const ROUND = { deadlineMs: 20_000, graceMs: 3000, minPeers: 2 }

/** A peer outside the test swarm (same synthetic base), on loopback. */
async function outsider(seed: string, options: { swarmKey?: Uint8Array; members?: readonly string[] } = {}): Promise<FloraPeer> {
  const { config, weights } = syntheticSwarm({ round: ROUND })
  const peer = await createPeer({
    config: options.members != null ? makeSwarmConfig({ ...config, members: options.members }) : config,
    weights,
    privateKey: await identityFromSeed(seed),
    rank: 2,
    trainer: syntheticTrainer({ samples: 10, steps: 1 }),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    swarmKey: options.swarmKey,
  })
  await peer.start()
  return peer
}

/**
 * Dials with a time limit; resolves true when a connection came up and stayed up. (A host
 * reading another key's ciphertext may fail at once or wait for bytes that never come:
 * the limit bounds the latter; a loopback dial that works takes milliseconds.)
 */
async function connects(from: FloraPeer, to: FloraPeer): Promise<boolean> {
  try {
    await from.dial(to.multiaddrs()[0], AbortSignal.timeout(2000))
  } catch {
    return false
  }
  // A connection the remote gater refuses after the handshake is closed right away.
  await new Promise((resolve) => setTimeout(resolve, 300))
  return from.libp2p.getConnections(to.libp2p.peerId).some((c) => c.status === 'open')
}

describe('swarm key files', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flora-swarm-key-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('writes a key in the pnet format (mode 0600) that reads back, and never overwrites one unasked', async () => {
    const file = join(dir, 'sub', 'swarm.key')
    const key = await writeSwarmKey(file)
    const text = await readFile(file, 'utf8')
    expect(text).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    if (process.platform !== 'win32') expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect(await readSwarmKey(file)).toEqual(key)
    await expect(writeSwarmKey(file)).rejects.toThrow(/already exists; pass --force/)
    const replaced = await writeSwarmKey(file, { force: true })
    expect(swarmKeyFingerprint(replaced)).not.toBe(swarmKeyFingerprint(key))
    expect(swarmKeyFingerprint(replaced)).toMatch(/^[0-9a-f]{16}$/)
  })

  it('accepts CRLF, uppercase hex and surrounding whitespace, canonicalizing them', () => {
    const hex = 'AB'.repeat(32)
    const parsed = parseSwarmKey(`/key/swarm/psk/1.0.0/\r\n/base16/\r\n  ${hex}  \r\n\r\n`)
    expect(new TextDecoder().decode(parsed)).toBe(`/key/swarm/psk/1.0.0/\n/base16/\n${'ab'.repeat(32)}`)
  })

  it('fails with a clear error for missing and malformed files', async () => {
    const missing = join(dir, 'nope.key')
    await expect(readSwarmKey(missing)).rejects.toThrow(SwarmKeyError)
    await expect(readSwarmKey(missing)).rejects.toThrow(`swarm key file ${missing} does not exist (create one with: flora swarm-key ${missing})`)
    const cases: Array<[string, RegExp]> = [
      ['', /is empty/],
      ['hello\n', /first line must be '\/key\/swarm\/psk\/1\.0\.0\/'/],
      ['/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n', /unsupported swarm key encoding '\/base64\/'/],
      ['/key/swarm/psk/1.0.0/\n', /unsupported swarm key encoding \(missing\)/],
      ['/key/swarm/psk/1.0.0/\n/base16/\n', /must be 64 hex digits \(32 bytes\), got 0/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${'a'.repeat(62)}\n`, /must be 64 hex digits \(32 bytes\), got 62/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${'g'.repeat(64)}\n`, /must be hexadecimal/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${'a'.repeat(64)}\nmore\n`, /unexpected content after the key/],
    ]
    for (const [i, [text, message]] of cases.entries()) {
      const file = join(dir, `bad-${i}.key`)
      await writeFile(file, text)
      const err = await readSwarmKey(file).catch((e: unknown) => e)
      expect(err, text).toBeInstanceOf(SwarmKeyError)
      expect((err as Error).message, text).toMatch(message)
      expect((err as Error).message.startsWith(file), text).toBe(true)
    }
  })

  it('flora swarm-key FILE writes a key; flora id prints (and creates) the identity', async () => {
    const out: string[] = []
    const write = process.stdout.write.bind(process.stdout)
    const errWrite = process.stderr.write.bind(process.stderr)
    process.stdout.write = ((s: string) => (out.push(s), true)) as typeof process.stdout.write
    process.stderr.write = ((s: string) => (out.push(s), true)) as typeof process.stderr.write
    try {
      const file = join(dir, 'cli.key')
      expect(await swarmKeyMain(['node', 'flora', 'swarm-key', file])).toBe(0)
      await readSwarmKey(file)
      expect(await swarmKeyMain(['node', 'flora', 'swarm-key', file])).toBe(1)
      expect(out.join('')).toMatch(/already exists/)
      expect(await swarmKeyMain(['node', 'flora', 'swarm-key', file, '--force'])).toBe(0)
      const identity = join(dir, 'id', 'peer.key')
      out.length = 0
      expect(await swarmKeyMain(['node', 'flora', 'id', '--identity', identity])).toBe(0)
      const printed = out.join('').trim().split('\n').at(-1)
      out.length = 0
      expect(await swarmKeyMain(['node', 'flora', 'id', '-i', identity])).toBe(0)
      expect(out.join('').trim()).toBe(printed)
      expect(printed).toMatch(/^12D3KooW[1-9A-HJ-NP-Za-km-z]+$/)
    } finally {
      process.stdout.write = write
      process.stderr.write = errWrite
    }
  })
})

describe('members files', () => {
  it('reads one id per line (comments, names) or a JSON array, sorted and unique', async () => {
    const ids = await testPeerIds('closed-file', 2)
    expect(parseMembers(`# our federation\n${ids[1]}  alice\n\n${ids[0]} # bob\n${ids[1]}\n`)).toEqual([...ids].sort())
    expect(parseMembers(JSON.stringify([ids[1], ids[0]]))).toEqual([...ids].sort())
    expect(() => parseMembers('# nobody\n', 'm.txt')).toThrow(/m\.txt lists no peer ids/)
    expect(() => parseMembers(`${ids[0]}\nnot-a-peer-id\n`, 'm.txt')).toThrow(/m\.txt:2: 'not-a-peer-id' is not a peer id/)
    expect(() => parseMembers('[1, 2]', 'm.json')).toThrow(/expected a JSON array of peer id strings/)
    await expect(readMembersFile('/nonexistent/members.txt')).rejects.toThrow(SwarmConfigError)
  })

  it('--members sets the config\'s members (and so the swarm id); a --config with other members conflicts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flora-members-'))
    try {
      const ids = await testPeerIds('closed-file', 3)
      const file = join(dir, 'members.txt')
      await writeFile(file, `${ids.join('\n')}\n`)
      const open = await setupPeer({ trainer: 'synthetic', rank: 2, alpha: 4, configOnly: true })
      const closed = await setupPeer({ trainer: 'synthetic', rank: 2, alpha: 4, configOnly: true, membersFile: file })
      expect(open.config.members).toBeUndefined()
      expect(closed.config.members).toEqual([...ids].sort())
      expect({ ...closed.config, members: undefined }).toEqual({ ...open.config, members: undefined })
      const configFile = join(dir, 'swarm.json')
      await writeFile(configFile, JSON.stringify(closed.config))
      const again = await setupPeer({ trainer: 'synthetic', rank: 2, alpha: 4, configOnly: true, configFile, membersFile: file })
      expect(again.config).toEqual(closed.config)
      await writeFile(file, `${ids[0]}\n`)
      await expect(setupPeer({ trainer: 'synthetic', rank: 2, alpha: 4, configOnly: true, configFile, membersFile: file })).rejects.toThrow(
        /lists other peers than the members in/,
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('a private network (same swarm key) runs rounds; hosts without the key cannot connect', () => {
  let swarm: TestSwarm
  const key = generateSwarmKey()
  const others: FloraPeer[] = []

  beforeAll(async () => {
    swarm = await startTestSwarm({ ranks: [2, 4], rounds: 1, idSeed: 'pnet', swarm: { round: ROUND }, peerOptions: () => ({ swarmKey: key }) })
  })

  afterAll(async () => {
    await Promise.all(others.map((p) => p.stop()))
    await swarm?.stop()
  })

  it('two peers with the same key complete a round', async () => {
    await Promise.all(swarm.peers.map((p) => waitForEvent(p, 'done', () => true, 20_000)))
    const [a, b] = swarm.peers.map((p) => p.records.all())
    expect(a.map((r) => r.round)).toEqual([1])
    expect(b[0].stateHash).toBe(a[0].stateHash)
    expect([...a[0].contributors].sort()).toEqual(swarm.peers.map((p) => p.peerId).sort())
  })

  it('a peer with another key cannot connect, either way', async () => {
    const stranger = await outsider('pnet-other-key', { swarmKey: generateSwarmKey() })
    others.push(stranger)
    expect(await connects(stranger, swarm.peers[0])).toBe(false)
    expect(await connects(swarm.peers[0], stranger)).toBe(false)
  })

  it('a peer without a key cannot connect, either way', async () => {
    const stranger = await outsider('pnet-no-key')
    others.push(stranger)
    expect(await connects(stranger, swarm.peers[1])).toBe(false)
    expect(await connects(swarm.peers[1], stranger)).toBe(false)
    expect(swarm.peers[1].libp2p.getConnections(stranger.libp2p.peerId)).toHaveLength(0)
  })
})

describe('a member list: the gater refuses other peer ids; members run', () => {
  let swarm: TestSwarm
  let members: string[]
  const others: FloraPeer[] = []

  beforeAll(async () => {
    members = await testPeerIds('closed-m', 2)
    const { config } = syntheticSwarm({ round: ROUND })
    const closed = makeSwarmConfig({ ...config, members })
    swarm = await startTestSwarm({ ranks: [2, 4], rounds: 1, idSeed: 'closed-m', swarm: { round: ROUND }, peerOptions: () => ({ config: closed }) })
  })

  afterAll(async () => {
    await Promise.all(others.map((p) => p.stop()))
    await swarm?.stop()
  })

  it('the listed peers complete a round', async () => {
    await Promise.all(swarm.peers.map((p) => waitForEvent(p, 'done', () => true, 20_000)))
    const [a, b] = swarm.peers.map((p) => p.records.all())
    expect(a.map((r) => r.round)).toEqual([1])
    expect(b[0].stateHash).toBe(a[0].stateHash)
    expect([...a[0].contributors].sort()).toEqual([...members].sort())
  })

  it('a peer not on the list cannot connect (refused inbound), and is not dialled', async () => {
    // The stranger holds the same closed config (it may dial members), but is not on the list.
    const stranger = await outsider('closed-m-stranger', { members })
    others.push(stranger)
    expect(members).not.toContain(stranger.peerId)
    expect(await connects(stranger, swarm.peers[0])).toBe(false)
    expect(swarm.peers[0].libp2p.getConnections(stranger.libp2p.peerId)).toHaveLength(0)
    // Members do not dial it (by id or by address).
    await expect(swarm.peers[1].libp2p.dial(stranger.libp2p.peerId, { signal: AbortSignal.timeout(5000) })).rejects.toThrow()
    expect(await connects(swarm.peers[1], stranger)).toBe(false)
    // An open-swarm peer fares no better.
    const open = await outsider('closed-m-open')
    others.push(open)
    expect(await connects(open, swarm.peers[1])).toBe(false)
  })

  it('createPeer refuses to bootstrap through a non-member', async () => {
    const { config, weights } = syntheticSwarm({ round: ROUND })
    const id = peerIdFromPrivateKey(await identityFromSeed('closed-m-x')).toString()
    await expect(
      createPeer({
        config: makeSwarmConfig({ ...config, members }),
        weights,
        rank: 2,
        trainer: syntheticTrainer({ samples: 10, steps: 1 }),
        bootstrap: [`/ip4/127.0.0.1/tcp/1/p2p/${id}`],
      }),
    ).rejects.toThrow(PeerOptionsError)
  })
})
