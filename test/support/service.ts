import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { loadConfig } from '../../src/config.ts';
import { randomToken } from '../../src/ids.ts';
import { setLogLevel } from '../../src/logger.ts';
import { type Runtime, startRuntime } from '../../src/runtime.ts';
import { withDatabase } from './global-setup.ts';
import { assertNoViolations, watchResponses } from './openapi-check.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** A fresh database cloned from the migrated template, or an empty one (`migrated: false`). */
export async function createTestDatabase(opts: { migrated?: boolean } = {}): Promise<string> {
  const adminUrl = process.env.IBG_TEST_ADMIN_URL!;
  const name = `ibg_${randomToken(12).toLowerCase()}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}${opts.migrated === false ? '' : ' TEMPLATE ibg_template'}`);
  } finally {
    await admin.end();
  }
  return withDatabase(adminUrl, name);
}

export interface TestService {
  runtime: Runtime;
  url: string;
  databaseUrl: string;
  dataDir: string;
  env: Record<string, string>;
  admin(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** A user with quota and, unless told otherwise, privacy accepted. */
  createUser(quota?: number, opts?: { privacy?: boolean }): Promise<{ id: number; apiKey: string }>;
  stop(): Promise<void>;
}

/**
 * The whole service as `npm start` runs it (ROLE=all), on a database of its own, with the
 * in-process emulators on random loopback ports and a scratch DATA_DIR.
 */
export async function startTestService(overrides: Record<string, string> = {}): Promise<TestService> {
  setLogLevel((process.env.TEST_LOG_LEVEL as 'info') ?? 'silent');
  const databaseUrl = overrides.DATABASE_URL ?? (await createTestDatabase());
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ibg-test-data-'));
  const env: Record<string, string> = {
    PORT: '0',
    DATA_DIR: dataDir,
    DATABASE_URL: databaseUrl,
    ADMIN_TOKEN,
    LOG_LEVEL: 'silent',
    VERTEX_EMULATOR_QUEUE_MS: '50',
    VERTEX_EMULATOR_LINE_MS: '2',
    POLL_INTERVAL_MS: '100',
    POLL_MAX_INTERVAL_MS: '500',
    SWEEP_INTERVAL_MS: '1000',
    JOB_HEARTBEAT_SECONDS: '10',
    JOB_SUPERVISE_SECONDS: '1',
    ...overrides,
  };
  const runtime = await startRuntime(loadConfig(env));
  // Every answer is checked against the OpenAPI document (openapi-setup.ts fails the test).
  if (runtime.server) watchResponses(runtime.server);
  const url = runtime.url!;
  const admin = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(url + p, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  return {
    runtime,
    url,
    databaseUrl,
    dataDir,
    env,
    admin,
    async createUser(quota = 1_000_000, opts = {}) {
      const { body } = await admin('POST', '/admin/users', { name: 'test user', quota });
      if (opts.privacy !== false) {
        await fetch(`${url}/api/image-batch-privacy`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${body.api_key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ accept: true }),
        });
      }
      return { id: body.id, apiKey: body.api_key };
    },
    async stop() {
      await runtime.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
      // Answers given after the last test (in afterAll) are checked here.
      assertNoViolations();
    },
  };
}
