/**
 * The `code` of an error after which this process's (or this worker's) training backend
 * cannot be used again: the tfjs wasm module aborted (its heap ran out). Whoever owns the
 * backend starts a new one (setupPeerInWorker replaces its worker).
 */
export const BACKEND_DEAD = 'FLORA_BACKEND_DEAD'
