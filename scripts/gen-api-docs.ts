// Generates docs/api.md, the reference of livemerge's workflow API, from the zod schemas in src/schemas/.
//
//   npx tsx scripts/gen-api-docs.ts          # (re)writes docs/api.md
//   npx tsx scripts/gen-api-docs.ts --check  # exits 1 when docs/api.md is not what it would write
//   ... [--out FILE]                         # another file (tests)
//
// The copy-paste `temporal` examples are marked `<!-- example: <workflowType>.<verb> -->`; the tests run
// them (extractExample, shellWords and substitute below are their reader).
import fs from 'node:fs';
import path from 'node:path';
import * as prettier from 'prettier';
import { z } from 'zod';
import { ENGINE_TASK_QUEUE } from '../src/common/task-queues';
import { SEARCH_ATTRIBUTES } from '../src/common/search-attributes';
import {
  BackupVmInput,
  CreateSnapshotInput,
  PruneBackupsInput,
  RestoreBackupInput,
  MergeDiskInput,
  ReconcileInput,
  RemoveSnapshotInput,
} from '../src/schemas/inputs';
import type { Stage } from '../src/schemas/progress';
import { FailureType, Progress, Stage as StageEnum } from '../src/schemas/progress';
import { ProgressAnswers, WorkflowResults } from '../src/schemas/results';

export const DOCS_FILE = path.resolve(__dirname, '..', 'docs', 'api.md');
/** The Python client the docs show verbatim (test/production/python-client.test.ts runs it). */
export const PYTHON_EXAMPLE_FILE = path.resolve(__dirname, '..', 'examples', 'python', 'remove_snapshot.py');
const PYTHON_REQUIREMENTS_FILE = path.resolve(__dirname, '..', 'examples', 'python', 'requirements.txt');
const PYTHON_MARKER = '<!-- python-example: examples/python/remove_snapshot.py -->';

export const WORKFLOW_TYPES = [
  'createSnapshot',
  'removeSnapshot',
  'mergeDisk',
  'reconcile',
  'backupVm',
  'restoreBackup',
  'pruneBackups',
] as const;
export type WorkflowType = (typeof WORKFLOW_TYPES)[number];

export const WorkflowInputs: Record<WorkflowType, z.ZodType> = {
  createSnapshot: CreateSnapshotInput,
  removeSnapshot: RemoveSnapshotInput,
  mergeDisk: MergeDiskInput,
  reconcile: ReconcileInput,
  backupVm: BackupVmInput,
  restoreBackup: RestoreBackupInput,
  pruneBackups: PruneBackupsInput,
};

/** The JSON Schemas the docs show: inputs as a caller writes them, results and progress as returned. */
export function inputJsonSchema(type: WorkflowType): Record<string, unknown> {
  return z.toJSONSchema(WorkflowInputs[type], { io: 'input' });
}
export function resultJsonSchema(type: WorkflowType): Record<string, unknown> {
  return z.toJSONSchema(WorkflowResults[type], { io: 'output' });
}
export function progressJsonSchema(type: WorkflowType): Record<string, unknown> {
  return z.toJSONSchema(ProgressAnswers[type], { io: 'output' });
}

// ---------------------------------------------------------------------------------------------------------
// What the schemas cannot say.

