import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import type pg from 'pg';
import { MigrationError, migrate, readMigrations } from '../../src/db/migrate.ts';
import { createPool } from '../../src/db/pool.ts';
import { setLogLevel } from '../../src/logger.ts';
import { createTestDatabase } from '../support/service.ts';

setLogLevel((process.env.TEST_LOG_LEVEL as 'info') ?? 'silent');

const INIT = '0001_init.sql';
const initChecksum = async () =>
  createHash('sha256')
    .update(await fs.readFile(path.join('sql', INIT)))
    .digest('hex');
/** Every migration of sql/ as schema_migrations records it, however many there are. */
const allRecorded = async () =>
  (await readMigrations()).map((m) => ({ version: m.version, name: m.file, checksum: m.checksum }));

async function withFreshDatabase(fn: (pool: pg.Pool, url: string) => Promise<void>) {
  const url = await createTestDatabase({ migrated: false });
  const pool = createPool(url, 2);
  try {
    await fn(pool, url);
  } finally {
    await pool.end();
  }
}

async function refusal(pool: pg.Pool): Promise<MigrationError> {
  const err = await migrate(pool).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MigrationError);
  return err as MigrationError;
}

describe('migrations', () => {
  it('are applied once when two processes start at the same time', async () => {
    const url = await createTestDatabase({ migrated: false });
    const a = createPool(url, 2);
    const b = createPool(url, 2);
    try {
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      expect([...ra, ...rb].sort()).toEqual(ra.length ? ra : rb);
      expect(ra.length === 0 || rb.length === 0).toBe(true);
      const { rows } = await a.query('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).toEqual((await readMigrations()).map((m) => m.version));
      const { rows: models } = await a.query('SELECT id FROM models ORDER BY id');
      expect(models.map((m) => m.id)).toContain('gemini-2.5-flash-image');
      expect(await migrate(a)).toEqual([]);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('are only the NNNN_name.sql files of sql/ (not schema.sql)', async () => {
    const files = (await readMigrations()).map((m) => m.file);
    expect(files).toContain(INIT);
    expect(files.every((f) => /^\d{4}_.+\.sql$/.test(f))).toBe(true);
    expect(await fs.readdir('sql')).toContain('schema.sql');
    expect(files).not.toContain('schema.sql');
  });

  it('record the file name and sha256 of each applied file', () =>
    withFreshDatabase(async (pool) => {
      const migrations = await readMigrations();
      expect(await migrate(pool)).toEqual(migrations.map((m) => m.file));
      const { rows } = await pool.query('SELECT version, name, checksum FROM schema_migrations ORDER BY version');
      expect(rows).toEqual(await allRecorded());
      // The checksum is sha256 of the file's bytes, as `sha256sum` prints it.
      expect(rows[0]).toEqual({ version: '0001', name: INIT, checksum: await initChecksum() });
    }));

  it('refuse to start when an applied migration was edited since', () =>
    withFreshDatabase(async (pool) => {
      await migrate(pool);
      // As if the file had different content when it was applied.
      await pool.query(`UPDATE schema_migrations SET checksum = repeat('ab', 32) WHERE version = '0001'`);
      const err = await refusal(pool);
      expect(err.editedFiles).toEqual([INIT]);
      expect(err.unknownVersions).toEqual([]);
      expect(err.message).toContain(`sql/${INIT} was changed after it was applied`);
      expect(err.message).toContain('forward-only');
      expect(err.message).toContain('new migration');
      // Refused, not repaired: the stored checksum is left as it was.
      const { rows } = await pool.query(`SELECT checksum FROM schema_migrations WHERE version = '0001'`);
      expect(rows[0].checksum).toBe('ab'.repeat(32));
    }));

  it('refuse to start, applying nothing, when the database has versions this code does not have', () =>
    withFreshDatabase(async (pool) => {
      // A database a newer version of the service migrated: 0001 not even applied here yet, so
      // that applying it before checking would show.
      await pool.query(`CREATE TABLE schema_migrations (
        version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), name text, checksum text)`);
      await pool.query(`INSERT INTO schema_migrations (version, name, checksum)
        VALUES ('9998', '9998_future.sql', repeat('0', 64)), ('9999', NULL, NULL)`);
      const err = await refusal(pool);
      expect(err.unknownVersions).toEqual(['9998', '9999']);
      expect(err.editedFiles).toEqual([]);
      expect(err.message).toContain('9998 (9998_future.sql), 9999');
      expect(err.message).toContain('newer than this code');
      expect(err.message).toContain('Run a version of the service that has them');
      const { rows } = await pool.query(`SELECT to_regclass('public.models') AS t`);
      expect(rows[0].t).toBeNull();
    }));

  it('adopt rows applied before checksums existed', () =>
    withFreshDatabase(async (pool) => {
      await migrate(pool);
      // The table as the previous migrator left it: no name or checksum columns.
      await pool.query('ALTER TABLE schema_migrations DROP COLUMN name, DROP COLUMN checksum');
      expect(await migrate(pool)).toEqual([]);
      const { rows } = await pool.query('SELECT version, name, checksum FROM schema_migrations ORDER BY version');
      expect(rows).toEqual(await allRecorded());
      expect(rows[0]).toEqual({ version: '0001', name: INIT, checksum: await initChecksum() });
      // Rows with the columns but no values yet are adopted the same way.
      await pool.query('UPDATE schema_migrations SET name = NULL, checksum = NULL');
      expect(await migrate(pool)).toEqual([]);
      const { rows: again } = await pool.query(
        'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
      );
      expect(again).toEqual(await allRecorded());
      expect(again[0].checksum).toBe(await initChecksum());
    }));

  it('stop `npm start` with the message alone and exit code 2 when refused', () =>
    withFreshDatabase(async (pool, url) => {
      await migrate(pool);
      await pool.query(`INSERT INTO schema_migrations (version) VALUES ('9999')`);
      const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ibg-migrate-'));
      try {
        const child = spawn(process.execPath, ['src/main.ts'], {
          env: { PATH: process.env.PATH, DATA_DIR: dataDir, DATABASE_URL: url, PORT: '0', ADMIN_TOKEN: 'x'.repeat(24) },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        const [code] = await once(child, 'exit');
        expect(code).toBe(2);
        expect(stderr).toMatch(/^Database migrations do not match this code:\n/);
        expect(stderr).toContain('9999');
        expect(stderr).not.toMatch(/"level":"error"|\n\s+at /);
      } finally {
        await fs.rm(dataDir, { recursive: true, force: true });
      }
    }));
});
