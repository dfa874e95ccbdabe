#!/usr/bin/env node
// Plain JS on purpose: the Node version guard must run before anything that needs Node 22.
import './check-node.js'

const { runCli } = await import('./run-cli.js')
await runCli('flora', 'model/cli')