const FAILURES: Record<FailureType, string> = {
  InvalidRequest:
    'The input failed its schema (not JSON of the right shape, an id that is not a canonical lower-case UUID, an ' +
    'unknown field), or names things that do not fit together (a volume not in the VM’s chain, base not an ' +
    'ancestor of top, base equal to top, a live forward merge into a non-leaf, a snapshot id already in use). ' +
    'Refused before any change.',
  VmNotFound:
    'Every configured host (`LIVEMERGE_HOSTS`, or the `hostId` given) answered, and none has a domain with this ' +
    '`vmId`.',
  HostUnreachable:
    'A configured host did not answer while the VM was being located (its agent or libvirtd is down), none of ' +
    'the hosts that answered runs the VM, and the engine’s locate timeout passed (`LIVEMERGE_LOCATE_TIMEOUT`, ' +
    'default 300 s). Nothing was changed; run the operation again once the host answers.',
  VmNotRunning:
    'The VM’s run state changed under the operation (it stopped before a live snapshot, or started during a ' +
    'cold operation). createSnapshot discards the new leaves; the VM keeps its chain.',
  VmCrashed:
    'The VM stopped or crashed before the block job was done. The chain it booted from is still valid, ' +
    'nothing was deleted, metadata stays LEGAL; run removeSnapshot again (live after a restart, or cold while ' +
    'it is down) to complete the merge.',
  ChainMismatch:
    'The volume metadata, the qcow2 backing chain and the libvirt definition disagree, or the chain is not what ' +
    'the request expects (a snapshot volume without a child, a merge that could not be verified). Nothing is ' +
    'deleted; inspect the image (and run reconcile).',
  SharedBase:
    'Refused to commit into a base volume that has more than one child or that another VM uses (e.g. a ' +
    'template): that would corrupt the other branch. Nothing changed.',
  MergeInProgress: 'Another block job runs on the disk. Nothing changed; retry when it has finished.',
  MergeJobFailed:
    'The libvirt block job failed (or vanished before the pivot). The VM still uses its old chain, which is ' +
    'valid; nothing was deleted.',
  ImageInUse:
    'A cold merge found the image locked by another QEMU process (the VM was started meanwhile). qemu-img ' +
    'changed nothing; run the merge again (live, now that the VM runs).',
  DeletionRefused:
    'The deletion guard refused to delete a merged volume (it is still in a live or persistent chain of a ' +
    'domain, or a LEGAL volume names it as parent). The data is merged and the volume marked ILLEGAL; ' +
    '`reconcile` deletes it once nothing references it.',
  Cancelled:
    'Reserved. A cancelled workflow ends with status CANCELLED (a Temporal CancelledFailure), not with an ' +
    'ApplicationFailure of this type; see [Cancellation](#cancellation).',
  SnapshotNotFound: 'No disk of the VM has a volume of this `snapshotId`. Nothing changed.',
  PartialFailure:
    'Disks of the snapshot could not be merged, and not all for the same known cause (different causes, or an ' +
    'unexpected one). The snapshot stays with the disks that ' +
    'are not merged; the failure’s `details[0]` is the RemoveSnapshotResult listing each disk ' +
    '(`status`, `failureType`, `message`). Run removeSnapshot again once the causes are fixed.',
  BackupInProgress:
    'A backup of the VM runs (backupVm): a snapshot removal or merge of that VM is refused until it ends, never ' +
    'interleaved with the backup’s own snapshot and merge. Nothing was changed.',
  BackupNotFound: 'The repository has no recorded backup of that VM with that id. Nothing was changed.',
  BackupTimedOut:
    'NBD export mode: the backup application did not send `backupDone` within `exportTimeoutSeconds`. The ' +
    'exports were stopped and the snapshot merged back; nothing counts as backed up.',
  GuestAgentUnavailable:
    'A quiesced backup was asked for and the VM’s guest agent did not answer. Nothing was changed.',
};

const STAGES: Record<Stage, string> = {
  validating: 'the input is checked against its schema',
  inspecting: 'finding the VM’s host, reading the volume chain, the qcow2 headers and the domain definition',
  starting: 'starting the block job (createSnapshot: creating the new leaf volumes)',
  copying: 'data is being copied (`cur` of `end` bytes); a cold merge copies with qemu-img',
  ready: 'an active commit has copied everything and mirrors new writes until the pivot',
  pivoting:
    'switching the VM onto the merged chain (createSnapshot: taking the snapshot); a live merge’s host unit pivots within milliseconds of `ready` and does not report it: its `progress` goes from `ready` to `recording`',
  verifying:
    'checking that the merged volumes are gone from the live and the persistent chain (reported by cold merges; a live merge’s host unit checks right after the pivot)',
  recording: 'updating the volume metadata (merged volumes ILLEGAL, new parent, snapshot id)',
  deleting:
    'deleting the merged volumes (each behind the deletion guard; a merge started since lean histories v3 records and deletes in one step and shows `recording` until both are done)',
  done: 'finished: the workflow completed',
  failed: 'the workflow failed (see its failure type)',
  cancelled: 'the workflow was cancelled before the point of no return; the chain is as it was',
};

const SEARCH_ATTRIBUTE_DOCS: Record<(typeof SEARCH_ATTRIBUTES)[number], string> = {
  LivemergeVmId: 'the VM’s UUID, set once the input is validated (not set by reconcile)',
  LivemergeHostId: 'the id of the VM’s host, set once the host is found (not set by reconcile)',
  LivemergeStage:
    'the current `progress` stage among those a workflow can stay in: `inspecting`, `copying`, `ready`, `recording`, and the end (`done`, `failed`, `cancelled`); the momentary ones (`validating`, `starting`, `pivoting`, `verifying`, `deleting`) are in `progress` only (workflows started before this build: every stage)',
};

interface WorkflowDoc {
  summary: string;
  purpose: string;
  workflowId: string;
  workflowIdNote: string;
  /** The example input, with `<placeholder>`s (JSON text, as passed to --input). */
  exampleInput: Record<string, string | number>;
  exampleResult: unknown;
  failures: FailureType[];
  /** Short, for the table; `cancellation` says it all. */
  cancellable: string;
  cancellation: string;
}

