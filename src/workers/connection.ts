import { NativeConnection } from '@temporalio/worker';
import type { Config } from '../config';

export async function connectWorker(config: Pick<Config, 'temporalAddress'>): Promise<NativeConnection> {
  return await NativeConnection.connect({ address: config.temporalAddress });
}
