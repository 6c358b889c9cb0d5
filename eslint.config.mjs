// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX, { createNodeResolver } from 'eslint-plugin-import-x';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

// The layering of src/ (README "Architecture"): each folder may import itself and the folders listed here,
// nothing else. Every arrow points down, so no two folders import each other.
const LAYERS = {
  common: [],
  schemas: ['common'],
  libvirt: ['common'],
  qemu: ['schemas', 'common'],
  storage: ['qemu', 'schemas', 'common'],
  inspect: ['storage', 'qemu', 'schemas', 'common'],
  merge: ['qemu', 'schemas', 'common'],
  // Backups on the storage side: changed blocks, copies, the repository, restore and prune.
  backup: ['merge', 'inspect', 'storage', 'qemu', 'schemas', 'common'],
  guard: ['inspect', 'storage', 'libvirt', 'qemu', 'schemas', 'common'],
  audit: ['storage', 'schemas', 'common'],
  activities: [
    'backup',
    'guard',
    'merge',
    'inspect',
    'storage',
    'qemu',
    'libvirt',
    'audit',
    'schemas',
    'common',
  ],
  workflows: ['activities/contracts.ts', 'backup/types.ts', 'schemas', 'common'],
  // Failure-injection machinery (breakpoints on files), wired by the workers only when asked for.
  testing: ['activities/breakpoints.ts'],
  workers: ['activities', 'testing', 'libvirt', 'audit', 'common', 'config.ts'],
  devstack: ['config.ts', 'common'],
};
const layerZones = Object.entries(LAYERS).map(([folder, allowed]) => ({
  target: `./src/${folder}`,
  from: './src',
  except: [`./${folder}`, ...allowed.map((a) => `./${a}`)],
  message: `src/${folder} may import only ${allowed.join(', ') || 'nothing else in src'} (README "Architecture").`,
}));

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist*/**', '.data/**', '.tools/**', 'coverage/**', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['*.mjs'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.json'] })],
      'import-x/extensions': ['.ts'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: {
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': [
        'error',
        {
          zones: [
            ...layerZones,
            {
              target: './src/cli/!(main).ts',
              from: './src/cli/dev',
              message:
                'The operator CLI does not depend on the dev/test commands (only main.ts registers them).',
            },
          ],
        },
      ],
    },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox: no Node built-ins, no non-workflow SDK packages.
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({
            name,
            message: 'Workflows are deterministic: no Node built-ins.',
          })),
          patterns: [
            {
              group: ['@temporalio/*', '!@temporalio/workflow', '!@temporalio/common'],
              message: 'Workflows may import only @temporalio/workflow and @temporalio/common.',
            },
            {
              group: ['**/activities/*', '!**/activities/types', '**/libvirt/**', '**/storage/**', 'koffi'],
              message: 'Workflows import only activity types (import type).',
              allowTypeImports: true,
            },
          ],
        },
      ],
    },
  },
  { files: ['**/*.mjs', '**/*.cjs'], ...tseslint.configs.disableTypeChecked },
);
