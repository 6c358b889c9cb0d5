// `livemerge dev up|down|status`: the local stack as background processes with pid files and logs.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import type { Config } from '../config';
import { REPO_ROOT, temporalConnectionOptions } from '../config';
import { ENGINE_TASK_QUEUE, hostTaskQueue } from '../common/task-queues';
import { pollerCount, temporalHealthy, waitFor } from './health';
import type { DevHost } from './hosts';
import { hostsEnv, planDevHosts, readDevHosts, removeDevHosts, writeDevHosts } from './hosts';
import { ProcessRegistry, daemonPid, isAlive } from './processes';
import { simHostPid, simHostRunning, startSimHost, stopSimHost } from './sim-host';
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

/** The system daemon's pid (its pid file in /run; a sim host's daemons have their own). */
function systemDaemonPid(name: 'libvirtd' | 'virtlogd'): number | undefined {
  return daemonPid(`/run/${name}.pid`, name);
}

/** `dev up` asked for other hosts than the running stack has: nothing was changed. */
export class DevStackConflict extends Error {
  override readonly name = 'DevStackConflict';
}

export interface DevUpOptions {
  /** Number of hosts (default: those of the running stack, else 1): host 1 is the system libvirtd. */
  hosts?: number;
  /** The host whose agent holds the storage role (default host 1). */
  storageHost?: string;
}

/** The hosts of the stack as `dev up` recorded them; a stack from before dev-hosts.json has one host. */
export function stackHosts(config: Config): DevHost[] {
  return readDevHosts(config.dataDir) ?? planDevHosts(config, 1);
}

/** Whether an engine, an agent or a sim host of a stack started by `dev up` still runs. */
function stackRunning(config: Config, reg: ProcessRegistry, hosts: DevHost[]): boolean {
  return (
    reg.running('engine') !== undefined ||
    hosts.some(
      (h) => reg.running(`host-${h.id}`) !== undefined || (h.dir !== undefined && simHostRunning(h.dir)),
    )
  );
}

function sameHosts(a: DevHost[], b: DevHost[]): boolean {
  const key = (hs: DevHost[]) => JSON.stringify(hs.map((h) => [h.id, h.uri, h.storage, h.dir ?? null]));
  return key(a) === key(b);
}

