import { walkQcow2Chain } from '../../inspect/qcow2-chain';

/** Absolute paths of the chain the qcow2 headers describe from `leafPath` down, leaf first. */
export async function walkLeafChain(leafPath: string): Promise<string[]> {
  const walked = await walkQcow2Chain(leafPath);
  return walked.entries.map((e) => e.filename);
}
