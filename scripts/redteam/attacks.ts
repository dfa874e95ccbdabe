/**
 * The red-team cases: each one joins an attacker to a fresh honest swarm after round 1 and
 * abuses one wire protocol (gossip messages, /flora/hello, /flora/payload, /flora/sync).
 */
import { createServer, type Server } from 'node:net'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey, Stream } from '@libp2p/interface'
import * as lp from 'it-length-prefixed'
import { multiaddr } from '@multiformats/multiaddr'
import { canonicalBytes, type CanonicalValue } from '../../src/gossip/canonical.js'
import { HELLO_PROTOCOL } from '../../src/gossip/hello.js'
import type { ManifestEntry, SignedAnnouncement } from '../../src/gossip/messages.js'
import { PAYLOAD_PROTOCOL } from '../../src/gossip/payload.js'
import { signAnnouncement } from '../../src/gossip/sign.js'
import { SYNC_PROTOCOL } from '../../src/gossip/sync.js'
import { identityFromSeed } from '../../src/node/identity.js'
import { proposerOrder } from '../../src/node/proposer.js'
import { makeSwarmConfig } from '../../src/node/config.js'
import { benignAdapter, fakeHelloPeers, nonFiniteAdapter, poisonAdapter, sha256, type Attacker } from './attacker.js'
import type { AttackCase, CaseContext } from './run.js'
import { sleep } from './honest.js'

const hex = (ctx: CaseContext): string => {
  let s = ''
  for (let i = 0; i < 8; i++) s += ctx.rng.nextUint32().toString(16).padStart(8, '0')
  return s
}

async function joined(ctx: CaseContext, label = 'attacker', options?: Parameters<CaseContext['attacker']>[1]): Promise<Attacker> {
  const a = await ctx.attacker(label, options)
  await a.join(ctx.swarm.peers.map((p) => p.addr as string))
  ctx.log(`${label} ${a.peerId.slice(-8)} joined`)
  return a
}

/** Announces a benign adapter for the round (and serves it): what makes the attacker a recorded member. */
async function contribute(ctx: CaseContext, a: Attacker, round: number, parent: string): Promise<SignedAnnouncement> {
  const ad = benignAdapter(a.config, 4, `${ctx.seed}:benign:${round}`)
  const ann = await a.announce(round, parent, ad.bytes, { rank: ad.rank, alpha: ad.alpha, samples: 100 })
  await a.publish(ann)
  return ann
}

/** Keys of fake authors, generated once per process (deterministic). */
let fakeKeys: Promise<PrivateKey[]> | undefined
let fakeKeysN = 0
function fakeAuthors(n: number, seed: number): Promise<PrivateKey[]> {
  if (fakeKeys == null || fakeKeysN < n) {
    fakeKeysN = n
    fakeKeys = Promise.all(Array.from({ length: n }, (_, i) => identityFromSeed(`redteam:${seed}:fake:${i}`)))
  }
  return fakeKeys.then((k) => k.slice(0, n))
}

async function signedEntries(ctx: CaseContext, keys: PrivateKey[], round: number, parent: string): Promise<ManifestEntry[]> {
  const swarmId = ctx.swarm.swarmId
  const entries: ManifestEntry[] = []
  for (const key of keys) {
    const author = peerIdFromPrivateKey(key).toString()
    const ann = await signAnnouncement(key, {
      swarmId,
      round,
      parentStateHash: parent,
      author,
      rank: 4,
      alpha: 8,
      samples: 100,
      payloadHash: sha256(new TextEncoder().encode(author)),
      payloadSize: 4096,
    })
    entries.push({ peerId: author, payloadHash: ann.body.payloadHash, payloadSize: 4096, rank: 4, alpha: 8, samples: 100, sig: ann.sig })
  }
  return entries.sort((x, y) => (x.peerId < y.peerId ? -1 : 1))
}

/** Checks `cond` every 100 ms until it holds (true) or `timeoutMs` passes (false). */
async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > end) return false
    await sleep(100)
  }
  return true
}

