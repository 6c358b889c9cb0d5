// The Temporal UI, tried in a real browser (issue #11): the UI server of scripts/temporal-ui.sh in front of the
// run's Temporal (in the production stage the cluster, over mutual TLS), headless Chromium from Debian driven
// by playwright-core. A live merge held mid-copy is found in the workflow list by its LivemergeVmId, opened,
// and its current details show the stage. The page is saved in .data/; LIVEMERGE_REFRESH_SCREENSHOT=1 saves it
// as the README's docs/img/temporal-ui-merge.png instead (refresh it when the UI changes), so that a test run
// leaves the work tree as it was.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { BrowserContext, Page } from 'playwright-core';
import { chromium } from 'playwright-core';
import { describe, expect, it, onTestFinished } from 'vitest';
import { REPO_ROOT } from '../../src/config';
import type { RemoveSnapshotResult } from '../../src/workflows/remove-snapshot';
import { writeThroughGuest } from '../helpers/data';
import { pollUntil } from '../helpers/poll';
import { freePort } from '../helpers/procs';
import { createStackVm, useStack } from '../helpers/stack';
import { NAMESPACE, atFileEnd, temporalEnv } from '../helpers/temporal';
import { createSnapshot, startRemoveSnapshot, waitForProgress } from '../helpers/workflows';

const exec = promisify(execFile);
const MiB = 1 << 20;
const UI_SCRIPT = path.join(REPO_ROOT, 'scripts', 'temporal-ui.sh');
const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT =
  process.env.LIVEMERGE_REFRESH_SCREENSHOT === '1'
    ? path.join(REPO_ROOT, 'docs', 'img', 'temporal-ui-merge.png')
    : path.join(REPO_ROOT, '.data', 'temporal-ui-merge.png');
/** How long one step in the browser may take (the UI server asks Temporal for every page). */
const UI_WAIT_MS = 60_000;

/** The UI server for this file's Temporal; stopped and its directory removed when the file ends. */
async function startUi(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-ui-'));
  // Only the run's server settings: no TEMPORAL_* of the caller's shell reaches the UI server.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('TEMPORAL_')),
  );
  const env = {
    ...inherited,
    ...temporalEnv(),
    TEMPORAL_NAMESPACE: NAMESPACE,
    LIVEMERGE_UI_PORT: String(await freePort()),
  };
  atFileEnd(async () => {
    await exec('bash', [UI_SCRIPT, 'down', dir], { env });
  });
  // The first run on a machine builds the UI server (2-7 min); later runs find it in the cache.
  const { stdout } = await exec('bash', [UI_SCRIPT, 'up', dir], { env }).catch((err: unknown) => {
    const e = err as { stderr?: string };
    throw new Error(`scripts/temporal-ui.sh up failed: ${e.stderr ?? String(err)}`);
  });
  const url = /^TEMPORAL_UI_URL=(\S+)$/m.exec(stdout)?.[1];
  if (!url) throw new Error(`scripts/temporal-ui.sh up printed no TEMPORAL_UI_URL: ${stdout}`);
  return url;
}

/** Headless Chromium (Debian's) on a fresh profile; closed and the profile removed when the file ends. */
async function startBrowser(): Promise<BrowserContext> {
  const profile = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-chromium-'));
  atFileEnd(() => fs.rm(profile, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1600, height: 900 },
  });
  atFileEnd(() => context.close());
  return context;
}

/** The page's text, for a failure message that says what the UI showed instead. */
async function shown(page: Page): Promise<string> {
  const text = await page
    .locator('body')
    .innerText()
    .catch(() => '');
  return `${page.url()}\n${text.slice(0, 3000)}`;
}

describe('the Temporal UI in a real browser', () => {
  it('finds a live merge held mid-copy by LivemergeVmId and shows its stage in the current details', async () => {
    const s = await useStack({ holds: true });
    const holds = s.holds!;
    const ui = await startUi();
    const context = await startBrowser();

    const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 128 * MiB });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 4 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 2 * MiB, length: 8 * MiB });
    const chain = await s.sd.readChain(disks[0]!.imageId);

    // Held right after the host reported `copying`, its block commit running (src/testing/holds.ts).
    const mergeId = `merge-disk:${vm.uuid}:${disks[0]!.imageId}`;
    holds.hold('copying', mergeId);
    onTestFinished(() => holds.releaseAll());
    const removal = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
    await holds.waitHeld('copying', mergeId);
    expect(await vm.domain.blockJobInfo('vda')).not.toBeNull();
    const merge = s.client.workflow.getHandle(mergeId);
    await waitForProgress(merge, (p) => p.stage === 'copying');
    // The list reads the visibility store, which follows each workflow asynchronously: the merge copying
    // and the removal both listed before the page loads.
    const query = `LivemergeVmId="${vm.uuid}"`;
    const listed = async (q: string, id: string): Promise<boolean> => {
      for await (const wf of s.client.workflow.list({ query: q })) if (wf.workflowId === id) return true;
      return false;
    };
    await pollUntil(
      async () =>
        (await listed(`${query} AND LivemergeStage="copying"`, mergeId)) &&
        (await listed(query, removal.workflowId)),
      UI_WAIT_MS,
      'the merge and the removal in the visibility store',
      200,
    );

    const page = await context.newPage();
    page.setDefaultTimeout(UI_WAIT_MS);
    try {
      // The workflow list, filtered by the search attribute as typed into the UI's query box.
      await page.goto(`${ui}/namespaces/${NAMESPACE}/workflows?query=${encodeURIComponent(query)}`);
      const row = page.getByRole('link', { name: mergeId, exact: true });
      await row.waitFor();
      // The removal that started the merge carries the same VM id.
      await page.getByRole('link', { name: removal.workflowId, exact: true }).waitFor();
      await row.click();

      // The merge's page, tab "User Metadata": its current details (setCurrentDetails in
      // src/workflows/progress.ts), markdown the UI renders in a sandboxed iframe, name the stage and host.
      await page.waitForURL((u) => decodeURIComponent(u.pathname).includes(`/workflows/${mergeId}/`));
      await page.getByRole('tab', { name: 'User Metadata' }).click();
      await page.getByRole('heading', { name: 'Current Details', exact: true }).waitFor();
      const details = page
        .locator('iframe')
        .contentFrame()
        .getByText(/stage\s+copying/);
      await details.waitFor();
      expect(await details.innerText()).toMatch(
        new RegExp(`^mergeDisk\\s+—\\s+stage\\s+copying,\\s+live on host\\s+${s.hostId}$`),
      );
      await fs.mkdir(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT });
    } catch (err) {
      throw new Error(
        `${err instanceof Error ? err.message : String(err)}\nthe UI showed: ${await shown(page)}`,
      );
    } finally {
      await page.close();
    }

    // Released, the merge completes: the snapshot's volume is gone from the chain.
    holds.release('copying', mergeId);
    const result = (await removal.result()) as RemoveSnapshotResult;
    expect(result.removedVolumeIds).toEqual([chain[1]!.volumeId]);
    expect((await s.sd.readChain(disks[0]!.imageId)).map((v) => v.volumeId)).toEqual([chain[0]!.volumeId]);
  });
});
