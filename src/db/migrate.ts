import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';

const sqlDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../sql');

/** An arbitrary constant: every process that migrates this database takes the same lock. */
const MIGRATION_LOCK = 7_351_902_114;

/**
 * Applies forward-only numbered migrations (`sql/0001_name.sql`, …) in order. A session
 * advisory lock makes two processes starting at once safe: the second waits, then finds
 * everything applied.
 */
export async function migrate(pool: pg.Pool): Promise<string[]> {
  const files = (await fs.readdir(sqlDir)).filter((f) => /^\d{4}_.+\.sql$/.test(f)).sort();
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
    const { rows } = await client.query<{ version: string }>('SELECT version FROM schema_migrations');
    const done = new Set(rows.map((r) => r.version));
    const applied: string[] = [];
    for (const file of files) {
      const version = file.slice(0, 4);
      if (done.has(version)) continue;
      const sql = await fs.readFile(path.join(sqlDir, file), 'utf8');
      await client.query('BEGIN');
      try {
        await client.query(sql);
        await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [version]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new Error(`migration ${file} failed: ${(err as Error).message}`);
      }
      applied.push(file);
    }
    return applied;
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    client.release();
  }
}
