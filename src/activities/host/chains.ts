import { walkChainFiles } from '../../inspect/qcow2-header';

/** Absolute paths of the chain the qcow2 headers describe from `leafPath` down, leaf first. */
export async function walkLeafChain(leafPath: string): Promise<string[]> {
  return (await walkChainFiles(leafPath)).files;
}
