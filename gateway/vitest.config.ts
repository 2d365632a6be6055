import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One throwaway PostgreSQL server per run, with a migrated template
    // database; and the demo models, for suites that run real inference.
    globalSetup: ['test/global-setup.ts', 'test/global-demo-models.ts'],
    // Integration suites start real Python workers (PyTorch import, ~2 s of CPU each).
    testTimeout: 60_000,
    hookTimeout: 180_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