function waitForSwarmEnd(ctx: CaseContext): Promise<void> {
  return Promise.all(ctx.swarm.peers.map((p) => p.exited)).then(() => {})
}

export const baseline: AttackCase = {
  name: 'baseline',
  description: 'clean swarm, no attacker: the reference for round times and lost rounds',
  async run(ctx) {
    await waitForSwarmEnd(ctx)
  },
}

export const manifestFlood: AttackCase = {
  name: 'manifest-flood',
  description: '40 manifests of 4,096 validly signed entries: 20 for an out-of-window round, 20 for the current round from a non-proposer (hijack)',
  rounds: 10,
  // Slower honest rounds: the attacker needs a few seconds to sign 8,192 entries ahead of the round.
  trainDelayMs: 1500,
  flood: true,
  async run(ctx) {
    const keys = await fakeAuthors(4096, ctx.seed)
    const a = await joined(ctx)
    // Signing 8,192 entries takes seconds: sign for a round well ahead, then publish when it runs.
    // (Entries verify against the manifest's own round and parent, so the honest peers pay
    // every signature check before they can tell the parent or the turn is wrong.)
    const target = ctx.current().round + 4
    const t0 = Date.now()
    const hijackParent = hex(ctx)
    const hijackEntries = await signedEntries(ctx, keys, target, hijackParent)
    const farEntries = await signedEntries(ctx, keys, target + 20, hex(ctx))
    ctx.note('signMs', Date.now() - t0)
    const msgs = []
    for (let i = 0; i < 20; i++) msgs.push(await a.manifest({ round: target, view: 0, parentStateHash: hijackParent, entries: hijackEntries, newStateHash: hex(ctx) }))
    for (let i = 0; i < 20; i++) msgs.push(await a.manifest({ round: target + 20, view: 0, parentStateHash: hex(ctx), entries: farEntries, newStateHash: hex(ctx) }))
    ctx.note('manifestBytes', canonicalBytes(msgs[0] as unknown as CanonicalValue).byteLength)
    const now = await ctx.swarm.roundStarted(target, 30_000)
    if (now == null) throw new Error('the swarm stopped before the hijack round')
    ctx.note('hijackRound', { signedFor: target, runningAtPublish: now.round })
    if (now.round !== target) throw new Error(`round ${target} had passed (round ${now.round} runs) before the flood was signed: nothing was tested`)
    ctx.attacked(target, '20 hijack manifests x 4096 entries')
    ctx.attacked(now.round, '20 out-of-window manifests x 4096 entries')
    let ok = 0
    for (const m of msgs) if (await a.publish(m)) ok++
    ctx.tried('manifests (4096 signed entries each)', msgs.length)
    ctx.note('published', ok)
    await sleep(8000)
    ctx.endWindow()
  },
}

/** A small hijack: one validly signed manifest of `entries` entries for the running round from a non-proposer. */
export function hijackCase(entries = 64): AttackCase {
  return {
    name: 'manifest-hijack',
    description: `a validly signed manifest with ${entries} signed entries for the running round, from a non-member (not its turn)`,
    rounds: 5,
    async run(ctx) {
      const a = await joined(ctx)
      const keys = await fakeAuthors(entries, ctx.seed)
      const r = await ctx.nextRound()
      if (r == null) throw new Error('no round')
      const signed = await signedEntries(ctx, keys, r.round, r.parent)
      await a.publish(await a.manifest({ round: r.round, view: 0, parentStateHash: r.parent, entries: signed, newStateHash: hex(ctx) }))
      ctx.tried('hijack manifests')
      ctx.attacked(r.round, 'hijack manifest')
      await waitForSwarmEnd(ctx)
      const committedOurs = ctx.swarm.peers.some((p) => p.events.some((e) => e.event === 'round:complete' && e.proposer === a.peerId))
      ctx.target('hijack decides nothing', !committedOurs, committedOurs ? 'a round committed the hijacker\'s manifest' : 'no round committed it')
    },
  }
}