// Fixed sample ids for the example results (any canonical UUIDs).
const S = {
  vm: '0d5f6c1e-8a43-4b7e-9c21-5e7f3a9b2d10',
  snapshot: '5a9e2c47-13b8-4f0d-a6e2-9b1c7d3f8e24',
  sd: 'c3b1a2d4-7e6f-4a58-b9c0-1d2e3f4a5b6c',
  image: '8e7d6c5b-4a39-4281-9f0e-d1c2b3a4f596',
  frozen: 'f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b',
  leaf: '2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901',
  host: 'kvm-host-01',
  backup: '7c6b5a49-3827-4165-a4f3-e2d1c0b9a887',
  parent: '3f2e1d0c-9b8a-4776-8655-443322110099',
};

const MERGE_FAILURES: FailureType[] = [
  'InvalidRequest',
  'VmNotFound',
  'VmCrashed',
  'ChainMismatch',
  'SharedBase',
  'MergeInProgress',
  'MergeJobFailed',
  'DeletionRefused',
];

export const WORKFLOWS: Record<WorkflowType, WorkflowDoc> = {
  createSnapshot: {
    summary: 'Takes a snapshot of all the disks of a VM, running or shut off.',
    purpose:
      'Takes a snapshot of a whole VM: every disk’s current leaf is frozen (it gets the `snapshotId` and is ' +
      'read-only from then on) and each disk gets a new leaf volume on top of it. While the VM runs this is one ' +
      'libvirt external disk-only snapshot, atomic across all disks; when it is shut off, qemu-img overlays and ' +
      'an updated domain definition.',
    workflowId: 'create-snapshot:<vmId>:<snapshotId>',
    workflowIdNote: 'Pass the same `snapshotId` in the input, so that the workflow id names the snapshot.',
    exampleInput: { vmId: '<vmId>', snapshotId: '<snapshotId>', description: 'before upgrade' },
    exampleResult: {
      vmId: S.vm,
      snapshotId: S.snapshot,
      hostId: S.host,
      mode: 'live',
      disks: [
        {
          target: 'vda',
          storageDomainId: S.sd,
          imageId: S.image,
          frozenVolumeId: S.frozen,
          leafVolumeId: S.leaf,
        },
      ],
    },
    failures: ['InvalidRequest', 'VmNotFound', 'VmNotRunning', 'ChainMismatch'],
    cancellable: 'no',
    cancellation: 'not supported; it takes seconds: let it finish (and remove the snapshot if unwanted).',
  },
  removeSnapshot: {
    summary: 'Deletes a snapshot of a VM by merging each of its disks (a `mergeDisk` per disk).',
    purpose:
      'Deletes a snapshot while the VM runs (or while it is shut off): one `mergeDisk` child workflow per disk ' +
      'that holds the snapshot, all in parallel, in the given direction (default `backward`: the child of the ' +
      'snapshot’s volume is committed into it, and that volume takes over the child’s snapshot id). The ' +
      'snapshot is gone when every disk is merged; on a partial failure it stays with the disks that are not ' +
      'merged yet.',
    workflowId: 'remove-snapshot:<vmId>:<snapshotId>',
    workflowIdNote:
      'Each disk’s child is `merge-disk:<vmId>:<imageId>`; a merge already running on a disk makes that ' +
      'disk fail (the running one is not joined, its request may differ).',
    exampleInput: { vmId: '<vmId>', snapshotId: '<snapshotId>' },
    exampleResult: {
      vmId: S.vm,
      snapshotId: S.snapshot,
      hostId: S.host,
      removedVolumeIds: [S.leaf],
      disks: [{ target: 'vda', imageId: S.image, status: 'merged' }],
    },
    failures: [
      'InvalidRequest',
      'VmNotFound',
      'SnapshotNotFound',
      'PartialFailure',
      ...MERGE_FAILURES.slice(2),
      'VmNotRunning',
    ],
    cancellable: 'until each disk’s point of no return',
    cancellation:
      'the cancel reaches every disk’s mergeDisk, each of which behaves as described for mergeDisk: disks ' +
      'before their pivot are left as they were, disks past it complete. The workflow ends CANCELLED.',
  },
  mergeDisk: {
    summary: 'Merges part of one disk’s volume chain, live or cold, backward or forward.',
    purpose:
      'Merges part of one disk’s chain: `backward` commits the volumes above `baseVolumeId` up to and ' +
      'including `topVolumeId` into base (an active commit with a pivot when top is the running VM’s leaf); ' +
      '`forward` pulls the volumes from base up to but excluding top into top (live only into the active ' +
      'leaf). Live when the VM runs (libvirt block job), cold when it is shut off (qemu-img). The merged ' +
      'volumes are deleted once the VM verifiably no longer uses them.',
    workflowId: 'merge-disk:<vmId>:<imageId>',
    workflowIdNote:
      'One merge per disk at a time: with this id a second request for the same disk does not start a ' +
      'second merge while one runs.',
    exampleInput: {
      vmId: '<vmId>',
      storageDomainId: '<storageDomainId>',
      imageId: '<imageId>',
      baseVolumeId: '<baseVolumeId>',
      topVolumeId: '<topVolumeId>',
    },
    exampleResult: {
      vmId: S.vm,
      imageId: S.image,
      hostId: S.host,
      mode: 'live',
      direction: 'backward',
      removedVolumeIds: [S.leaf],
    },
    failures: [...MERGE_FAILURES, 'VmNotRunning'],
    cancellable: 'until the pivot (live), until the copy starts (cold)',
    cancellation:
      'live, a cancel before the pivot (stages up to `ready`) aborts the block job without pivoting; the chain ' +
      'stays as it was, nothing is deleted and the workflow ends CANCELLED. From the pivot call on (which the ' +
      'host unit makes on READY itself, so a cancel seen at `ready` may come too late; for an intermediate ' +
      'commit, once the job has completed) the rest runs non-cancellable and the ' +
      'workflow completes or fails as if no cancel had been sent. Cold: cancellable until the qemu-img copy ' +
      'starts.',
  },
  reconcile: {
    summary: 'Deletes orphaned volumes of a storage domain and reports inconsistent chains.',
    purpose:
      'Cleans a storage domain up: deletes the volumes no chain references (ILLEGAL volumes without a LEGAL ' +
      'child, and volume files without metadata), each behind the deletion guard, and reports every chain ' +
      'whose metadata, qcow2 headers and libvirt definition disagree (it repairs none).',
    workflowId: 'reconcile:<storageDomainId>',
    workflowIdNote: 'Suggested, not enforced: it keeps one reconcile per storage domain at a time.',
    exampleInput: { storageDomainId: '<storageDomainId>' },
    exampleResult: {
      storageDomainId: S.sd,
      deleted: [{ storageDomainId: S.sd, imageId: S.image, volumeId: S.leaf }],
      reports: [{ storageDomainId: S.sd, imageId: S.image, ok: true, disagreements: [] }],
    },
    failures: ['InvalidRequest', 'ChainMismatch', 'DeletionRefused'],
    cancellable: 'no',
    cancellation: 'not supported; let it finish (each deletion is idempotent: run it again instead).',
  },
  backupVm: {
    summary: 'Backs a VM up: snapshot, changed blocks (or all) into a repository or over NBD, merge back.',
    purpose:
      'Backs up every disk of a VM as it was at one instant (docs/backup.md): a persistent dirty bitmap ' +
      '`livemerge-<backupId>` starts on every qcow2 leaf, a snapshot (its id is the backup’s) freezes the disks, ' +
      'each disk’s changed blocks since the last recorded backup are read from the frozen chain’s bitmaps (a ' +
      'disk without a usable bitmap is backed up in full, with the reason), copied into ' +
      '`<repository>/<vmId>/<imageId>/<backupId>.qcow2` (an incremental backed by its parent’s file), the ' +
      'snapshot is merged back and only then is the backup recorded in `<repository>/<vmId>/backups.json`. ' +
      'With `repository: null` the frozen disks are exported read-only over NBD instead (the `progress` ' +
      'query’s `exports`) until the signal `backupDone`. One snapshot removal, merge or backup per VM at a time.',
    workflowId: 'backup:<vmId>:<backupId>',
    workflowIdNote:
      'Pass the same `backupId` in the input. Its snapshot and merge back are the children ' +
      '`create-snapshot:<vmId>:<backupId>` and `remove-snapshot:<vmId>:<backupId>`; the VM’s lock is ' +
      '`vm-lock:<vmId>`.',
    exampleInput: { vmId: '<vmId>', backupId: '<backupId>', repository: '/srv/backups' },
    exampleResult: {
      vmId: S.vm,
      backupId: S.backup,
      hostId: S.host,
      mode: 'live',
      repository: '/srv/backups',
      parentBackupId: S.parent,
      disks: [
        {
          target: 'vda',
          imageId: S.image,
          mode: 'incremental',
          changedBytes: 262144,
          copiedBytes: 262144,
          extents: 2,
          file: `/srv/backups/${S.vm}/${S.image}/${S.backup}.qcow2`,
          capacity: 68719476736,
        },
      ],
      exports: [],
    },
    failures: [
      'InvalidRequest',
      'VmNotFound',
      'GuestAgentUnavailable',
      'MergeInProgress',
      'BackupInProgress',
      'BackupTimedOut',
      'VmCrashed',
      'ChainMismatch',
    ],
    cancellable: 'until it is recorded',
    cancellation:
      'the copy (or export) stops, the snapshot is merged back, the files and this backup’s bitmap are ' +
      'removed and nothing is recorded; the workflow ends CANCELLED.',
  },
  restoreBackup: {
    summary: 'Writes one self-contained qcow2 per disk of a recorded backup.',
    purpose:
      'Restores a recorded backup: for each of its disks, `<targetDir>/<imageId>.qcow2`, a qcow2 with no ' +
      'backing file that reads exactly what the guest saw at the backup’s snapshot.',
    workflowId: 'restore-backup:<vmId>:<backupId>',
    workflowIdNote: 'Suggested, not enforced.',
    exampleInput: {
      vmId: '<vmId>',
      backupId: '<backupId>',
      repository: '/srv/backups',
      targetDir: '/srv/restore',
    },
    exampleResult: {
      vmId: S.vm,
      backupId: S.backup,
      disks: [{ target: 'vda', imageId: S.image, path: `/srv/restore/${S.image}.qcow2` }],
    },
    failures: ['InvalidRequest', 'BackupNotFound', 'ChainMismatch'],
    cancellable: 'no',
    cancellation: 'not supported; each disk’s file appears only once complete: run it again instead.',
  },
  pruneBackups: {
    summary: 'Merges the oldest restore points into their children until `keep` remain.',
    purpose:
      'Prunes a VM’s repository: the oldest restore point is merged into its child (qemu-img, the cold-merge ' +
      'primitives) so that the child no longer needs it, then removed, until `keep` remain; each remaining ' +
      'one still restores byte for byte.',
    workflowId: 'prune-backups:<vmId>',
    workflowIdNote: 'Suggested, not enforced; it runs under the VM’s lock (not during a backup).',
    exampleInput: { vmId: '<vmId>', repository: '/srv/backups', keep: 7 },
    exampleResult: { vmId: S.vm, removed: [S.parent], kept: [S.backup] },
    failures: ['InvalidRequest', 'BackupInProgress', 'MergeInProgress', 'ChainMismatch'],
    cancellable: 'no',
    cancellation: 'not supported; every step is recognised when run again.',
  },
};

