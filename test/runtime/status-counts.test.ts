import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { countBatchesByStatus } from '../../src/batches/batch-queries.ts';
import { migrate, readMigrations } from '../../src/db/migrate.ts';
import { createPool, type Db } from '../../src/db/pool.ts';
import { foldStatusCounts } from '../../src/db/status-count-queries.ts';
import { countImageJobsByStatus } from '../../src/images/image-job-queries.ts';
import { createTestDatabase } from '../support/service.ts';

/** What the counts must always be: count(*) over the tables, as /admin/system read them before. */
async function counted(db: Db) {
  const by = async (sql: string) =>
    Object.fromEntries((await db.query<{ status: string; n: number }>(sql)).rows.map((r) => [r.status, r.n]));
  return {
    batches: await by(
      'SELECT status, count(*)::int AS n FROM batches WHERE deleted_at IS NULL GROUP BY status ORDER BY status',
    ),
    imageJobs: await by('SELECT status, count(*)::int AS n FROM image_jobs GROUP BY status ORDER BY status'),
  };
}

/** What the service answers. */
async function read(db: Db) {
  const sorted = (m: Map<string, number>) => Object.fromEntries([...m].sort(([a], [b]) => a.localeCompare(b)));
  return { batches: sorted(await countBatchesByStatus(db)), imageJobs: sorted(await countImageJobsByStatus(db)) };
}

