/**
 * Before the suite, under CI only (CI=true): where no Chromium exists and this is a Debian
 * machine run as root, install Debian's `chromium`, so the browser tests (WebGPU in a tab) and
 * the Node WebGPU tests (Chromium's SwiftShader Vulkan driver) run instead of skipping. CI runs
 * exactly the README's two commands, so this is where that install can happen. Elsewhere the
 * tests that need Chromium skip, saying why (`apt-get install -y chromium`).
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { findChromium } from '../scripts/browser-tab.js'

export default function setup(): void {
  if (process.env.CI !== 'true' || findChromium() !== undefined) return
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) {
    console.warn('CI: no Chromium and no way to install it here (needs root and apt-get): the browser and WebGPU tests will skip')
    return
  }
  console.log('CI: installing Debian\'s chromium for the browser and WebGPU tests (apt-get install -y chromium)')
  const run = (args: string[]) => spawnSync('apt-get', args, { stdio: 'inherit', timeout: 10 * 60_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  const update = run(['update', '-qq'])
  const install = update.status === 0 ? run(['install', '-y', '-qq', 'chromium']) : update
  if (install.status !== 0 || findChromium() === undefined) console.warn(`CI: installing chromium failed (exit ${install.status}): the browser and WebGPU tests will skip`)
}
