import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { log } from '../logger.ts';

const sqlDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../sql');

/** Only `NNNN_name.sql` files are migrations; anything else in sql/ (e.g. schema.sql) is not. */
const MIGRATION_FILE = /^(\d{4})_.+\.sql$/;

/** An arbitrary constant: every process that migrates this database takes the same lock. */
const MIGRATION_LOCK = 7_351_902_114;

export interface Migration {
  /** The four digits the file name starts with. */
  version: string;
  /** The file name, e.g. `0001_init.sql`. */
  file: string;
  sql: string;
  /** sha256 of the file's bytes, hex (what `sha256sum` prints). */
  checksum: string;
}

/**
 * The database and this code disagree about migrations, so the service must not start:
 * an applied migration's file was edited, and/or the database has versions this code lacks.
 */
export class MigrationError extends Error {
  /** Files whose content differs from what was applied. */
  readonly editedFiles: string[];
  /** Versions recorded in the database that have no file here. */
  readonly unknownVersions: string[];
  constructor(problems: string[], details: { editedFiles: string[]; unknownVersions: string[] }) {
    super(`Database migrations do not match this code:\n  - ${problems.join('\n  - ')}`);
    this.name = 'MigrationError';
    this.editedFiles = details.editedFiles;
    this.unknownVersions = details.unknownVersions;
  }
}

/** The migrations in sql/, in order. */
export async function readMigrations(dir = sqlDir): Promise<Migration[]> {
  const files = (await fs.readdir(dir)).filter((f) => MIGRATION_FILE.test(f)).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const bytes = await fs.readFile(path.join(dir, file));
    const version = file.slice(0, 4);
    const previous = migrations.at(-1);
    if (previous?.version === version) {
      throw new MigrationError([`${previous.file} and ${file} have the same version ${version}: renumber one`], {
        editedFiles: [],
        unknownVersions: [],
      });
    }
    migrations.push({
      version,
      file,
      sql: bytes.toString('utf8'),
      checksum: createHash('sha256').update(bytes).digest('hex'),
    });
  }
  return migrations;
}

interface AppliedRow {
  version: string;
  name: string | null;
  checksum: string | null;
}

/**
 * Applies forward-only numbered migrations (`sql/0001_name.sql`, …) in order, recording each
 * one's file name and checksum. A session advisory lock makes two processes starting at once
 * safe: the second waits, then finds everything applied.
 *
 * Before applying anything it checks what is already applied, and throws a MigrationError when
 * an applied file was edited since or the database has versions this code does not know (it
 * was migrated by a newer version of the service). Rows recorded before checksums existed are
 * adopted: they get the current file's checksum.
 *
 * Returns the files applied by this call.
 */
export async function migrate(pool: pg.Pool): Promise<string[]> {
  const migrations = await readMigrations();
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    // name and checksum last: a table created before they existed gets them in the same order.
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), name text, checksum text)`);
    await client.query(
      'ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS name text, ADD COLUMN IF NOT EXISTS checksum text',
    );
    const { rows } = await client.query<AppliedRow>(
      'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
    );
    check(migrations, rows);

    const done = new Map(rows.map((r) => [r.version, r]));
    const adopted: string[] = [];
    for (const m of migrations) {
      const row = done.get(m.version);
      if (!row || row.checksum !== null) continue;
      await client.query('UPDATE schema_migrations SET name = $2, checksum = $3 WHERE version = $1', [
        m.version,
        m.file,
        m.checksum,
      ]);
      adopted.push(m.file);
    }
    if (adopted.length) log.info({ adopted }, 'recorded checksums of migrations applied before checksums existed');

    const applied: string[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await client.query('BEGIN');
      try {
        await client.query(m.sql);
        await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
          m.version,
          m.file,
          m.checksum,
        ]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new Error(`migration ${m.file} failed: ${(err as Error).message}`);
      }
      applied.push(m.file);
    }
    return applied;
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    client.release();
  }
}

/** Throws a MigrationError naming every disagreement between the applied rows and the files. */
function check(migrations: Migration[], rows: AppliedRow[]) {
  const byVersion = new Map(migrations.map((m) => [m.version, m]));
  const problems: string[] = [];
  const editedFiles: string[] = [];
  const unknown: AppliedRow[] = [];
  for (const row of rows) {
    const m = byVersion.get(row.version);
    if (!m) {
      unknown.push(row);
    } else if (row.checksum !== null && row.checksum !== m.checksum) {
      editedFiles.push(m.file);
      problems.push(
        `sql/${m.file} was changed after it was applied to this database ` +
          `(sha256 ${row.checksum.slice(0, 12)}… when applied, ${m.checksum.slice(0, 12)}… now). ` +
          `Migrations are forward-only: restore sql/${m.file} to what was applied and put the change ` +
          'in a new migration.',
      );
    }
  }
  if (unknown.length) {
    const names = unknown.map((r) => (r.name ? `${r.version} (${r.name})` : r.version));
    problems.push(
      `the database has migration${unknown.length > 1 ? 's' : ''} ${names.join(', ')} that this code does not ` +
        'have: the database is newer than this code. Run a version of the service that has ' +
        `${unknown.length > 1 ? 'them' : 'it'}.`,
    );
  }
  if (problems.length) {
    throw new MigrationError(problems, { editedFiles, unknownVersions: unknown.map((r) => r.version) });
  }
}