const deltaRows = async (db: Db) =>
  (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM status_count_deltas')).rows[0].n;

const BATCH_STATUS = `CASE WHEN g % 7 = 0 THEN 'validating' WHEN g % 5 = 0 THEN 'in_progress' WHEN g % 11 = 0 THEN 'failed'
                            ELSE 'completed' END`;

/** `count` batches of user 1 with ids `${prefix}_1…`, and their input files. */
async function insertBatches(db: Db, prefix: string, count: number, status = BATCH_STATUS) {
  await db.query(
    `INSERT INTO files (id, user_id, purpose, filename, bytes, mime_type, object_key)
     SELECT '${prefix}_file_' || g, 1, 'image_batch', 'in.jsonl', 100, 'application/jsonl', 'k'
       FROM generate_series(1, $1::int) g`,
    [count],
  );
  await db.query(
    `INSERT INTO batches (id, user_id, status, input_file_id, expires_at)
     SELECT '${prefix}_' || g, 1, ${status}, '${prefix}_file_' || g, now() + interval '1 day'
       FROM generate_series(1, $1::int) g`,
    [count],
  );
}

async function insertImageJobs(db: Db, prefix: string, count: number) {
  await db.query(
    `INSERT INTO image_jobs (id, user_id, mode, source, operation, model, request, n, size_tier, unit_price,
                             response_format, status, pre_deducted, expires_at)
     SELECT '${prefix}_' || g, 1, 'async', 'openai', 'generation', 'gemini-2.5-flash-image', '{}', 1, '1K', 5000, 'url',
            CASE WHEN g % 3 = 0 THEN 'queued' WHEN g % 4 = 0 THEN 'failed' ELSE 'succeeded' END, 5000,
            now() + interval '1 day'
       FROM generate_series(1, $1::int) g`,
    [count],
  );
}

describe('status counts (sql/0006_status_counts.sql)', () => {
  let pool: pg.Pool;

  beforeAll(async () => {
    pool = createPool(await createTestDatabase(), 8);
    await pool.query("INSERT INTO users (id, name) VALUES (1, 'counted')");
  });

  afterAll(async () => {
    await pool?.end();
  });

  it('stay exact across inserts, status changes, deletes, rollbacks and folds', async () => {
    const exact = async () => expect(await read(pool)).toEqual(await counted(pool));
    await exact();

    await insertBatches(pool, 'seq', 3000);
    await insertImageJobs(pool, 'img', 1000);
    await exact();
    // Once per statement: a bulk insert writes a row per status, not one per inserted row.
    expect(await deltaRows(pool)).toBeLessThanOrEqual(7);

    await pool.query("UPDATE batches SET status = 'cancelling' WHERE status = 'in_progress' AND id LIKE 'seq_%'");
    await pool.query("UPDATE image_jobs SET status = 'running' WHERE status = 'queued'");
    await exact();
    expect((await read(pool)).batches.in_progress).toBeUndefined(); // none left: absent, as before

    // Changes that move no status write nothing.
    const before = await deltaRows(pool);
    await pool.query('UPDATE batches SET request_completed = request_completed + 1');
    await pool.query('UPDATE image_jobs SET images = images');
    await pool.query("UPDATE batches SET status = 'completed' WHERE status = 'completed'");
    expect(await deltaRows(pool)).toBe(before);

    // A deleted batch leaves the counts; what happens to it afterwards does not count.
    await pool.query(
      "UPDATE batches SET deleted_at = now() WHERE id IN ('seq_1', 'seq_2', 'seq_5', 'seq_7', 'seq_14')",
    );
    await pool.query("UPDATE batches SET status = 'expired' WHERE id = 'seq_5'");
    await exact();
    await pool.query("DELETE FROM batches WHERE id IN ('seq_1', 'seq_3', 'seq_4', 'seq_10')");
    await pool.query("DELETE FROM image_jobs WHERE id IN ('img_1', 'img_3', 'img_4')");
    await exact();

    const rolledBack = await pool.connect();
    try {
      await rolledBack.query('BEGIN');
      await rolledBack.query("UPDATE batches SET status = 'failed' WHERE id LIKE 'seq_1%'");
      await rolledBack.query('DELETE FROM image_jobs');
      expect(await read(rolledBack)).toEqual(await counted(rolledBack)); // its own changes, inside it
      await rolledBack.query('ROLLBACK');
    } finally {
      rolledBack.release();
    }
    await exact();

    const deltas = await deltaRows(pool);
    expect(await foldStatusCounts(pool)).toBe(deltas);
    expect(await deltaRows(pool)).toBe(0);
    expect(await foldStatusCounts(pool)).toBe(0);
    await exact();

    // Single-row changes, each two delta rows: past a thousand, the reader folds them.
    for (let g = 20; g < 620; g++) {
      await pool.query(
        "UPDATE batches SET status = CASE WHEN status = 'completed' THEN 'expired' ELSE 'completed' END WHERE id = $1",
        [`seq_${g}`],
      );
    }
    expect(await deltaRows(pool)).toBeGreaterThanOrEqual(1000);
    await exact();
    expect(await deltaRows(pool)).toBe(0);
    await exact();
  });

  it('stay exact while transactions write, roll back and fold at the same time', async () => {
    const writers = 4;
    const transactions = 30;
    let seen = 0;
    let running = true;

    const writer = async (w: number) => {
      const client = await pool.connect();
      try {
        for (let t = 0; t < transactions; t++) {
          const id = `con_${w}_${t}`;
          await client.query('BEGIN');
          await client.query(
            `INSERT INTO files (id, user_id, purpose, filename, bytes, mime_type, object_key)
             VALUES ($1, 1, 'image_batch', 'in.jsonl', 1, 'application/jsonl', 'k')`,
            [id],
          );
          await client.query(
            `INSERT INTO batches (id, user_id, status, input_file_id, expires_at)
             VALUES ($1, 1, 'validating', $1, now() + interval '1 day')`,
            [id],
          );
          await client.query("UPDATE batches SET status = 'in_progress' WHERE id = $1", [id]);
          if (t % 3 === 0) await client.query("UPDATE batches SET status = 'completed' WHERE id = $1", [id]);
          if (t % 4 === 0) await client.query('UPDATE batches SET deleted_at = now() WHERE id = $1', [id]);
          // Another writer's batch too: two transactions change the same statuses at once.
          await client.query(
            `UPDATE batches SET status = 'expired'
              WHERE id = (SELECT id FROM batches WHERE status = 'in_progress' AND id LIKE 'con_%' AND id NOT LIKE $1
                           LIMIT 1 FOR UPDATE SKIP LOCKED)`,
            [`con_${w}_%`],
          );
          await client.query(t % 5 === 0 ? 'ROLLBACK' : 'COMMIT');
        }
      } finally {
        client.release();
      }
    };

    // In one snapshot, what the reader answers and what count(*) says agree, whatever is in flight.
    const checker = async () => {
      const client = await pool.connect();
      try {
        while (running) {
          await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
          expect(await read(client)).toEqual(await counted(client));
          await client.query('COMMIT');
          seen++;
        }
      } finally {
        client.release();
      }
    };

    const folder = async () => {
      while (running) await Promise.all([foldStatusCounts(pool), foldStatusCounts(pool)]);
    };

    const checking = Promise.all([checker(), folder()]);
    try {
      await Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
    } finally {
      running = false;
      await checking;
    }
    expect(seen).toBeGreaterThan(0);
    expect(await read(pool)).toEqual(await counted(pool));
    await foldStatusCounts(pool);
    expect(await deltaRows(pool)).toBe(0);
    expect(await read(pool)).toEqual(await counted(pool));
  });

  it('are backfilled from the rows already there when the migration runs', async () => {
    const url = await createTestDatabase({ migrated: false });
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const upgraded = createPool(url, 2);
    try {
      // The database as the previous version of the service left it, with rows in it.
      await client.query(`CREATE TABLE schema_migrations (
        version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), name text, checksum text)`);
      for (const m of (await readMigrations()).filter((m) => m.version < '0006')) {
        await client.query(m.sql);
        await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
          m.version,
          m.file,
          m.checksum,
        ]);
      }
      await client.query("INSERT INTO users (id, name) VALUES (1, 'before')");
      await insertBatches(client, 'old', 500);
      await client.query("UPDATE batches SET deleted_at = now() WHERE id LIKE 'old_1%'");
      await insertImageJobs(client, 'oldimg', 200);

      expect(await migrate(upgraded)).toContain('0006_status_counts.sql');
      expect(await deltaRows(upgraded)).toBe(0);
      const answer = await read(upgraded);
      expect(answer).toEqual(await counted(upgraded));
      expect(Object.values(answer.batches).reduce((a, b) => a + b, 0)).toBe(500 - 111); // old_1, old_10…19, old_100…199
    } finally {
      await upgraded.end();
      await client.end();
    }
  });
});