export async function devUp(
  config: Config,
  log: (line: string) => void,
  opts: DevUpOptions = {},
): Promise<void> {
  const reg = new ProcessRegistry(config.dataDir);
  const t0 = Date.now();

  // A running stack keeps its hosts: changing them means new LIVEMERGE_HOSTS for the engine and every agent,
  // so it is `dev down` first, never a half-changed stack.
  const recorded = readDevHosts(config.dataDir);
  const current = recorded ?? planDevHosts(config, 1);
  const hosts = planDevHosts(
    config,
    opts.hosts ?? current.length,
    opts.storageHost ?? (opts.hosts === undefined ? current.find((h) => h.storage)?.id : undefined),
  );
  if (!sameHosts(hosts, current) && stackRunning(config, reg, current))
    throw new DevStackConflict(
      `a dev stack with host(s) ${describeHosts(current)} is running; ` +
        `run \`livemerge dev down\` first to start one with ${describeHosts(hosts)}`,
    );
  writeDevHosts(config.dataDir, hosts);

  for (const daemon of ['virtlogd', 'libvirtd'] as const) {
    if (systemDaemonPid(daemon) !== undefined) {
      log(`${daemon}: already running`);
      continue;
    }
    execFileSync(daemon, ['-d']);
    const pid = systemDaemonPid(daemon);
    if (pid === undefined) throw new Error(`${daemon} did not start`);
    reg.adopt(daemon, pid, daemon);
    log(`${daemon}: started (pid ${pid})`);
  }
  for (const [i, h] of hosts.entries()) {
    if (h.dir === undefined) continue;
    const was = simHostRunning(h.dir);
    const sim = await startSimHost({ dir: h.dir, index: i + 1 });
    log(
      `host ${h.id}: libvirtd ${was ? 'already running' : 'started'} at ${sim.uri} (host UUID ${sim.hostUuid})`,
    );
  }

  const { host, port } = splitAddress(config.temporalAddress);
  if (await temporalHealthy(temporalConnectionOptions(config), config.temporalNamespace)) {
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
      () => temporalHealthy(temporalConnectionOptions(config), config.temporalNamespace),
      60_000,
    );
    log(
      `temporal: started (pid ${pid}), gRPC ${config.temporalAddress}, UI http://localhost:${uiPort()}, db ${dbFile}`,
    );
  }

  const connection = await Connection.connect(temporalConnectionOptions(config));
  try {
    const shared = hostsEnv(hosts);
    const workers = [
      {
        name: 'engine',
        args: ['worker', 'engine'],
        queue: ENGINE_TASK_QUEUE,
        kind: 'workflow' as const,
        env: { ...process.env, ...shared, ...metricsEnv(config, 0) },
      },
      ...hosts.map((h, i) => ({
        name: `host-${h.id}`,
        args: ['worker', 'host', '--host-id', h.id, ...(h.storage ? ['--storage'] : [])],
        queue: hostTaskQueue(h.id),
        kind: 'activity' as const,
        env: {
          ...process.env,
          ...shared,
          ...metricsEnv(config, i + 1),
          LIBVIRT_DEFAULT_URI: h.uri,
          LIVEMERGE_HOST_ID: h.id,
        },
      })),
    ];
    for (const w of workers) {
      const running = reg.running(w.name);
      if (running !== undefined) {
        log(`${w.name} worker: already running (pid ${running})`);
        continue;
      }
      const pid = reg.start(
        { name: w.name, command: process.execPath, args: [CLI, ...w.args], marker: CLI },
        w.env,
      );
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

function describeHosts(hosts: DevHost[]): string {
  return hosts.map((h) => (h.storage ? `${h.id} (storage)` : h.id)).join(', ');
}

/** Sim host dirs: those recorded, and any under <dataDir>/hosts/ (a stack whose up failed half-way). */
function simHostDirs(config: Config, hosts: DevHost[]): string[] {
  const dirs = new Set(hosts.flatMap((h) => (h.dir === undefined ? [] : [h.dir])));
  const root = path.join(config.dataDir, 'hosts');
  for (const e of fs.existsSync(root) ? fs.readdirSync(root) : []) dirs.add(path.join(root, e));
  return [...dirs];
}

export async function devDown(config: Config, log: (line: string) => void): Promise<void> {
  const reg = new ProcessRegistry(config.dataDir);
  const hosts = stackHosts(config);
  const agents = new Set([...hosts.map((h) => `host-${h.id}`), `host-${config.hostId}`]);
  for (const name of reg.names()) if (name.startsWith('host-')) agents.add(name);
  for (const part of [...agents, 'engine', 'temporal']) {
    const stopped = await reg.stop(part);
    log(`${part}: ${stopped ? 'stopped' : 'not started by dev up, left alone'}`);
  }
  for (const dir of simHostDirs(config, hosts)) {
    const id = hosts.find((h) => h.dir === dir)?.id ?? dir;
    log(`host ${id}: libvirtd ${(await stopSimHost(dir)) ? 'stopped' : 'not running'}`);
  }
  for (const part of ['libvirtd', 'virtlogd']) {
    const stopped = await reg.stop(part);
    log(`${part}: ${stopped ? 'stopped' : 'not started by dev up, left alone'}`);
  }
  removeDevHosts(config.dataDir);
}

export async function devStatus(config: Config): Promise<PartStatus[]> {
  const reg = new ProcessRegistry(config.dataDir);
  const hosts = stackHosts(config);
  const out: PartStatus[] = [];
  for (const daemon of ['virtlogd', 'libvirtd'] as const) {
    const ours = reg.running(daemon);
    const pid = systemDaemonPid(daemon);
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
  for (const h of hosts) {
    if (h.dir === undefined) continue;
    const pid = simHostPid(h.dir);
    out.push({
      part: `libvirtd ${h.id}`,
      state: pid === undefined ? 'stopped' : 'running',
      ...(pid !== undefined ? { pid } : {}),
      detail: `sim host ${h.uri}`,
    });
  }
  const healthy = await temporalHealthy(temporalConnectionOptions(config), config.temporalNamespace);
  const tpid = reg.running('temporal');
  out.push({
    part: 'temporal',
    state: healthy ? (tpid !== undefined ? 'running' : 'external') : 'stopped',
    ...(tpid !== undefined ? { pid: tpid } : {}),
    detail: healthy
      ? `healthy at ${config.temporalAddress}, UI http://localhost:${uiPort()}`
      : 'not answering',
  });
  const connection = healthy ? await Connection.connect(temporalConnectionOptions(config)) : undefined;
  try {
    for (const [name, queue, kind, what] of [
      ['engine', ENGINE_TASK_QUEUE, 'workflow', ''] as const,
      ...hosts.map(
        (h) =>
          [
            `host-${h.id}`,
            hostTaskQueue(h.id),
            'activity',
            `${h.storage ? ', storage role' : ''}, ${h.uri}`,
          ] as const,
      ),
    ]) {
      const pid = reg.running(name);
      const pollers = connection ? await pollerCount(connection, config.temporalNamespace, queue, kind) : 0;
      out.push({
        part: `${name} worker`,
        state: pid !== undefined ? 'running' : 'stopped',
        ...(pid !== undefined ? { pid } : {}),
        detail: `${queue}: ${pollers} poller(s) seen recently${what}`,
      });
    }
  } finally {
    await connection?.close();
  }
  return out;
}

/**
 * The dev stack's workers share one machine, so one LIVEMERGE_METRICS_ADDRESS (host:P) cannot be everyone's:
 * the engine serves on P and the n-th host's agent on P+n.
 */
function metricsEnv(config: Pick<Config, 'metricsAddress'>, offset: number): Record<string, string> {
  const a = config.metricsAddress;
  if (!a) return {};
  const colon = a.lastIndexOf(':');
  const port = Number(a.slice(colon + 1)) + offset;
  if (port > 65535) throw new Error(`LIVEMERGE_METRICS_ADDRESS ${a}: no port left for worker ${offset}`);
  return { LIVEMERGE_METRICS_ADDRESS: `${a.slice(0, colon)}:${port}` };
}