// ---------------------------------------------------------------------------------------------------------
// The examples.

const CONNECTION = '--address <address> --namespace <namespace>';

function exampleCommands(type: WorkflowType): Array<{ verb: string; title: string; command: string }> {
  const d = WORKFLOWS[type];
  const id = `--workflow-id ${d.workflowId}`;
  const input = `--input '${JSON.stringify(d.exampleInput)}'`;
  const start = (verb: string) =>
    [
      `temporal workflow ${verb} ${CONNECTION}`,
      `--task-queue ${ENGINE_TASK_QUEUE}`,
      `--type ${type}`,
      id,
      input,
    ].join(' \\\n  ');
  return [
    { verb: 'start', title: 'Start it (returns at once)', command: start('start') },
    { verb: 'execute', title: 'Start it and wait for the result', command: start('execute') },
    {
      verb: 'result',
      title:
        'Wait for the result of a started one: it prints `status` and `result`; a failed one exits 1, and ' +
        '`closeEvent.workflowExecutionFailedEventAttributes.failure.applicationFailureInfo.type` is its failure type',
      command: [`temporal workflow result ${CONNECTION}`, id, '--output json'].join(' \\\n  '),
    },
    {
      verb: 'query',
      title: 'Ask for its progress',
      command: [`temporal workflow query ${CONNECTION}`, id, '--type progress', '--output json'].join(
        ' \\\n  ',
      ),
    },
  ];
}

