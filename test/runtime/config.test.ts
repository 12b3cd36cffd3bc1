import { describe, expect, it } from '@jest/globals';
import { ConfigError, loadConfig } from '../../src/config.ts';

describe('configuration', () => {
  it('has working defaults: embedded Postgres, local emulators', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toBeNull();
    expect(c.google.useEmulators).toBe(true);
    expect(c.port).toBe(8080);
    expect(c.limits).toMatchObject({
      visionMaxBytes: 20 * 1024 ** 2,
      batchUploadMaxBytes: 2 * 1024 ** 3,
      batchMaxRequests: 200_000,
      shardMaxRequests: 10_000,
    });
    expect(c.pipeline.completionWindowMs).toBe(24 * 3600 * 1000);
    expect(c.adminToken).toBeNull();
  });

  it('reads units for sizes and durations', () => {
    const c = loadConfig({
      VISION_MAX_BYTES: '5MiB',
      BATCH_COMPLETION_WINDOW: '90m',
      POLL_INTERVAL_MS: '250',
      BATCH_RATIO: '0.25',
    });
    expect(c.limits.visionMaxBytes).toBe(5 * 1024 ** 2);
    expect(c.pipeline.completionWindowMs).toBe(90 * 60_000);
    expect(c.pipeline.pollIntervalMs).toBe(250);
    expect(c.billing.batchRatio).toBe('0.25');
  });

  it('uses Google Cloud only when project, location and bucket are all set', () => {
    const c = loadConfig({ GOOGLE_CLOUD_PROJECT: 'p', VERTEX_LOCATION: 'europe-west4', GCS_BUCKET: 'b' });
    expect(c.google).toMatchObject({ project: 'p', location: 'europe-west4', bucket: 'b', useEmulators: false });
  });

  it('reports every bad variable at once, by name', () => {
    let error: ConfigError | null = null;
    try {
      loadConfig({
        PORT: 'eighty',
        ROLE: 'both',
        BATCH_RATIO: '1.5',
        VISION_MAX_BYTES: 'lots',
        ADMIN_TOKEN: 'short',
        GOOGLE_CLOUD_PROJECT: 'p',
        VERTEX_EMULATOR_FAULTS: 'Get:x:503',
        POLL_INTERVAL_MS: '10s',
        POLL_MAX_INTERVAL_MS: '1s',
        IMAGE_JOB_TTL: '30h',
        VERTEX_CALL_TIMEOUT_MS: '5ms',
      });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const text = error!.problems.join('\n');
    for (const name of [
      'PORT',
      'ROLE',
      'BATCH_RATIO',
      'VISION_MAX_BYTES',
      'ADMIN_TOKEN',
      'GOOGLE_CLOUD_PROJECT',
      'VERTEX_EMULATOR_FAULTS',
      'POLL_MAX_INTERVAL_MS',
      'IMAGE_JOB_TTL',
      'VERTEX_CALL_TIMEOUT_MS',
    ]) {
      expect(text).toContain(name);
    }
    expect(error!.problems.length).toBe(10);
  });
});
