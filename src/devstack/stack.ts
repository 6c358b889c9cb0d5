// `livemerge dev up|down|status`: the local stack as background processes with pid files and logs.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import type { Config } from '../config';
import { REPO_ROOT } from '../config';
import { ENGINE_TASK_QUEUE, hostTaskQueue } from '../common/task-queues';
import { pollerCount, temporalHealthy, waitFor } from './health';
import { ProcessRegistry, isAlive } from './processes';
import { devServerArgs, splitAddress, temporalCliPath } from './temporal-server';

export interface PartStatus {
  part: string;
  state: 'running' | 'stopped' | 'external';
  pid?: number;
  detail: string;
}

const CLI = path.join(REPO_ROOT, 'bin', 'livemerge.cjs');

function uiPort(): number {
  return Number(process.env.LIVEMERGE_UI_PORT ?? 8233);
}

function daemonPid(name: 'libvirtd' | 'virtlogd'): number | undefined {
  try {
    const pid = Number(fs.readFileSync(`/run/${name}.pid`, 'utf8').trim());
    return isAlive(pid, name) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export async function devUp(config: Config, log: (line: string) => void): Promise<void> {
  const reg = new ProcessRegistry(config.dataDir);
  const t0 = Date.now();

  for (const daemon of ['virtlogd', 'libvirtd'] as const) {
    if (daemonPid(daemon) !== undefined) {
      log(`${daemon}: already running`);
      continue;
    }
    execFileSync(daemon, ['-d']);
    const pid = daemonPid(daemon);
    if (pid === undefined) throw new Error(`${daemon} did not start`);
    reg.adopt(daemon, pid, daemon);
    log(`${daemon}: started (pid ${pid})`);
  }

  const { host, port } = splitAddress(config.temporalAddress);
  if (await temporalHealthy(config.temporalAddress, config.temporalNamespace)) {
    log(`temporal: already running at ${config.temporalAddress}`);
  } else {
    fs.mkdirSync(config.dataDir, { recursive: true });
    const dbFile = path.join(config.dataDir, 'temporal.sqlite');
    const pid = reg.start({
      name: 'temporal',
      command: temporalCliPath(),
      args: devServerArgs({ dbFile, host, port, uiPort: uiPort(), namespace: config.temporalNamespace }),
      marker: dbFile,
    });
    await waitFor(
      'the Temporal dev server',
      () => temporalHealthy(config.temporalAddress, config.temporalNamespace),
      60_000,
    );
    log(
      `temporal: started (pid ${pid}), gRPC ${config.temporalAddress}, UI http://localhost:${uiPort()}, db ${dbFile}`,
    );
  }

  const connection = await Connection.connect({ address: config.temporalAddress });
  try {
    const workers = [
      { name: 'engine', args: ['worker', 'engine'], queue: ENGINE_TASK_QUEUE, kind: 'workflow' as const },
      {
        name: `host-${config.hostId}`,
        args: ['worker', 'host', '--host-id', config.hostId, '--storage'],
        queue: hostTaskQueue(config.hostId),
        kind: 'activity' as const,
      },
    ];
    for (const w of workers) {
      const running = reg.running(w.name);
      if (running !== undefined) {
        log(`${w.name} worker: already running (pid ${running})`);
        continue;
      }
      const pid = reg.start({ name: w.name, command: process.execPath, args: [CLI, ...w.args], marker: CLI });
      await waitFor(
        `the ${w.name} worker to poll ${w.queue}`,
        async () => {
          if (!isAlive(pid)) throw new Error(`${w.name} worker exited; see ${reg.logFile(w.name)}`);
          return (await pollerCount(connection, config.temporalNamespace, w.queue, w.kind)) > 0;
        },
        60_000,
      );
      log(`${w.name} worker: started (pid ${pid}), polling ${w.queue}`);
    }
  } finally {
    await connection.close();
  }
  log(
    `dev stack healthy in ${((Date.now() - t0) / 1000).toFixed(1)} s; logs in ${path.join(config.dataDir, 'logs')}`,
  );
}

const PARTS_IN_STOP_ORDER = (config: Config) => [
  `host-${config.hostId}`,
  'engine',
  'temporal',
  'libvirtd',
  'virtlogd',
];

export async function devDown(config: Config, log: (line: string) => void): Promise<void> {
  const reg = new ProcessRegistry(config.dataDir);
  for (const part of PARTS_IN_STOP_ORDER(config)) {
    const stopped = await reg.stop(part);
    log(`${part}: ${stopped ? 'stopped' : 'not started by dev up, left alone'}`);
  }
}

export async function devStatus(config: Config): Promise<PartStatus[]> {
  const reg = new ProcessRegistry(config.dataDir);
  const out: PartStatus[] = [];
  for (const daemon of ['virtlogd', 'libvirtd'] as const) {
    const ours = reg.running(daemon);
    const pid = daemonPid(daemon);
    out.push({
      part: daemon,
      state: pid === undefined ? 'stopped' : ours !== undefined ? 'running' : 'external',
      ...(pid !== undefined ? { pid } : {}),
      detail:
        pid === undefined
          ? 'not running'
          : ours !== undefined
            ? 'started by dev up'
            : 'running, not started by dev up',
    });
  }
  const healthy = await temporalHealthy(config.temporalAddress, config.temporalNamespace);
  const tpid = reg.running('temporal');
  out.push({
    part: 'temporal',
    state: healthy ? (tpid !== undefined ? 'running' : 'external') : 'stopped',
    ...(tpid !== undefined ? { pid: tpid } : {}),
    detail: healthy
      ? `healthy at ${config.temporalAddress}, UI http://localhost:${uiPort()}`
      : 'not answering',
  });
  const connection = healthy ? await Connection.connect({ address: config.temporalAddress }) : undefined;
  try {
    for (const [name, queue, kind] of [
      ['engine', ENGINE_TASK_QUEUE, 'workflow'],
      [`host-${config.hostId}`, hostTaskQueue(config.hostId), 'activity'],
    ] as const) {
      const pid = reg.running(name);
      const pollers = connection ? await pollerCount(connection, config.temporalNamespace, queue, kind) : 0;
      out.push({
        part: `${name} worker`,
        state: pid !== undefined ? 'running' : 'stopped',
        ...(pid !== undefined ? { pid } : {}),
        detail: `${queue}: ${pollers} poller(s) seen recently`,
      });
    }
  } finally {
    await connection?.close();
  }
  return out;
}
