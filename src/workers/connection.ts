import { NativeConnection } from '@temporalio/worker';
import type { Config } from '../config';
import { temporalConnectionOptions } from '../config';

export async function connectWorker(
  config: Pick<Config, 'temporalAddress' | 'temporalTls' | 'temporalApiKey'>,
): Promise<NativeConnection> {
  return await NativeConnection.connect(temporalConnectionOptions(config));
}
