// Lint for src/, test/ and bench/: typescript-eslint's recommended rules,
// no import cycles, and the layering of src/ (a folder imports only from the
// folders below it; see "Layout" in README.md).
import js from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/** src/ top to bottom: the entry files, then each folder. */
const LAYERS = [['./src/tcpproxy.ts', './src/main.ts'], ['./src/modes'], ['./src/process'], ['./src/session'], ['./src/forward'], ['./src/table'], ['./src/sys']];

const layerZones = LAYERS.flatMap((targets, i) =>
  targets.map((target) => ({
    target,
    from: LAYERS.slice(0, i).flat(),
    message: 'a lower layer of src/ imports from a higher one (see "Layout" in README.md)',
  })),
).filter((z) => z.from.length > 0);

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      // The dependencies of a file are parsed as TypeScript too, or no-cycle sees no imports in them.
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-self-import': 'error',
      'no-console': 'error',
      'import-x/no-restricted-paths': ['error', { zones: layerZones }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: { globals: { module: 'writable', require: 'readonly', process: 'readonly', console: 'readonly' } },
  },
  {
    // CommonJS scripts that node runs as they are (test/native/helpers/native-child.cjs).
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { __dirname: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
