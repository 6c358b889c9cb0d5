// The CLI's fast start (bin/livemerge.cjs, the lazily imported commands): help loads none of the heavy
// packages, in the compiled tree and through tsx alike; errors from a lazily imported module keep their exit
// code; and a stale dist/ is never used.
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'livemerge.cjs');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-cli-start-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// Preloaded with --require: at exit, every module file the process loaded through require.
const HOOK = path.join(tmp, 'loaded-modules.cjs');
fs.writeFileSync(
  HOOK,
  "process.on('exit', () => require('node:fs').writeFileSync(process.env.LOADED_OUT, " +
    'JSON.stringify(Object.keys(require.cache))));\n',
);

interface Run {
  code: number;
  stderr: string;
  loaded: string[];
}

let n = 0;
function run(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const out = path.join(tmp, `loaded-${n++}.json`);
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--require', HOOK, file, ...args],
      { env: { ...process.env, ...env, LOADED_OUT: out } },
      (err, _stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        const loaded = fs.existsSync(out) ? (JSON.parse(fs.readFileSync(out, 'utf8')) as string[]) : [];
        resolve({ code, stderr, loaded });
      },
    );
  });
}

const HEAVY = /node_modules\/(@temporalio\/|koffi\/|zod\/|@grpc\/)/;
const fresh = async () => (await run(path.join(ROOT, 'bin', 'dist-fresh.cjs'), [])).code === 0;

describe('CLI start', () => {
  const modes = [
    { mode: 'sources through tsx', env: { LIVEMERGE_CLI: 'tsx' }, main: 'src/cli/main.ts' },
    // The bin runs dist/ only while it is as new as src/ (scripts/setup.sh builds it): built here otherwise.
    { mode: 'compiled dist/', env: {}, main: 'dist/cli/main.js' },
  ];
  for (const m of modes) {
    it(`${m.mode}: help loads no @temporalio/*, koffi, zod; a lazily loaded UsageError exits 2`, async () => {
      // The build swaps the new tree in whole (scripts/build.sh): a CLI other tests start meanwhile is safe.
      if (m.main.startsWith('dist') && !(await fresh()))
        await promisify(execFile)('bash', [path.join(ROOT, 'scripts', 'build.sh')]);
      expect(m.main.startsWith('dist') ? await fresh() : true).toBe(true);
      for (const args of [
        ['--help'],
        ['chain', '--help'],
        ['snapshot', 'remove', '--help'],
        ['backup', '--help'],
        ['backup', 'list', '--help'],
        ['backup', 'done', '--help'],
        ['backup', 'prune', '--help'],
        ['restore', '--help'],
        ['worker', '--help'],
      ]) {
        const r = await run(BIN, args, m.env);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
        expect(r.loaded).toContain(path.join(ROOT, m.main));
        expect(r.loaded.filter((f) => HEAVY.test(f))).toEqual([]);
      }
      // `merge` imports args, schemas, vms and workflows in its action: its UsageError is still main.ts's.
      const bad = await run(
        BIN,
        ['merge', '--vm', 'x', '--image', 'nope', '--base', 'b', '--top', 't'],
        m.env,
      );
      expect(bad.stderr).toContain('--image must be a canonical lower-case UUID');
      expect(bad.code).toBe(2);
    });
  }

  it('dist/ counts as fresh only while its stamp is as new as every file and directory under src/', () => {
    // A copy of the check in a tree of its own: the repository's mtimes stay as they are.
    const root = path.join(tmp, 'tree');
    fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(root, 'src', 'cli'), { recursive: true });
    fs.mkdirSync(path.join(root, 'dist'));
    fs.copyFileSync(path.join(ROOT, 'bin', 'dist-fresh.cjs'), path.join(root, 'bin', 'dist-fresh.cjs'));
    for (const f of ['tsconfig.json', 'tsconfig.build.json', 'src/cli/main.ts', 'src/config.ts', 'old.ts'])
      fs.writeFileSync(path.join(root, f), '');
    const distIsFresh = () =>
      spawnSync(process.execPath, [path.join(root, 'bin', 'dist-fresh.cjs')]).status === 0;
    const at = (f: string, s: number) => fs.utimesSync(path.join(root, f), s, s);
    const build = (s: number) => {
      fs.writeFileSync(path.join(root, 'dist', '.built'), '');
      at('dist/.built', s);
    };
    for (const f of [
      'tsconfig.json',
      'tsconfig.build.json',
      'src/cli/main.ts',
      'src/config.ts',
      'src/cli',
      'src',
    ])
      at(f, 1000);
    at('old.ts', 500);

    expect(distIsFresh()).toBe(false); // no stamp: never built
    build(2000);
    expect(distIsFresh()).toBe(true);
    at('src/cli/main.ts', 2001); // an edit
    expect(distIsFresh()).toBe(false);
    build(3000);
    expect(distIsFresh()).toBe(true);
    // A file moved in keeps its old mtime: its directory's time tells.
    fs.renameSync(path.join(root, 'old.ts'), path.join(root, 'src', 'cli', 'moved.ts'));
    expect(distIsFresh()).toBe(false);
    build(Date.now() / 1000 + 10);
    expect(distIsFresh()).toBe(true);
    at('tsconfig.build.json', Date.now() / 1000 + 20);
    expect(distIsFresh()).toBe(false);
  });
});
