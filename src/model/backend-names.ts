/**
 * The tfjs backends by name, best first; tfjs-free, so command-line parsers can list them
 * without loading a backend (backend.ts selects and starts one).
 */
export type BackendName = 'tensorflow-gpu' | 'webgpu' | 'tensorflow' | 'wasm' | 'cpu'
export type BackendPreference = BackendName | 'auto'

/** The order `auto` tries them in. */
export const BACKEND_ORDER: readonly BackendName[] = ['tensorflow-gpu', 'webgpu', 'tensorflow', 'wasm', 'cpu']

/** What `--backend` accepts. */
export const BACKEND_CHOICES = ['auto', 'tensorflow-gpu', 'webgpu', 'tensorflow', 'wasm', 'cpu'] as const satisfies readonly BackendPreference[]
