import { builtinModules } from 'node:module';
import js from '@eslint/js';
import importX, { createNodeResolver } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/** Every Node built-in, by both its names: none may run in the workflow sandbox. */
const nodeBuiltins = builtinModules.flatMap((name) => (name.startsWith('node:') ? [name] : [name, `node:${name}`]));

/**
 * The house's floors, bottom up. The product (what the image ships): the contract (types, Redis keys, messages), the
 * domain helpers (lib), the layers (activities), the workflows, the client room, the processes (workers) and the CLI
 * (cli). Above it the tools of the checkout (scripts: bench, chaos, the Binance double, the shared stack), then the
 * tests. An import may only go down (or stay on its floor): the product imports neither tools nor tests.
 */
const floors = ['contract', 'lib', 'activities', 'workflows', 'client', 'workers', 'cli', 'scripts', 'test'];
const floorZones = floors.slice(0, -1).map((floor, i) => ({
  target: `./${floor}`,
  from: floors.slice(i + 1).map((above) => `./${above}`),
  message: `${floor}/ is below ${floors.slice(i + 1).join(', ')}: an import may not run up a floor`,
}));

export default tseslint.config(
  { ignores: ['node_modules/', '.tools/', '.data/', 'dist/', 'test-results/', 'test/histories/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['*.mjs', 'cli/*.cjs', 'test/fixtures/*.cjs'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { 'import-x': importX },
    // The import rules see the graph only if they can resolve our extension-less TypeScript imports.
    settings: {
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.mts', '.js', '.mjs', '.json'] })],
      'import-x/extensions': ['.ts', '.mts', '.js', '.mjs'],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': ['error', { zones: floorZones }],
      // Every package imported is declared; no reaching into a package's private lib/ files.
      'import-x/no-extraneous-dependencies': [
        'error',
        {
          devDependencies: [
            'test/**',
            '**/*.test.ts',
            'eslint.config.mjs',
            'vitest.config.mts',
            'vitest.cluster.config.mts',
            // The tools of the checkout: never in the image.
            'scripts/**',
            'cli/servers.ts',
            'cli/dev.ts',
            // The checkout's entry (tsx) and the build: the production image runs dist/ without dev dependencies.
            'cli/permit-chain.cjs',
            'cli/launch.cjs',
          ],
        },
      ],
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['@temporalio/*/lib/*'], message: "use the package's public exports" }] },
      ],
    },
  },
  {
    // Workflow code is bundled into Temporal's deterministic sandbox: no I/O, no Node built-ins, no Redis.
    files: ['workflows/**/*.ts', 'scripts/bench-workflows.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: ['ioredis', ...nodeBuiltins],
          patterns: [
            { group: ['node:*'], message: 'workflows/ runs in the deterministic sandbox' },
            { group: ['@temporalio/*/lib/*'], message: "use the package's public exports" },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.cjs', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      globals: {
        require: 'readonly',
        process: 'readonly',
        console: 'readonly',
        __dirname: 'readonly',
        __filename: 'readonly',
        module: 'readonly',
      },
    },
    rules: { ...tseslint.configs.disableTypeChecked.rules, '@typescript-eslint/no-require-imports': 'off' },
  },
);
