#!/usr/bin/env node
// Plain JS on purpose: the Node version guard must run before anything that needs Node 22.
import './check-node.js'

const { runCli } = await import('./run-cli.js')
// `flora export` reads a peer's state dir (node layer); the other commands are the model layer's.
await runCli('flora', process.argv[2] === 'export' ? 'node/export-command' : 'model/cli')
