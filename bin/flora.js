#!/usr/bin/env node
// Plain JS on purpose: the Node version guard must run before anything that needs Node 22.
import './check-node.js'

const { runCli } = await import('./run-cli.js')
// `flora export` (reads a peer's state dir), `flora swarm-key` and `flora id` (closed
// federations) are the node layer's; the other commands are the model layer's.
const NODE_COMMANDS = new Map([
  ['export', 'node/export-command'],
  ['swarm-key', 'node/swarm-key'],
  ['id', 'node/swarm-key'],
])
await runCli('flora', NODE_COMMANDS.get(process.argv[2]) ?? 'model/cli')