export const wrongStateHash: AttackCase = {
  name: 'wrong-state-hash',
  description: 'the attacker contributes to become a recorded member, then proposes manifests with a wrong new state hash (in its own turn: costs a replay and a view change; out of turn: refused cheaply)',
  rounds: 10,
  async run(ctx) {
    const a = await joined(ctx)
    let asProposer = 0
    let outOfTurn = 0
    const proposerRounds: number[] = []
    for (;;) {
      const r = await ctx.nextRound()
      if (r == null || r.round > ctx.swarm.o.rounds) break
      const ownAnn = await contribute(ctx, a, r.round, r.parent)
      const order = proposerOrder(r.round, r.members)
      const mine = order[0] === a.peerId
      if (mine) {
        // Wait for the honest announcements, then propose them all with a wrong state hash.
        await sleep(ctx.swarm.o.trainDelayMs + 300)
        const anns = a.heard.filter((h) => h.msg.kind === 'announce' && h.msg.body.round === r.round && h.msg.body.parentStateHash === r.parent)
        const entries = [...new Map(anns.map((h) => [(h.msg as SignedAnnouncement).body.author, a.entry(h.msg as SignedAnnouncement)])).values()]
        entries.push(a.entry(ownAnn))
        const sorted = [...new Map(entries.map((e) => [e.peerId, e])).values()].sort((x, y) => (x.peerId < y.peerId ? -1 : 1))
        await a.publish(await a.manifest({ round: r.round, view: 0, parentStateHash: r.parent, entries: sorted, newStateHash: hex(ctx) }))
        asProposer++
        proposerRounds.push(r.round)
        ctx.attacked(r.round, 'wrong-state-hash manifest as the proposer of view 0')
      } else {
        await a.publish(await a.manifest({ round: r.round, view: 0, parentStateHash: r.parent, entries: [], newStateHash: hex(ctx) }))
        outOfTurn++
        ctx.attacked(r.round, 'wrong-state-hash manifest out of turn')
      }
      if (asProposer >= 2) break
    }
    ctx.tried('wrong-hash manifests as proposer', asProposer)
    ctx.tried('wrong-hash manifests out of turn', outOfTurn)
    ctx.note('proposerRounds', proposerRounds)
    if (asProposer === 0) ctx.note('warning', 'the attacker never held view 0 in the rounds run (seeded proposer order): only the out-of-turn variant was tried')
  },
}

export const poison: AttackCase = {
  name: 'poison-adapter',
  description: 'a signed announcement and served payload whose A/B entries are +-1e15..1e30 and samples 2^31-1, every round',
  rounds: 7,
  poison: true,
  async run(ctx) {
    const a = await joined(ctx)
    for (let i = 0; i < 4; i++) {
      const r = await ctx.nextRound()
      if (r == null || r.round > ctx.swarm.o.rounds) break
      const ad = poisonAdapter(a.config, 8, `${ctx.seed}:poison:${r.round}`)
      await a.publish(await a.announce(r.round, r.parent, ad.bytes, { rank: ad.rank, alpha: ad.alpha, samples: 2 ** 31 - 1 }))
      ctx.tried('poison adapters')
      ctx.attacked(r.round, 'poison adapter')
    }
    await waitForSwarmEnd(ctx)
  },
}

export const nonFinite: AttackCase = {
  name: 'nan-adapter',
  description: 'a signed announcement whose served payload holds NaN, +Inf and -Inf',
  rounds: 6,
  async run(ctx) {
    const a = await joined(ctx)
    for (let i = 0; i < 2; i++) {
      const r = await ctx.nextRound()
      if (r == null || r.round > ctx.swarm.o.rounds) break
      const ad = nonFiniteAdapter(a.config, 4, `${ctx.seed}:nan:${r.round}`)
      await a.publish(await a.announce(r.round, r.parent, ad.bytes, { rank: ad.rank, alpha: ad.alpha, samples: 100 }))
      ctx.tried('non-finite adapters')
      ctx.attacked(r.round, 'NaN/Inf adapter')
    }
    await waitForSwarmEnd(ctx)
    const merged = ctx.swarm.peers.some((p) => p.events.some((e) => e.event === 'round:complete' && (e.contributors ?? []).includes(a.peerId)))
    ctx.target('non-finite adapter never merged', !merged, merged ? 'an honest round merged it' : 'never in a committed round')
  },
}

