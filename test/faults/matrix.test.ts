// The failure matrix (docs/failure-model.md): every fault at every stage of a live merge of a running VM,
// one test per cell, named "<fault> × <stage>". The scenario, the holds and the checks are in harness.ts.
//
// Every fault but the VM crash: the merge completes; the data reads back byte for byte; each committed
// volume is deleted exactly once, while ILLEGAL, after verifyMerged; nothing else is deleted (the image
// directory is watched, not only its end state); the audit log has started + completed; reconcile finds
// nothing to do; invariant 4 holds.
// VM crash before the pivot: VmCrashed, nothing deleted, metadata LEGAL and unchanged, the failure audited,
// reconcile deletes nothing; the VM reads exactly its data again, restarted from its chain; a retry then
// completes — live after a restart of the VM, or cold while it stays down — with every check above.
// VM crash after the pivot: the merge is already in the persistent chain: it completes.
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ProcessStack } from '../helpers/process-stack';
import type { Cell, FaultContext } from './harness';
import { FAULTS, STAGES, cellName, cellTimeoutMs, faultContext, runCell } from './harness';

/** The cells, built from the table below: every fault × every stage, both retries of a VM crash. */
export const MATRIX: Cell[] = FAULTS.flatMap((fault) =>
  STAGES.flatMap((stage): Cell[] =>
    fault === 'vm-crash' && ['before-job', 'copy', 'ready'].includes(stage)
      ? [
          { fault, stage, retry: 'live' },
          { fault, stage, retry: 'cold' },
        ]
      : [{ fault, stage }],
  ),
);

/**
 * Cells that cannot exist, with the reason (also in docs/failure-model.md). The matrix merges the active
 * layer (an active commit), the only merge kind that has every stage.
 */
export const IMPOSSIBLE: Array<{ cell: string; reason: string }> = [
  {
    cell: '* × READY before the pivot, for an intermediate commit or a forward pull',
    reason:
      'only an active commit (top = the running leaf) mirrors and waits in READY; an intermediate commit ' +
      'or a pull completes by itself (the wait ends at COMPLETED) and has no pivot',
  },
  {
    cell: '* × after the pivot, for an intermediate commit or a forward pull',
    reason:
      'no pivot happens; the steps after the job (verify, record, delete) are the same activities the ' +
      '"after the pivot" and "deletion" cells stop at',
  },
  {
    cell: 'VM crash × after the pivot / during deletion, failing with VmCrashed',
    reason:
      'from the pivot on the persistent definition already names the base as the leaf: the merge is done ' +
      'in the chain the VM boots from, so verifyMerged passes on the stopped VM and the merge completes; ' +
      'the matrix has these cells with that outcome',
  },
  {
    cell: 'VM crash × any stage of a cold merge',
    reason:
      'a cold merge runs only while the VM is shut off: there is no VM to crash. qemu-img holds the ' +
      'image locks, so the VM cannot start during the merge; one started just before makes the merge ' +
      'fail with ImageInUse, nothing changed',
  },
];

describe('failure matrix: fault × stage of a live merge', () => {
  let ctx: FaultContext;
  beforeAll(async () => {
    ctx = faultContext(await ProcessStack.start());
  });
  afterAll(async () => {
    await ctx?.libvirt.close();
    await ctx?.stack.stop();
  });

  for (const cell of MATRIX) {
    it(cellName(cell), { timeout: cellTimeoutMs(cell) }, async () => {
      try {
        await runCell(ctx, cell);
      } catch (err) {
        console.error(ctx.stack.allLogs());
        throw err;
      }
    });
  }
});
