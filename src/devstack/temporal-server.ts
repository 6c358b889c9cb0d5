// The real Temporal dev server (the official CLI installed by set-up), persistent on a SQLite file.
import path from 'node:path';
import { SEARCH_ATTRIBUTES } from '../common/search-attributes';
import { REPO_ROOT } from '../config';

export function temporalCliPath(): string {
  return process.env.LIVEMERGE_TEMPORAL_CLI ?? path.join(REPO_ROOT, '.tools', 'venv', 'bin', 'temporal');
}

/**
 * SQLite's write-ahead log, synced at checkpoints rather than at every commit (the dev server's default is
 * a rollback journal synced twice per commit). A killed server loses nothing committed; only a crash of the
 * machine itself can lose the last commits, which a development stack accepts (issue 13: the server's
 * share of the CPU per merge).
 */
const SQLITE_PRAGMAS = ['journal_mode=wal', 'synchronous=normal'];

export function devServerArgs(opts: {
  dbFile: string;
  host: string;
  port: number;
  uiPort: number;
  namespace: string;
}) {
  return [
    'server',
    'start-dev',
    '--db-filename',
    opts.dbFile,
    '--ip',
    opts.host,
    '--port',
    String(opts.port),
    '--ui-port',
    String(opts.uiPort),
    '--namespace',
    opts.namespace,
    ...SEARCH_ATTRIBUTES.flatMap((name) => ['--search-attribute', `${name}=Keyword`]),
    ...SQLITE_PRAGMAS.flatMap((p) => ['--sqlite-pragma', p]),
    '--log-level',
    'warn',
  ];
}

export function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i) || '127.0.0.1', port: Number(address.slice(i + 1)) };
}
