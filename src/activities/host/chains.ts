import { walkChainFiles } from '../../inspect/qcow2-header';

/**
 * Absolute paths of the chain the qcow2 headers describe from `leafPath` down, leaf first. `openedRaw`: the
 * domain's XML opens the leaf raw (its <driver type>), so a leaf that is not qcow2 is raw, as QEMU opens it,
 * and needs no qemu-img probe (the leaf after an active commit into a raw base).
 */
export async function walkLeafChain(leafPath: string, openedRaw = false): Promise<string[]> {
  return (await walkChainFiles(leafPath, openedRaw)).files;
}