export const equivocation: AttackCase = {
  name: 'equivocation',
  description: 'two different announcements for one round; then empty manifests for rounds r and r+1 at once',
  rounds: 7,
  async run(ctx) {
    const a = await joined(ctx)
    const r = await ctx.nextRound()
    if (r == null) throw new Error('no round')
    const x = benignAdapter(a.config, 4, `${ctx.seed}:eq:a`)
    const y = benignAdapter(a.config, 4, `${ctx.seed}:eq:b`)
    await a.publish(await a.announce(r.round, r.parent, x.bytes, { rank: 4, alpha: x.alpha, samples: 100 }))
    await a.publish(await a.announce(r.round, r.parent, y.bytes, { rank: 4, alpha: y.alpha, samples: 100 }))
    ctx.tried('conflicting announcements', 2)
    ctx.attacked(r.round, 'two announcements')
    const s = await ctx.nextRound()
    if (s == null) throw new Error('no round')
    await a.publish(await a.manifest({ round: s.round, view: 0, parentStateHash: s.parent, entries: [], newStateHash: s.parent }))
    await a.publish(await a.manifest({ round: s.round + 1, view: 0, parentStateHash: s.parent, entries: [], newStateHash: s.parent }))
    ctx.tried('empty manifests (r, r+1)', 2)
    ctx.attacked(s.round, 'empty manifest')
    ctx.attacked(s.round + 1, 'empty manifest (sent one round early)')
    await waitForSwarmEnd(ctx)
  },
}

export const helloAddrs: AttackCase = {
  name: 'hello-addrs',
  description: 'a hello listing 128 fake members x 16 addresses (2,048) on 127.0.0.1 ports that accept and drop: honest outbound dials and RSS',
  rounds: 8,
  flood: true,
  async run(ctx) {
    // Counting listeners: every honest dial to a listed address lands here and is dropped.
    let accepts = 0
    const servers: Server[] = []
    const ports: number[] = []
    for (let i = 0; i < 64; i++) {
      const srv = createServer((sock) => {
        accepts++
        sock.destroy()
      })
      await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()))
      servers.push(srv)
      ports.push((srv.address() as { port: number }).port)
    }
    ctx.cleanup(() => Promise.all(servers.map((s) => new Promise<void>((res) => s.close(() => res())))).then(() => {}))
    const ids = (await Promise.all(Array.from({ length: 128 }, (_, i) => identityFromSeed(`redteam:${ctx.seed}:ghost:${i}`)))).map((k) => peerIdFromPrivateKey(k).toString())
    const peers = fakeHelloPeers(ids, ports, 16)
    const a = await ctx.attacker('attacker', { hello: (own) => ({ ...own, peers }) })
    const t0 = Date.now()
    await a.join(ctx.swarm.peers.map((p) => p.addr as string))
    ctx.tried('hello addresses', 2048)
    ctx.attacked(ctx.current().round, 'hello with 2048 addresses')
    const timeline: Array<{ s: number; dials: number }> = []
    for (let i = 0; i < 10; i++) {
      await sleep(1000)
      timeline.push({ s: Math.round((Date.now() - t0) / 1000), dials: accepts })
    }
    ctx.endWindow()
    ctx.note('honestDialsToListedAddrs', accepts)
    ctx.note('dialTimeline', timeline)
    ctx.note('dialsPerHonestPeerPerListedAddr', accepts / (ctx.swarm.peers.length * 2048))
  },
}

