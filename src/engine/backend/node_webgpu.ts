/**
 * WebGPU in Node through Dawn (the `webgpu` package), for tests, benchmarks and the CLI.
 * Node only: browser code must never import this file.
 *
 * Without a GPU, Dawn's Vulkan backend can run on SwiftShader, the software Vulkan driver that
 * Debian's `chromium` package ships beside its own Vulkan loader.
 */
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';

/** Where Debian's `chromium` package puts SwiftShader's Vulkan ICD manifest. */
export const CHROMIUM_SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** glibc's RTLD_NODELETE, which Node's `os.constants.dlopen` does not list. */
const RTLD_NODELETE = 0x1000;

/**
 * Puts Dawn on `navigator.gpu` (and the WebGPU classes and constants on `globalThis`) when it
 * can give an adapter, and answers whether it did. Never throws. Where VK_ICD_FILENAMES is
 * unset and chromium's SwiftShader is installed, it points Vulkan at SwiftShader, which also
 * hides any hardware Vulkan driver: set VK_ICD_FILENAMES yourself to use a real GPU.
 */
export async function installNodeWebGPU(): Promise<boolean> {
  try {
    const existing = navigatorObject()?.gpu as GPU | undefined;
    if (existing != null) return (await existing.requestAdapter()) != null;

    // Vulkan reads these when Dawn creates its instance, which happens in create() below.
    if (process.env.VK_ICD_FILENAMES == null && existsSync(CHROMIUM_SWIFTSHADER_ICD)) {
      process.env.VK_ICD_FILENAMES = CHROMIUM_SWIFTSHADER_ICD;
    }
    preloadVulkanLoader(process.env.VK_ICD_FILENAMES);

    const { create, globals } = await import('webgpu');
    const gpu = create([]);
    if ((await gpu.requestAdapter()) == null) return false;
    Object.assign(globalThis, globals);
    setNavigatorGpu(gpu);
    return true;
  } catch {
    return false;
  }
}

function navigatorObject(): Record<string, unknown> | undefined {
  return (globalThis as unknown as { navigator?: Record<string, unknown> }).navigator;
}

/**
 * Node 20 has no `navigator`; Node 21+ has one behind a read-only accessor on `globalThis`,
 * whose object may not take new properties. Both cases end with a navigator that has `gpu`.
 */
function setNavigatorGpu(gpu: GPU): void {
  const nav = navigatorObject();
  if (nav != null) {
    try {
      Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true, writable: true });
      return;
    } catch {
      // Not extensible: shadow it below with an object that inherits everything else.
    }
  }
  const replacement = nav != null ? Object.create(nav) : {};
  Object.defineProperty(replacement, 'gpu', { value: gpu, configurable: true, writable: true });
  Object.defineProperty(globalThis, 'navigator', { value: replacement, configurable: true, writable: true });
}

/**
 * Dawn opens the Vulkan loader as plain `libvulkan.so.1`. Debian's chromium ships its own loader
 * beside SwiftShader rather than depending on `libvulkan1`, so on a machine without that package
 * Dawn would find no Vulkan. glibc answers a by-name dlopen with an already-loaded library of the
 * same soname, so loading chromium's copy first (kept resident with RTLD_NODELETE, since Node
 * closes a library that is not an addon) lets Dawn find it. LD_LIBRARY_PATH cannot do this from
 * inside the process: the dynamic linker reads it only at start-up.
 */
function preloadVulkanLoader(icd: string | undefined): void {
  if (process.platform !== 'linux' || icd == null || !existsSync(icd)) return;
  const flags = constants.dlopen.RTLD_NOW | constants.dlopen.RTLD_GLOBAL | RTLD_NODELETE;
  if (dlopenLibrary('libvulkan.so.1', flags)) return;
  const beside = join(dirname(icd), 'libvulkan.so.1');
  if (existsSync(beside)) dlopenLibrary(beside, flags);
}

/** Whether the shared library is now loaded; Node reports a non-addon as "did not self-register". */
function dlopenLibrary(file: string, flags: number): boolean {
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, file, flags);
    return true;
  } catch (e) {
    return e instanceof Error && e.message.includes('did not self-register');
  }
}
