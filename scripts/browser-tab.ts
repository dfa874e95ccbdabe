/**
 * Browser plumbing for the tests and bench/webgpu-train.ts: the system's Chromium (no
 * browser download here: Debian's `chromium`), the model-layer bundle served over HTTP, and
 * a tab that imports it.
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'
import { buildBrowserBundle } from './build-browser.mjs'

/** Debian's chromium (or CHROMIUM_PATH): `apt-get install -y chromium`. */
export function findChromium(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome']
  return candidates.find((p): p is string => p != null && p !== '' && existsSync(p))
}

/** Flags that give headless Chromium a WebGPU adapter on its built-in SwiftShader (no GPU needed). */
export const WEBGPU_SWIFTSHADER_ARGS = ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan']

/** Flags for headless Chromium on the machine's GPU (Vulkan), where it has one. */
export const WEBGPU_GPU_ARGS = ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=vulkan']

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

// __name: tsx/esbuild's keep-names helper, which functions passed to page.evaluate from code
// run by tsx reference; the tab does not define it.
const PAGE = `<!doctype html><meta charset="utf-8"><title>flora</title>
<script>window.__name = (f) => f</script>
<script type="module">import * as flora from '/flora-model.js'; window.flora = flora; document.body.dataset.ready = '1'</script><body></body>`

/** The bundle's exports, as a tab sees them on `window.flora`. */
export type FloraInTab = typeof import('../src/model/browser.js')

export interface WebgpuTab {
  readonly page: Page
  /** Page errors seen so far. */
  readonly errors: string[]
  close(): Promise<void>
}

/**
 * Builds the bundle, serves it and `modelDir`'s config.json and model.safetensors (at
 * /model/...) on 127.0.0.1 (port 0), and opens a tab in headless Chromium with WebGPU on
 * SwiftShader that has imported it.
 */
export async function openWebgpuTab(executablePath: string, modelDir: string, bundleDir: string, args: readonly string[] = WEBGPU_SWIFTSHADER_ARGS): Promise<WebgpuTab> {
  const { outfile } = await buildBrowserBundle(path.join(ROOT, 'dist', bundleDir, 'flora-model.js'))
  const files: Record<string, [string, string]> = {
    '/flora-model.js': [outfile, 'text/javascript'],
    '/model/config.json': [path.join(modelDir, 'config.json'), 'application/json'],
    '/model/model.safetensors': [path.join(modelDir, 'model.safetensors'), 'application/octet-stream'],
  }
  const server: Server = createServer((req, res) => {
    const f = files[req.url ?? '']
    if (req.url === '/') res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE)
    else if (f === undefined) res.writeHead(404).end()
    else
      readFile(f[0]).then(
        (bytes) => res.writeHead(200, { 'content-type': f[1] }).end(bytes),
        () => res.writeHead(500).end(),
      )
  })
  const url = await new Promise<string>((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as { port: number }).port}`)))
  let browser: Browser | undefined
  try {
    browser = await chromium.launch({ executablePath, headless: true, args: [...args] })
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(`${url}/`)
    await page.waitForSelector('body[data-ready="1"]', { state: 'attached', timeout: 30_000 })
    const b = browser
    return {
      page,
      errors,
      close: async () => {
        await b.close()
        await new Promise<void>((resolve) => server.close(() => resolve()))
      },
    }
  } catch (err) {
    await browser?.close()
    server.close()
    throw err
  }
}