/** Payload lies, one round per mode (the full case: wrong bytes, wrong size, silence). */
export function payloadLiesCase(modes: ReadonlyArray<'wrong-bytes' | 'wrong-size' | 'silent'> = ['wrong-bytes', 'wrong-size', 'silent']): AttackCase {
  return {
  name: 'payload-lies',
  description: 'announce, then serve wrong bytes / a wrong size / nothing (a stream that never answers), one round each: how long the honest round waits',
  rounds: 8,
  async run(ctx) {
    const a = await joined(ctx)
    const affected: Array<{ mode: string; round: number }> = []
    for (const mode of modes) {
      const r = await ctx.nextRound()
      if (r == null || r.round > ctx.swarm.o.rounds) break
      const ad = benignAdapter(a.config, 4, `${ctx.seed}:lie:${mode}`)
      const serve = mode === 'silent' ? { mode } : { mode, bytes: ad.bytes }
      await a.publish(await a.announce(r.round, r.parent, ad.bytes, { rank: 4, alpha: ad.alpha, samples: 100, serve }))
      ctx.tried(`announce + serve ${mode}`)
      ctx.attacked(r.round, `payload lie: ${mode}`)
      affected.push({ mode, round: r.round })
    }
    await waitForSwarmEnd(ctx)
    // The clean baseline's median round; without one, this run's own unattacked rounds (after round 1).
    const lieRounds = new Set(affected.map((x) => x.round))
    const clean = ctx.swarm.peers[0].events
      .filter((e) => e.event === 'round:complete' && (e.round ?? 0) > 1 && !lieRounds.has(e.round ?? 0) && !lieRounds.has((e.round ?? 0) - 1) && e.synced == null)
      .map((e) => e.metrics?.roundMs ?? 0)
      .sort((x, y) => x - y)
    const base = ctx.baselineRoundMs ?? clean[Math.floor(clean.length / 2)] ?? null
    const times = affected.map(({ mode, round }) => {
      const ms = Math.max(0, ...ctx.swarm.peers.map((p) => p.events.find((e) => e.event === 'round:complete' && e.round === round && e.synced == null)?.metrics?.roundMs ?? 0))
      return { mode, round, roundMs: ms, extraMs: base != null ? ms - base : null }
    })
    ctx.note('lieRounds', times)
    ctx.note('payloadServed', a.served)
    // Wrong bytes or a wrong size are caught on arrival; a server that says nothing can only
    // be told from a slow one by time: it is given up on after a grace period of silence.
    const silentBudget = ctx.swarm.o.graceMs
    const allowed = (mode: string): number => (mode === 'silent' ? silentBudget + 250 : 250)
    const worst = times.map((t) => ({ ...t, extra: t.extraMs ?? t.roundMs })).reduce((a, b) => (b.extra - allowed(b.mode) > a.extra - allowed(a.mode) ? b : a), { mode: 'none', extra: 0, round: 0, roundMs: 0, extraMs: 0 })
    ctx.target(
      `lying payload costs < 250 ms over a clean round (silent: < grace ${silentBudget} ms + 250 ms)`,
      times.every((t) => (t.extraMs ?? t.roundMs) < allowed(t.mode)),
      `worst: ${worst.mode} +${worst.extra} ms over the baseline median (${base ?? '?'} ms), not the ${ctx.swarm.o.deadlineMs} ms deadline`,
    )
    const merged = ctx.swarm.peers.some((p) => p.events.some((e) => e.event === 'round:complete' && (e.contributors ?? []).includes(a.peerId)))
    ctx.target('lying payload never merged', !merged, merged ? 'merged' : 'never merged')
  },
}
}

export const payloadLies = payloadLiesCase()

export const silentMember: AttackCase = {
  name: 'silent-member',
  description: 'contributes once (so it is a recorded member), then stays connected and subscribed and says nothing',
  rounds: 8,
  async run(ctx) {
    const a = await joined(ctx)
    const r = await ctx.nextRound()
    if (r == null) throw new Error('no round')
    await contribute(ctx, a, r.round, r.parent)
    ctx.tried('contribution, then silence')
    ctx.attacked(r.round, 'contributes')
    for (let k = r.round + 1; k <= ctx.swarm.o.rounds; k++) ctx.attacked(k, 'silent')
    await waitForSwarmEnd(ctx)
    const waited = []
    for (let k = r.round + 1; k <= ctx.swarm.o.rounds; k++) {
      const ms = Math.max(0, ...ctx.swarm.peers.map((p) => p.events.find((e) => e.event === 'round:complete' && e.round === k && e.synced == null)?.metrics?.roundMs ?? 0))
      waited.push({ round: k, roundMs: ms, waitedForSilent: ms >= ctx.swarm.o.deadlineMs - 200 })
    }
    ctx.note('silentRounds', waited)
    ctx.note('memberRounds', ctx.swarm.peers[0]?.events.filter((e) => e.event === 'round:complete').map((e) => ({ round: e.round, attackerRecorded: (e.members ?? []).includes(a.peerId) })))
  },
}