/** The command of the example marked `<!-- example: <id> -->` in the docs (its fenced block). */
export function extractExample(markdown: string, id: string): string {
  const marker = `<!-- example: ${id} -->`;
  const at = markdown.indexOf(marker);
  if (at < 0) throw new Error(`no example ${id} in the docs`);
  if (markdown.indexOf(marker, at + marker.length) >= 0) throw new Error(`example ${id} appears twice`);
  const block = /^```sh\n([\s\S]*?)^```$/m.exec(markdown.slice(at + marker.length));
  if (!block?.[1]) throw new Error(`example ${id} has no sh block`);
  return block[1].trim();
}

/** The Python program the docs show (the python block after its marker). */
export function extractPythonExample(markdown: string): string {
  const at = markdown.indexOf(PYTHON_MARKER);
  if (at < 0) throw new Error('no Python example in the docs');
  const block = /^```python\n([\s\S]*?)^```$/m.exec(markdown.slice(at + PYTHON_MARKER.length));
  if (!block?.[1]) throw new Error('the Python example has no python block');
  return block[1];
}

/** The ids of every marked example. */
export function exampleIds(markdown: string): string[] {
  return [...markdown.matchAll(/<!-- example: (\S+) -->/g)].map((m) => m[1]!);
}

/**
 * Splits a POSIX shell command line as the docs write it: words, 'single' and "double" quotes, backslash
 * escapes and line continuations. Anything that would make the shell do more than run one command is refused.
 */
