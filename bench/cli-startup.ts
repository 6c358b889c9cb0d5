// How fast does the `livemerge` CLI start? From one run, side by side, each measured from just before the
// bench spawns the process: bare `node -e 0` (the anchor), `livemerge --help`, a command's own help
// (`chain --help`: no Temporal, no libvirt) and the time at which a real command's first RPC leaves
// (`status <id>` of an id that does not exist: Connection.connect's first request, then a describe). The
// first RPC is timed at a TCP relay in front of the Temporal frontend: the first byte the CLI sends on its
// connection (the HTTP/2 preface and the request's headers, written together). Each livemerge row runs
// bin/livemerge.cjs with the compiled dist/ (as after scripts/setup.sh) and with the sources through tsx
// (LIVEMERGE_CLI=tsx, what a stale dist/ falls back to); --baseline BIN adds a column for another checkout's
// bin/livemerge.cjs (e.g. the commit before the fast start). Runs are interleaved, so that load on the machine
// spreads over every column alike.
//
// Temporal: TEMPORAL_ADDRESS if a server answers there (e.g. `npx livemerge dev up`), else a dev server
// started for the run (the set-up's Temporal CLI, as the tests start it); the RPC row is skipped, with the
// reason, if neither works.
//
// Usage: npx tsx bench/cli-startup.ts [runs=20] [--baseline /path/to/other/bin/livemerge.cjs]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { REPO_ROOT, loadConfig, temporalConnectionOptions } from '../src/config';
import { temporalHealthy } from '../src/devstack/health';
import { temporalCliPath } from '../src/devstack/temporal-server';

const BIN = path.join(REPO_ROOT, 'bin', 'livemerge.cjs');

interface Column {
  name: string;
  bin: string;
  env: NodeJS.ProcessEnv;
}

/** Spawns `node args`; resolves with ms from spawn to exit (and the exit code). */
function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ ms: number; code: number | null }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0 && code !== 2) reject(new Error(`node ${args.join(' ')} exited ${code}: ${err}`));
      else resolve({ ms, code });
    });
  });
}

/** A TCP relay to the Temporal frontend that notes when the first byte of each connection arrived. */
async function relay(
  upstream: string,
): Promise<{ port: number; firstByte: () => number[]; close: () => void }> {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(':')), Number(upstream.split(':').pop())];
  const firsts: number[] = [];
  const server = net.createServer((client) => {
    const up = net.connect(port, host);
    client.once('data', () => firsts.push(performance.now()));
    client.pipe(up).pipe(client);
    const end = () => {
      client.destroy();
      up.destroy();
    };
    client.on('error', end);
    up.on('error', end);
    client.on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    firstByte: () => firsts.splice(0),
    close: () => server.close(),
  };
}

/** Ms from spawn to the first byte on the relay. */
async function firstRpc(r: Awaited<ReturnType<typeof relay>>, args: string[], env: NodeJS.ProcessEnv) {
  r.firstByte();
  const t0 = performance.now();
  const { code } = await run(args, env);
  const [first] = r.firstByte();
  if (first === undefined) throw new Error(`node ${args.join(' ')} (exit ${code}) sent nothing to Temporal`);
  return first - t0;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function temporal(): Promise<{ address: string; stop: () => Promise<void> } | string> {
  const config = loadConfig();
  if (await temporalHealthy(temporalConnectionOptions(config), config.temporalNamespace))
    return { address: config.temporalAddress, stop: () => Promise.resolve() };
  const cli = temporalCliPath();
  if (!fs.existsSync(cli))
    return `no Temporal at ${config.temporalAddress} and no ${cli} to start one (bash scripts/setup.sh)`;
  try {
    const env = await TestWorkflowEnvironment.createLocal({
      server: { executable: { type: 'existing-path', path: cli }, extraArgs: ['--log-level', 'error'] },
    });
    return { address: env.address, stop: () => env.teardown() };
  } catch (err) {
    return `no Temporal at ${config.temporalAddress}, and a dev server did not start: ${String(err)}`;
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const b = argv.indexOf('--baseline');
  const baseline = b >= 0 ? argv.splice(b, 2)[1] : undefined;
  const runs = Number(argv[0] ?? 20);
  const fresh = (await run([path.join(REPO_ROOT, 'bin', 'dist-fresh.cjs')], process.env).catch(() => null))
    ?.code;
  if (fresh !== 0) throw new Error('dist/ is missing or older than src/: run bash scripts/build.sh first');

  const base = { ...process.env, LIVEMERGE_CLI: '' };
  const columns: Column[] = [
    { name: 'compiled (dist/)', bin: BIN, env: base },
    { name: 'sources (tsx)', bin: BIN, env: { ...base, LIVEMERGE_CLI: 'tsx' } },
    ...(baseline ? [{ name: `baseline ${baseline}`, bin: baseline, env: base }] : []),
  ];
  const t = await temporal();
  const r = typeof t === 'string' ? null : await relay(t.address);
  const missing = `status merge-disk:bench-${process.pid}`.split(' ');

  const rows: Array<{ name: string; cells: number[][] }> = [
    { name: '`node -e 0`', cells: [[]] },
    { name: '`livemerge --help`', cells: columns.map(() => []) },
    { name: '`livemerge chain --help` (no Temporal)', cells: columns.map(() => []) },
    ...(r ? [{ name: '`livemerge status ID`: first RPC leaves', cells: columns.map(() => []) }] : []),
    ...(r ? [{ name: '`livemerge status ID`: exit (not found, 2 RPCs)', cells: columns.map(() => []) }] : []),
  ];
  await run(['-e', '0'], base); // warm the page cache once for each
  for (const c of columns) await run([c.bin, '--help'], c.env);
  for (let i = 0; i < runs; i++) {
    rows[0]!.cells[0]!.push((await run(['-e', '0'], base)).ms);
    for (const [j, c] of columns.entries()) {
      rows[1]!.cells[j]!.push((await run([c.bin, '--help'], c.env)).ms);
      rows[2]!.cells[j]!.push((await run([c.bin, 'chain', '--help'], c.env)).ms);
      if (r) {
        const env = { ...c.env, TEMPORAL_ADDRESS: `127.0.0.1:${r.port}` };
        rows[3]!.cells[j]!.push(await firstRpc(r, [c.bin, ...missing], env));
        rows[4]!.cells[j]!.push((await run([c.bin, ...missing], env)).ms);
      }
    }
  }
  r?.close();
  if (typeof t !== 'string') await t.stop();

  const cell = (xs: number[] | undefined) =>
    xs?.length ? `${percentile(xs, 50).toFixed(0)} / ${percentile(xs, 95).toFixed(0)}` : '';
  console.log(`ms from spawn, p50 / p95 of ${runs} runs each (node ${process.version})\n`);
  console.log(`| | ${columns.map((c) => c.name).join(' | ')} |`);
  console.log(`| --- | ${columns.map(() => '---').join(' | ')} |`);
  for (const row of rows)
    console.log(`| ${row.name} | ${columns.map((_, j) => cell(row.cells[j])).join(' | ')} |`);
  if (typeof t === 'string') console.log(`\nfirst-RPC rows skipped: ${t}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
