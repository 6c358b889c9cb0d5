export {
  parseDomainDiskChains,
  parseDomainName,
  DomainXmlError,
  type ChainEntry,
  type DiskChain,
} from './domain-xml';
export {
  qcow2Chain,
  walkQcow2Chain,
  toChainEntry,
  type Qcow2ChainEntry,
  type WalkedChain,
} from './qcow2-chain';
export {
  compareChains,
  type CompareInput,
  type CompareResult,
  type Disagreement,
  type DisagreementKind,
} from './compare';
export { inspectImage, diskForImage, type ImageInspection, type InspectImageOptions } from './inspect-image';
