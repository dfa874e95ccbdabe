/** The system's Chromium for browser tests (no browser download here: Debian's `chromium`). */
import { existsSync } from 'node:fs'

/** Debian's chromium (or CHROMIUM_PATH): `apt-get install -y chromium`. */
export function findChromium(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome']
  return candidates.find((p): p is string => p != null && p !== '' && existsSync(p))
}

/** Flags that give headless Chromium a WebGPU adapter on its built-in SwiftShader (no GPU needed). */
export const WEBGPU_SWIFTSHADER_ARGS = ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan']
