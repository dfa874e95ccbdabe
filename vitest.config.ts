import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // CI only: installs Chromium where it is missing (see the file).
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Multi-peer and training tests are CPU heavy; on a 2-core machine running
    // files in parallel only adds contention and flakiness.
    fileParallelism: false,
    pool: 'forks',
  },
})
