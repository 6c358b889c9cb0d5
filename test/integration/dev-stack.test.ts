// `livemerge dev up | status | down` as a user runs it: real processes, free ports, a temp data dir.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config';
import { isAlive } from '../../src/devstack/processes';
import { temporalCliPath } from '../../src/devstack/temporal-server';
import { freePort, processesMentioning } from '../helpers/procs';

const exec = promisify(execFile);

describe('dev stack', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  it('up starts Temporal, the engine and a host agent; status reports them; down stops exactly those', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-dev-'));
    const grpc = await freePort();
    const ui = await freePort();
    const env = {
      ...process.env,
      LIVEMERGE_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS: `127.0.0.1:${grpc}`,
      LIVEMERGE_UI_PORT: String(ui),
      LIVEMERGE_HOST_ID: `devtest-${grpc}`,
    };
    const cli = (...args: string[]) =>
      exec(process.execPath, [path.join(REPO_ROOT, 'bin/livemerge.cjs'), ...args], { env });
    cleanups.push(() => fs.rm(dataDir, { recursive: true, force: true }));
    cleanups.push(() => cli('dev', 'down'));

    const up = await cli('dev', 'up');
    expect(up.stdout).toMatch(/dev stack healthy in [\d.]+ s/);
    const status = JSON.parse((await cli('dev', 'status', '--json')).stdout) as Array<{
      part: string;
      state: string;
    }>;
    expect(
      status
        .filter((p) => ['temporal', 'engine worker', `host-devtest-${grpc} worker`].includes(p.part))
        .map((p) => p.state),
    ).toEqual(['running', 'running', 'running']);
    // The installed Temporal CLI answers, and the UI serves.
    await exec(temporalCliPath(), ['workflow', 'list', '--address', `127.0.0.1:${grpc}`, '--limit', '1']);
    expect((await fetch(`http://127.0.0.1:${ui}/`)).status).toBe(200);
    // The smoke workflow through the real host agent.
    const vms = JSON.parse((await cli('vm', 'list', '--json')).stdout) as { hostId: string };
    expect(vms.hostId).toBe(`devtest-${grpc}`);
    // A second up changes nothing.
    expect((await cli('dev', 'up')).stdout).toMatch(
      /temporal: already running[\s\S]*engine worker: already running/,
    );

    const ours = await processesMentioning(dataDir);
    expect(ours.length).toBeGreaterThanOrEqual(1);
    const down = await cli('dev', 'down');
    expect(down.stdout).toMatch(/libvirtd: not started by dev up, left alone/);
    expect(await processesMentioning(dataDir)).toEqual([]);
    for (const pid of ours) expect(isAlive(pid)).toBe(false);
    // libvirtd was running before and is still running.
    await exec('virsh', ['-q', '-c', 'qemu:///system', 'list']);
  });
});
