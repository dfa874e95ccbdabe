/**
 * WebGPU in Node: the optional `webgpu` package (Google's Dawn, binaries in the package)
 * provides `navigator.gpu`, on which tfjs's WebGPU backend (`@tensorflow/tfjs-backend-webgpu`)
 * trains the model. Dawn reaches the GPU through Vulkan on Linux (the GPU vendor's Vulkan
 * driver, and the loader libvulkan.so.1), Metal on macOS and D3D12 on Windows.
 *
 * `openWebgpu` finds an adapter, says why when there is none (no `webgpu` package, no Vulkan
 * loader, no adapter), and tells a software renderer (SwiftShader, llvmpipe/lavapipe) from a
 * GPU: `auto` backend selection only takes a real GPU, `--backend webgpu` takes either.
 *
 * Without a GPU, Chromium's own Vulkan loader and SwiftShader ICD serve as a software
 * adapter, which is how the tests run this path here:
 *   LD_LIBRARY_PATH=/usr/lib/chromium VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json
 */
import { existsSync } from 'node:fs'
import path from 'node:path'

/** What the adapter says it is (WebGPU's GPUAdapterInfo) and whether it renders in software. */
export interface WebgpuAdapterInfo {
  readonly vendor: string
  readonly architecture: string
  readonly description: string
  /** A CPU renderer (SwiftShader, llvmpipe, lavapipe, or an adapter marked fallback): slower than the CPU backends. */
  readonly software: boolean
}

/** Why there is no WebGPU adapter in this process, in words a user can act on. */
export class NoWebgpuAdapterError extends Error {
  override name = 'NoWebgpuAdapterError'
}

interface AdapterLike {
  readonly info?: { vendor?: string; architecture?: string; description?: string; device?: string; isFallbackAdapter?: boolean }
  readonly isFallbackAdapter?: boolean
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: 'high-performance' | 'low-power' }): Promise<AdapterLike | null>
}

const SOFTWARE = /swiftshader|llvmpipe|lavapipe|software|microsoft basic render/i

/** Whether an adapter computes on the CPU. */
export function isSoftwareAdapter(info: Omit<WebgpuAdapterInfo, 'software'> & { device?: string; isFallbackAdapter?: boolean }): boolean {
  if (info.isFallbackAdapter === true) return true
  return SOFTWARE.test([info.vendor, info.architecture, info.description, info.device ?? ''].join(' '))
}

/**
 * Where the Vulkan loader would be found on Linux (LD_LIBRARY_PATH, then the usual library
 * folders), or undefined. Dawn needs it to reach any GPU on Linux; checking first keeps Dawn
 * from printing its own warning on every machine without Vulkan.
 */
export function findVulkanLoader(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const triplet = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu'
  const dirs = [
    ...(env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== ''),
    `/lib/${triplet}`,
    `/usr/lib/${triplet}`,
    '/lib64',
    '/usr/lib64',
    '/lib',
    '/usr/lib',
    '/usr/local/lib',
    '/run/opengl-driver/lib',
  ]
  for (const d of dirs) {
    const f = path.join(d, 'libvulkan.so.1')
    if (existsSync(f)) return f
  }
  return undefined
}

let cached: { gpu: GpuLike; adapter: WebgpuAdapterInfo } | undefined

/**
 * This process's WebGPU: `navigator.gpu` where it exists (a browser, or a runtime that has
 * it), else the `webgpu` package's Dawn, installed as `navigator.gpu` once an adapter is
 * found (tfjs's WebGPU backend looks for it there). Throws NoWebgpuAdapterError saying why
 * when there is no adapter. `requireHardware` refuses a software renderer, naming it.
 */
export async function openWebgpu(options: { readonly requireHardware?: boolean } = {}): Promise<WebgpuAdapterInfo> {
  if (cached === undefined) cached = await findAdapter()
  const a = cached.adapter
  if (options.requireHardware === true && a.software) {
    throw new NoWebgpuAdapterError(
      `the only WebGPU adapter is a software renderer (${describeAdapter(a)}), slower than the CPU backends; --backend webgpu uses it anyway`,
    )
  }
  const nav = globalThis.navigator as { gpu?: unknown } | undefined
  if (nav === undefined) Object.defineProperty(globalThis, 'navigator', { value: { gpu: cached.gpu }, configurable: true })
  else if (nav.gpu === undefined) Object.defineProperty(nav, 'gpu', { value: cached.gpu, configurable: true })
  return a
}

/** `google swiftshader (SwiftShader driver 5.0.0)`. */
export function describeAdapter(a: WebgpuAdapterInfo): string {
  const name = [a.vendor, a.architecture].filter((s) => s !== '').join(' ') || 'unnamed adapter'
  return a.description !== '' ? `${name} (${a.description})` : name
}

async function findAdapter(): Promise<{ gpu: GpuLike; adapter: WebgpuAdapterInfo }> {
  let gpu = (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu
  if (gpu === undefined) {
    if (process.platform === 'linux' && findVulkanLoader() === undefined) {
      throw new NoWebgpuAdapterError(
        'no WebGPU adapter: the Vulkan loader (libvulkan.so.1) is not installed, so no GPU can be reached ' +
          "(install your GPU's Vulkan driver: NVIDIA's driver ships one; Mesa's mesa-vulkan-drivers for AMD and Intel; and libvulkan1)",
      )
    }
    let dawn: { create(options: string[]): GpuLike; globals: object }
    try {
      // A variable specifier keeps bundlers from pulling the optional native package in.
      const specifier: string = 'webgpu'
      dawn = (await import(specifier)) as typeof dawn
    } catch (err) {
      throw new NoWebgpuAdapterError(`the optional package 'webgpu' (Dawn) is not installed or failed to load (${firstLine(err)}); npm install webgpu`)
    }
    // GPUBufferUsage, GPUMapMode, ... are globals in a browser; tfjs's WebGPU backend reads them.
    for (const [k, v] of Object.entries(dawn.globals)) if (!(k in globalThis)) Object.defineProperty(globalThis, k, { value: v, configurable: true, writable: true })
    gpu = dawn.create([])
  }
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' })
  if (adapter == null) {
    throw new NoWebgpuAdapterError(
      process.platform === 'linux'
        ? 'no WebGPU adapter: Vulkan loads but offers no device Dawn can use (is the GPU\'s Vulkan driver installed? `vulkaninfo --summary` lists the devices)'
        : 'no WebGPU adapter: the platform offers no GPU device',
    )
  }
  const i = adapter.info ?? {}
  const info = {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    description: i.description ?? '',
    device: i.device ?? '',
    isFallbackAdapter: i.isFallbackAdapter ?? adapter.isFallbackAdapter,
  }
  return {
    gpu,
    adapter: { vendor: info.vendor, architecture: info.architecture, description: info.description, software: isSoftwareAdapter(info) },
  }
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]
}
