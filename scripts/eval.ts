/**
 * Evaluation harness entry point: `npm run eval -- --help`.
 * Simulates K clients in one process and compares aggregation strategies (src/eval).
 */
import { main } from '../src/eval/cli.js'

process.exitCode = await main(process.argv.slice(2))
