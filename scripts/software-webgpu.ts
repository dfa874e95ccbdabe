/**
 * A software WebGPU adapter for Node without a GPU: Chromium ships its own Vulkan loader
 * (libvulkan.so.1) and SwiftShader's Vulkan driver; pointing a Node process at them gives
 * the `webgpu` package (Dawn) an adapter. Tests and benchmarks use it to run `--backend
 * webgpu` on machines like CI's; on a GPU machine nothing of this is needed.
 *
 *   LD_LIBRARY_PATH=/usr/lib/chromium VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json flora train --backend webgpu
 *
 * The loader is found through LD_LIBRARY_PATH, which the dynamic linker reads when a process
 * starts, so this serves a child process, never the running one.
 */
import { existsSync } from 'node:fs'
import path from 'node:path'

const CHROMIUM_LIB_DIRS = ['/usr/lib/chromium', '/usr/lib64/chromium', '/usr/lib/chromium-browser']

/** The environment a child process needs for Chromium's SwiftShader Vulkan, or undefined where no Chromium ships it. */
export function swiftshaderVulkanEnv(): { LD_LIBRARY_PATH: string; VK_ICD_FILENAMES: string } | undefined {
  for (const dir of CHROMIUM_LIB_DIRS) {
    const icd = path.join(dir, 'vk_swiftshader_icd.json')
    if (existsSync(icd) && existsSync(path.join(dir, 'libvulkan.so.1'))) {
      const inherited = process.env.LD_LIBRARY_PATH
      return { LD_LIBRARY_PATH: inherited ? `${dir}:${inherited}` : dir, VK_ICD_FILENAMES: icd }
    }
  }
  return undefined
}