/** Opens `n` streams of `protocol` to every honest peer; counts those opened and refused. */
async function openMany(ctx: CaseContext, a: Attacker, protocol: string, n: number, onOpen?: (s: Stream) => Promise<void> | void): Promise<{ opened: number; refused: number; streams: Stream[] }> {
  let opened = 0
  let refused = 0
  const streams: Stream[] = []
  await Promise.all(
    ctx.swarm.peers.flatMap((p) =>
      Array.from({ length: n }, async () => {
        try {
          const s = await a.openStream(p.peerId, protocol)
          opened++
          streams.push(s)
          await onOpen?.(s)
        } catch {
          refused++
        }
      }),
    ),
  )
  return { opened, refused, streams }
}

export const floodHello: AttackCase = {
  name: 'flood-hello',
  description: '500 hello handshakes per honest peer at once',
  rounds: 8,
  flood: true,
  async run(ctx) {
    const a = await joined(ctx)
    ctx.attacked(ctx.current().round, 'hello flood')
    let answered = 0
    let failed = 0
    await Promise.all(ctx.swarm.peers.flatMap((p) => Array.from({ length: 500 }, () => a.sayHello(p.peerId).then(() => answered++, () => failed++))))
    ctx.tried('hellos', 500 * ctx.swarm.peers.length)
    ctx.note('hellosAnswered', answered)
    ctx.note('hellosFailed', failed)
    await sleep(2000)
    ctx.endWindow()
  },
}

export const floodStreams: AttackCase = {
  name: 'flood-streams',
  description: '300 streams each of /flora/payload, /flora/sync and /flora/hello per honest peer, opened and left silent',
  rounds: 8,
  flood: true,
  async run(ctx) {
    const a = await joined(ctx)
    ctx.attacked(ctx.current().round, 'stream flood')
    const res: Record<string, { opened: number; refused: number }> = {}
    for (const proto of [PAYLOAD_PROTOCOL, SYNC_PROTOCOL, HELLO_PROTOCOL]) {
      const { opened, refused } = await openMany(ctx, a, proto, 300)
      res[proto] = { opened, refused }
      ctx.tried(`${proto} streams`, 300 * ctx.swarm.peers.length)
    }
    ctx.note('streams', res)
    await sleep(12_000)
    ctx.endWindow()
  },
}

export const floodGossip: AttackCase = {
  name: 'flood-gossip',
  description: '1,500 rejected gossip messages (malformed, bad signatures, forged authors): do honest peers lower the sender\'s score (prune it from their mesh)?',
  rounds: 8,
  flood: true,
  async run(ctx) {
    const a = await joined(ctx)
    // The mesh forms on gossipsub heartbeats (1 s), later on a loaded machine: the score
    // can only be seen falling once the attacker is in some honest peer's mesh.
    const meshed = await until(() => a.meshPeers().length > 0, 20_000)
    if (!meshed) throw new Error('the attacker never entered an honest peer\'s mesh: the score test cannot run')
    const before = a.meshPeers().length
    const r = ctx.current()
    ctx.attacked(r.round, 'gossip spam')
    const honest = ctx.swarm.peers[0].peerId
    let sent = 0
    for (let i = 0; i < 500; i++) {
      if (await a.publish(new TextEncoder().encode(`{"kind":"announce","junk":${i}`))) sent++
      const body = { swarmId: a.swarmId, round: r.round, parentStateHash: r.parent, author: a.peerId, rank: 4, alpha: 8, samples: 100, payloadHash: hex(ctx), payloadSize: 4096 }
      if (await a.publish({ kind: 'announce', body, sig: Buffer.from(hex(ctx) + hex(ctx), 'hex').toString('base64') })) sent++
      if (await a.publish({ kind: 'announce', body: { ...body, author: honest }, sig: Buffer.from(hex(ctx) + hex(ctx), 'hex').toString('base64') })) sent++
    }
    ctx.tried('malformed messages', 500)
    ctx.tried('bad-signature announcements', 500)
    ctx.tried('forged-author announcements', 500)
    ctx.note('published', sent)
    // A negative score prunes us on the honest peers' next heartbeats (later on a loaded machine).
    await until(() => a.meshPeers().length < before, 15_000)
    const after = a.meshPeers().length
    ctx.note('attackerMeshPeers', { before, after })
    ctx.endWindow()
    ctx.target('rejected spam lowers the sender\'s gossipsub score', after < before, `attacker's mesh on the swarm topic: ${before} honest peers before, ${after} after (honest peers prune a negative-score peer)`)
  },
}