export function shellWords(command: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < command.length; i++) {
    const c = command[i]!;
    if (c === "'") {
      const end = command.indexOf("'", i + 1);
      if (end < 0) throw new Error('unterminated single quote');
      word = (word ?? '') + command.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      word ??= '';
      for (i++; command[i] !== '"'; i++) {
        if (i >= command.length) throw new Error('unterminated double quote');
        if (command[i] === '$' || command[i] === '`') throw new Error('no expansions in examples');
        if (command[i] === '\\' && ['"', '\\', '$', '`'].includes(command[i + 1] ?? '')) i++;
        word += command[i];
      }
    } else if (c === '\\') {
      if (command[i + 1] === '\n') i++;
      else if (i + 1 < command.length) word = (word ?? '') + command[++i];
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else if ('$`;|&()'.includes(c)) {
      throw new Error(`unsupported shell syntax ${JSON.stringify(c)} in an example`);
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== null) words.push(word);
  return words;
}

/** Replaces every `<name>` placeholder in the words; a placeholder without a value is an error. */
export function substitute(words: string[], values: Record<string, string>): string[] {
  return words.map((w) =>
    w.replace(/<([A-Za-z]+)>/g, (_, name: string) => {
      const v = values[name];
      if (v === undefined) throw new Error(`no value for placeholder <${name}>`);
      return v;
    }),
  );
}

/** The value of `--flag` in a word list. */
export function flag(words: string[], name: string): string | undefined {
  const i = words.indexOf(name);
  return i >= 0 ? words[i + 1] : undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Rendering.

function json(value: unknown): string {
  return '```json\n' + JSON.stringify(value, null, 2) + '\n```';
}

function anchor(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^a-z0-9 -]/g, '')
    .replace(/ /g, '-');
}

const REMOVE_SNAPSHOT_PROGRESS =
  'Each disk’s own progress is under `disks`. While the disks merge, the top-level `stage`, `mode` and bytes ' +
  'are those of the least advanced disk and the sums over the disks; once the workflow has ended, the top ' +
  'level is the workflow’s own state and the final figures are those under `disks`:';

/** The example's pinned packages (`name==version` lines of its requirements.txt). */
function pythonRequirements(): string[] {
  return fs
    .readFileSync(PYTHON_REQUIREMENTS_FILE, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^[A-Za-z0-9_.-]+==/.test(l));
}

function pythonSection(): string {
  const program = fs.readFileSync(PYTHON_EXAMPLE_FILE, 'utf8');
  if (program.includes('```')) throw new Error(`${PYTHON_EXAMPLE_FILE} must not contain a code fence`);
  const pins = pythonRequirements();
  return `## From Python

A Python service starts these workflows with the Temporal Python SDK (PyPI ${pins.map((p) => `\`${p}\``).join(', ')},
the version tested) by workflow type name and JSON input: it needs no livemerge code. The program below,
\`examples/python/remove_snapshot.py\`, removes a snapshot: it connects with the same settings as livemerge’s
workers (\`TEMPORAL_ADDRESS\`, \`TEMPORAL_NAMESPACE\`, the mTLS files \`TEMPORAL_TLS_CERT\`, \`TEMPORAL_TLS_KEY\`,
\`TEMPORAL_TLS_CA\`, \`TEMPORAL_TLS_SERVER_NAME\` or \`TEMPORAL_TLS=true\`, and \`TEMPORAL_API_KEY\`), starts
\`removeSnapshot\` under its [workflow id](#removesnapshot), prints the \`progress\` query’s answer whenever it
changes, and then the result, or the failure: a livemerge failure is an \`ApplicationError\` whose \`type\` is
one of the [failure types](#failure-types) (\`non_retryable\` set, \`details\` as documented). The test
\`test/production/python-client.test.ts\` runs exactly this file against a real engine and host agent on the
production-shaped cluster (mTLS), for a removal and for an input refused with \`InvalidRequest\`.

\`\`\`sh
pip install ${pins.join(' ')}
TEMPORAL_ADDRESS=<address> TEMPORAL_NAMESPACE=<namespace> python remove_snapshot.py <vmId> <snapshotId>
\`\`\`

It prints one JSON object per line: \`{"progress": {...}}\` on every change, then \`{"result": {...}}\` (exit 0)
or \`{"failure": {"type": "InvalidRequest", "message": ..., "nonRetryable": true, "details": [...]}}\` (exit 1).

${PYTHON_MARKER}

\`\`\`python
${program}\`\`\`
`;
}

