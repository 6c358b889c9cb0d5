// The engine's workflow code as one webpack bundle, made the same way everywhere: by scripts/build.sh
// into dist/workflow-bundle.js (the compiled engine loads that file: no webpack in the worker process,
// ~1.5 s and ~125 MB of RSS less at start, docs/benchmarks.md), at start when the engine runs from the
// sources (tsx), and once per file by the tests and the replay test.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '@temporalio/common';
import type { BundleOptions, WorkerOptions } from '@temporalio/worker';
import { Runtime, bundleWorkflowCode } from '@temporalio/worker';

/**
 * Evaluated once in the reused V8 context and shared (frozen) by every workflow, instead of once per
 * workflow: zod holds no per-workflow state, and building it again for each workflow was about a tenth of
 * the workflow thread's CPU (issue 13). Never one of ours with module state: src/workflows/lean.ts keeps
 * each workflow's history round in its module, which is per workflow only when it is not preloaded.
 */
export const PRELOADED_WORKFLOW_MODULES = ['zod'];

/** The bundle of the workflows in `dir` (src/workflows with ext '.ts', dist/workflows with '.js'). */
export function workflowBundleOptions(
  dir: string,
  ext: '.ts' | '.js',
  // By default webpack's warnings and errors only (the build, the tests): its progress lines are noise there.
  logger: Logger = { trace() {}, debug() {}, info() {}, log() {}, warn: console.warn, error: console.error },
): BundleOptions {
  return {
    workflowsPath: path.join(dir, `index${ext}`),
    workflowInterceptorModules: [path.join(dir, `log-context${ext}`)],
    preloadModules: PRELOADED_WORKFLOW_MODULES,
    logger,
  };
}

/** Where the build writes the compiled workflows' bundle: beside them, in dist/. */
const PREBUILT = path.resolve(__dirname, '../workflow-bundle.js');
/** The workflows beside this module: dist/workflows when compiled, src/workflows under tsx. */
const WORKFLOWS_DIR = path.resolve(__dirname, '../workflows');
const EXT = __filename.endsWith('.js') ? '.js' : '.ts';

/** The engine's bundle: the build's when this is the compiled engine, else made now from the sources. */
export async function engineWorkflowBundle(): Promise<NonNullable<WorkerOptions['workflowBundle']>> {
  if (EXT === '.js' && fs.existsSync(PREBUILT)) return { codePath: PREBUILT };
  // In the worker's own log (JSON lines), as when the SDK bundles.
  return await bundleWorkflowCode(workflowBundleOptions(WORKFLOWS_DIR, EXT, Runtime.instance().logger));
}

/** scripts/build.sh: writes the bundle of the compiled workflows to `out`. */
export async function writeWorkflowBundle(out: string): Promise<void> {
  const { code } = await bundleWorkflowCode(workflowBundleOptions(WORKFLOWS_DIR, '.js'));
  await fs.promises.writeFile(out, code);
}
