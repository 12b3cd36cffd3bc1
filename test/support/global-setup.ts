import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createPool } from '../../src/db/pool.ts';

/**
 * One real Postgres for the whole run (embedded, or TEST_DATABASE_URL's server), and a
 * migrated template database that every test file clones into a database of its own.
 */
export default async function globalSetup() {
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ibg-test-pg-'));
    const server = await startEmbeddedPostgres(path.join(dir, 'pg'));
    (globalThis as Record<string, unknown>).__ibgPg = { server, dir };
    adminUrl = server.connectionString('postgres');
  }
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS ibg_template');
  await admin.query('CREATE DATABASE ibg_template');
  await admin.end();
  const templateUrl = withDatabase(adminUrl, 'ibg_template');
  const pool = createPool(templateUrl, 2);
  await migrate(pool);
  await pool.end();
  process.env.IBG_TEST_ADMIN_URL = adminUrl;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}