function workflowSection(type: WorkflowType): string {
  const d = WORKFLOWS[type];
  const examples = exampleCommands(type)
    .map((e) => `${e.title}:\n\n<!-- example: ${type}.${e.verb} -->\n\n\`\`\`sh\n${e.command}\n\`\`\``)
    .join('\n\n');
  const order = FailureType.options;
  const failures = [...d.failures]
    .sort((a, b) => order.indexOf(a) - order.indexOf(b))
    .map((f) => `- \`${f}\`: ${FAILURES[f]}`)
    .join('\n');
  return `## \`${type}\`

${d.purpose}

| | |
| --- | --- |
| workflow type | \`${type}\` |
| task queue | \`${ENGINE_TASK_QUEUE}\` |
| workflow id | \`${d.workflowId}\` |
| cancellable | ${d.cancellable} |

Workflow id: ${d.workflowIdNote}

Cancellation: ${d.cancellation}

### \`${type}\` input

${json(inputJsonSchema(type))}

### \`${type}\` result

${json(resultJsonSchema(type))}

For example:

${json(d.exampleResult)}

### \`${type}\` failure types

Every failure is a non-retryable \`ApplicationFailure\` (workflow status FAILED) of one of these types:

${failures}

### \`${type}\` \`progress\` query

${type === 'removeSnapshot' ? REMOVE_SNAPSHOT_PROGRESS : 'Answers:'}

${json(progressJsonSchema(type))}

### \`${type}\` with the \`temporal\` CLI

${examples}
`;
}

export function renderMarkdown(): string {
  const overview = WORKFLOW_TYPES.map(
    (t) => `| [\`${t}\`](#${anchor(t)}) | \`${WORKFLOWS[t].workflowId}\` | ${WORKFLOWS[t].summary} |`,
  ).join('\n');
  const failureTable = FailureType.options
    .map((f) => {
      const by = WORKFLOW_TYPES.filter((t) => WORKFLOWS[t].failures.includes(f)).map((t) => `\`${t}\``);
      return `| \`${f}\` | ${by.join(', ') || '—'} | ${FAILURES[f]} |`;
    })
    .join('\n');
  const stageTable = StageEnum.options.map((s) => `| \`${s}\` | ${STAGES[s]} |`).join('\n');
  const saTable = SEARCH_ATTRIBUTES.map((a) => `| \`${a}\` | Keyword | ${SEARCH_ATTRIBUTE_DOCS[a]} |`).join(
    '\n',
  );

  return `# livemerge workflow API

<!-- Generated by scripts/gen-api-docs.ts from src/schemas/. Do not edit by hand. -->

_Generated from the zod schemas in \`src/schemas/\` by \`scripts/gen-api-docs.ts\`: do not edit by hand.
Regenerate with \`npx tsx scripts/gen-api-docs.ts\`; \`npx tsx scripts/gen-api-docs.ts --check\` fails when this
file is stale._

livemerge’s operations are Temporal workflows on the task queue \`${ENGINE_TASK_QUEUE}\`. Other services start
them by workflow type and one JSON input from any Temporal client, e.g. the \`temporal\` CLI as shown below
or [a Python service](#from-python), and watch them in the Temporal UI.

| workflow type | workflow id | what it does |
| --- | --- | --- |
${overview}

## Conventions

- **Task queue**: every workflow type runs on \`${ENGINE_TASK_QUEUE}\` (the engine worker).
- **Input**: exactly one argument, a JSON object of the workflow’s input schema. Unknown fields are refused.
  The input is validated before anything is touched: a bad one ends the workflow FAILED with
  \`InvalidRequest\`.
- **Ids**: every id (VM, snapshot, storage domain, image, volume) is a canonical lower-case UUID; anything
  else is refused before use. Host ids are 1-63 characters of \`[A-Za-z0-9_.-]\`.
- **Workflow ids**: use the conventions of each section. Temporal keeps at most one open run per workflow
  id, so the same request sent twice does not start a second operation.
- **Results**: a completed workflow returns its result as JSON. A failed one ends with a non-retryable
  \`ApplicationFailure\` whose \`type\` is one of the [failure types](#failure-types), after its compensation
  has run; \`details[0]\`, when present, says more.
- **Examples**: replace each \`<placeholder>\`: \`<address>\` is the Temporal frontend (e.g.
  \`127.0.0.1:7233\`), \`<namespace>\` its namespace (e.g. \`default\`), the others are ids (UUIDs).

## Search attributes

Every workflow keeps these search attributes up to date (register them once per Temporal cluster, e.g.
\`temporal operator search-attribute create --name LivemergeStage --type Keyword\`):

| search attribute | type | value |
| --- | --- | --- |
${saTable}

For example, the merges running on a VM:

\`\`\`sh
temporal workflow list ${CONNECTION} \\
  --query 'LivemergeVmId="<vmId>" AND ExecutionStatus="Running"'
\`\`\`

A service that knows the VM (and its host) can give a removal, merge, snapshot or backup these values at its
start, as the \`livemerge\` CLI does: \`LivemergeVmId\`, \`LivemergeStage\` \`inspecting\` and, when known,
\`LivemergeHostId\`. The workflow then does not set them again (up to two history events fewer per
operation), and corrects the host once it has found the VM elsewhere. A removal's merges get theirs from it.
(The CLI also names its build's history round in the memo, \`livemergeHistory\`, which saves the patch
marker's two events. A service should not: a round it names stays named under later builds, and an engine
from before round 1 cannot replay it: \`docs/upgrades.md\`.)

<!-- example: removeSnapshot.startWithSearchAttributes -->

\`\`\`sh
temporal workflow start ${CONNECTION} \\
  --task-queue ${ENGINE_TASK_QUEUE} --type removeSnapshot --workflow-id remove-snapshot:<vmId>:<snapshotId> \\
  --search-attribute 'LivemergeVmId="<vmId>"' --search-attribute 'LivemergeStage="inspecting"' \\
  --search-attribute 'LivemergeHostId="<hostId>"' \\
  --input '{"vmId":"<vmId>","snapshotId":"<snapshotId>"}'
\`\`\`

## The \`progress\` query

Every workflow answers the query \`progress\` (no arguments), while it runs and after it has closed, with
the object below; removeSnapshot adds each disk’s progress under \`disks\` (see its section). The Temporal
UI’s current details show the same.

${json(z.toJSONSchema(Progress, { io: 'output' }))}

| stage | meaning |
| --- | --- |
${stageTable}

## Failure types

A workflow that cannot complete fails with a non-retryable \`ApplicationFailure\` (workflow status FAILED,
no retries) whose \`type\` names the cause:

| type | ended by | meaning |
| --- | --- | --- |
${failureTable}

## Cancellation

\`\`\`sh
temporal workflow cancel ${CONNECTION} --workflow-id remove-snapshot:<vmId>:<snapshotId>
\`\`\`

A merge can be cancelled until its point of no return. Before the pivot (live backward merge of the active
layer) or before the block job has completed (intermediate commit, live forward pull), a cancel aborts the
block job without pivoting: the chain stays exactly as it was, nothing is deleted, the audit log records
\`cancelled\` and the workflow ends with status CANCELLED. From the pivot on, the workflow cannot be
cancelled: the rest (verify, record, delete) runs non-cancellable and the workflow completes (or fails) as
if no cancel had been sent. Never \`terminate\` a merge: termination skips the compensation; if it happened,
run \`reconcile\` on the storage domain.

${WORKFLOW_TYPES.map((t) => `- \`${t}\`: ${WORKFLOWS[t].cancellation}`).join('\n')}