export const slowloris: AttackCase = {
  name: 'slowloris',
  description: '50 streams each of /flora/payload, /flora/sync and /flora/hello per honest peer, writing one byte per second for 15 s',
  rounds: 8,
  flood: true,
  async run(ctx) {
    const a = await joined(ctx)
    ctx.attacked(ctx.current().round, 'slowloris')
    const all: Array<{ proto: string; s: Stream; alive: boolean; diedAt: number | null }> = []
    for (const proto of [PAYLOAD_PROTOCOL, SYNC_PROTOCOL, HELLO_PROTOCOL]) {
      const { streams, refused } = await openMany(ctx, a, proto, 50)
      for (const s of streams) all.push({ proto, s, alive: true, diedAt: null })
      ctx.tried(`${proto} slow streams`, 50 * ctx.swarm.peers.length)
      if (refused > 0) ctx.note(`${proto} refused`, refused)
    }
    // A request frame that is never finished: a 1000-byte length prefix, then its bytes, one per second.
    const prefix = lp.encode.single(new Uint8Array(1000)).subarray(0, 2)
    const t0 = Date.now()
    for (const x of all) {
      try {
        x.s.send(prefix)
      } catch {
        x.alive = false
        x.diedAt = 0
      }
    }
    for (let sec = 1; sec <= 15; sec++) {
      await sleep(1000)
      for (const x of all) {
        if (!x.alive) continue
        if (x.s.status !== 'open' || x.s.writeStatus !== 'writable') {
          x.alive = false
          x.diedAt = Date.now() - t0
          continue
        }
        try {
          x.s.send(Uint8Array.of(0x20))
        } catch {
          x.alive = false
          x.diedAt = Date.now() - t0
        }
      }
    }
    const byProto: Record<string, { open: number; closedByHonest: number; medianClosedAfterMs: number | null }> = {}
    for (const proto of new Set(all.map((x) => x.proto))) {
      const l = all.filter((x) => x.proto === proto)
      const died = l.filter((x) => !x.alive).map((x) => x.diedAt as number).sort((p, q) => p - q)
      byProto[proto] = { open: l.length, closedByHonest: died.length, medianClosedAfterMs: died[Math.floor(died.length / 2)] ?? null }
    }
    ctx.note('slowStreams', byProto)
    const survivors = all.filter((x) => x.alive).length
    ctx.target('slow streams are cut off', survivors === 0, `${survivors} of ${all.length} slow streams still open after 15 s`)
    ctx.endWindow()
  },
}

