import { walkChainFiles } from '../../inspect/qcow2-header';

/**
 * Absolute paths of the chain the qcow2 headers describe from `leafPath` down, leaf first. `openedRaw`: the
 * domain's XML opens the leaf raw (opensLeafRaw), so a leaf with no qcow2 magic is raw, as QEMU opens it, and
 * needs no qemu-img probe (the leaf after an active commit into a raw base).
 */
export async function walkLeafChain(leafPath: string, openedRaw = false): Promise<string[]> {
  return (await walkChainFiles(leafPath, openedRaw)).files;
}