${pythonSection()}
${WORKFLOW_TYPES.map(workflowSection).join('\n')}`;
}

/** The docs as the generator writes them: rendered, checked, and formatted by the repository's Prettier. */
export async function generateApiDocs(): Promise<string> {
  const markdown = renderMarkdown();
  selfCheck(markdown);
  const options = (await prettier.resolveConfig(DOCS_FILE)) ?? {};
  return await prettier.format(markdown, { ...options, filepath: DOCS_FILE, parser: 'markdown' });
}

/** Every example result and every example command's input is valid for its schema. */
function selfCheck(markdown: string): void {
  const sample = '00000000-0000-4000-8000-000000000000';
  for (const type of WORKFLOW_TYPES) {
    WorkflowResults[type].parse(WORKFLOWS[type].exampleResult);
    for (const verb of ['start', 'execute']) {
      const words = substitute(shellWords(extractExample(markdown, `${type}.${verb}`)), {
        address: '127.0.0.1:7233',
        namespace: 'default',
        vmId: sample,
        snapshotId: sample,
        storageDomainId: sample,
        imageId: sample,
        baseVolumeId: sample,
        topVolumeId: '00000000-0000-4000-8000-000000000001',
        backupId: sample,
      });
      WorkflowInputs[type].parse(JSON.parse(flag(words, '--input') ?? 'null'));
    }
  }
}

async function main(argv: string[]): Promise<number> {
  const check = argv.includes('--check');
  const outAt = argv.indexOf('--out');
  const file = outAt >= 0 && argv[outAt + 1] ? path.resolve(argv[outAt + 1]!) : DOCS_FILE;
  const want = await generateApiDocs();
  const have = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
  const rel = path.relative(process.cwd(), file);
  if (check) {
    if (have === want) return 0;
    process.stderr.write(`${rel} is stale: regenerate it with 'npx tsx scripts/gen-api-docs.ts'\n`);
    return 1;
  }
  if (have !== want) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, want);
    process.stdout.write(`wrote ${rel}\n`);
  } else process.stdout.write(`${rel} is up to date\n`);
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(__filename))
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(2);
    },
  );