export const replay: AttackCase = {
  name: 'replay',
  description: 'records every gossip message (announcements, proposals, votes, commits) of two rounds and publishes them again two rounds later',
  rounds: 9,
  async run(ctx) {
    const a = await joined(ctx)
    const first = await ctx.nextRound()
    if (first == null) throw new Error('no round')
    await ctx.nextRound()
    await ctx.nextRound()
    const old = a.heard.filter((h) => {
      const r = h.msg.kind === 'commit' ? h.msg.manifest.body.round : h.msg.body.round
      return r >= first.round && r <= first.round + 1
    })
    const now = await ctx.nextRound()
    if (now == null) throw new Error('no round')
    ctx.attacked(now.round, `replay of ${old.length} messages of rounds ${first.round}-${first.round + 1}`)
    const kinds: Record<string, number> = {}
    for (const h of old) {
      await a.publish(h.raw)
      kinds[h.msg.kind] = (kinds[h.msg.kind] ?? 0) + 1
    }
    for (const [k, n] of Object.entries(kinds)) ctx.tried(`replayed ${k}`, n)
    await waitForSwarmEnd(ctx)
  },
}

export const notAllowlisted: AttackCase = {
  name: 'not-allowlisted',
  description: 'closed swarm (members allowlist): a peer with the right swarm id but not on the list joins and announces every round; a peer of another swarm says hello',
  rounds: 7,
  allowlist: true,
  async run(ctx) {
    let a: Attacker
    try {
      a = await joined(ctx)
      ctx.note('attackerJoined', true)
    } catch (err) {
      // Refused at the handshake / never subscribed to: the allowlist works. It still tries to announce.
      ctx.note('attackerJoined', `no: ${(err as Error).message}`)
      a = (await ctx.attacker('attacker-2'))
      await Promise.all(ctx.swarm.peers.map((p) => a.node.dial(multiaddr(p.addr as string)).catch(() => null)))
      a.node.services.pubsub.subscribe(a.topic)
      await sleep(1500)
    }
    const other = await ctx.attacker('other-swarm', { config: makeSwarmConfig({ ...ctx.swarm.config, name: 'evil' }) })
    const addrs = ctx.swarm.peers.map((p) => p.addr as string)
    await Promise.all(addrs.map(async (addr, i) => {
      try {
        await other.node.dial(multiaddr(addr))
        await other.sayHello(ctx.swarm.peers[i].peerId)
      } catch {
        // refused: expected
      }
    }))
    ctx.tried('wrong-swarm hellos', addrs.length)
    for (let i = 0; i < 3; i++) {
      const r = await ctx.nextRound()
      if (r == null || r.round > ctx.swarm.o.rounds) break
      await contribute(ctx, a, r.round, r.parent)
      ctx.tried('announcements by a non-member')
      ctx.attacked(r.round, 'non-allowlisted announcement')
    }
    await sleep(1000)
    const joinedAsMember = ctx.swarm.peers.filter((p) => p.events.some((e) => e.event === 'member:join' && e.peerId === a.peerId)).length
    const merged = ctx.swarm.peers.some((p) => p.events.some((e) => e.event === 'round:complete' && (e.contributors ?? []).includes(a.peerId)))
    // Refused: reported as wrong-swarm after the hello, or no connection left at all (refused before the hello).
    const wrongSwarm = ctx.swarm.peers.filter(
      (p) =>
        p.events.some((e) => e.event === 'peer:rejected' && e.peerId === other.peerId && e.reason === 'wrong-swarm') ||
        (other.node.getConnections(peerIdFromString(p.peerId)).length === 0 && !p.events.some((e) => e.event === 'member:join' && e.peerId === other.peerId)),
    ).length
    ctx.target('non-allowlisted peer is not a member', joinedAsMember === 0, `${joinedAsMember} honest peer(s) emitted member:join for it`)
    ctx.target('non-allowlisted peer never merged', !merged, merged ? 'its adapter was merged' : 'never merged')
    ctx.target('other-swarm peer refused', wrongSwarm === ctx.swarm.peers.length, `${wrongSwarm}/${ctx.swarm.peers.length} honest peers refused it (wrong-swarm rejection, or no connection left)`)
    await waitForSwarmEnd(ctx)
  },
}

export const ATTACKS: AttackCase[] = [
  manifestFlood,
  wrongStateHash,
  poison,
  nonFinite,
  equivocation,
  helloAddrs,
  payloadLies,
  silentMember,
  floodHello,
  floodStreams,
  floodGossip,
  slowloris,
  replay,
  notAllowlisted,
]
