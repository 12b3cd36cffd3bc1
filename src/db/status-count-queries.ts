import type { Db } from './pool.ts';

/** The tables counted by status, as sql/0006_status_counts.sql names them. */
type CountedTable = 'batches' | 'image_jobs';

/** Deltas a reader sums before it folds them (a fold of this many takes milliseconds). */
const FOLD_AT_DELTAS = 1000;

/** An arbitrary constant: one fold at a time, whatever the process. */
const FOLD_LOCK = 7_351_902_115;

/**
 * How many rows of `table` are in each status (batches: not deleted), exactly as count(*) would
 * say; absent statuses have none. The folded counts plus the deltas not yet folded, read in one
 * statement, so in one snapshot (see sql/0006_status_counts.sql). Folds when it found many deltas.
 */
export async function countByStatus<S extends string>(db: Db, table: CountedTable): Promise<Map<S, number>> {
  const { rows } = await db.query<{ status: S; count: number; deltas: number }>(
    `SELECT status, sum(n)::bigint AS count, count(*) FILTER (WHERE delta)::int AS deltas
       FROM (SELECT status, n, false AS delta FROM status_counts WHERE kind = $1
             UNION ALL
             SELECT status, n, true FROM status_count_deltas WHERE kind = $1) c
      GROUP BY status`,
    [table],
  );
  if (rows.reduce((sum, r) => sum + r.deltas, 0) >= FOLD_AT_DELTAS) await foldStatusCounts(db);
  return new Map(rows.filter((r) => r.count !== 0).map((r) => [r.status, r.count]));
}

/**
 * Moves the deltas into status_counts in one statement, so a reader sees each delta on one side
 * or the other. One fold at a time: while another runs, this one folds nothing rather than wait
 * for its locks (what it leaves goes with the next). Returns how many delta rows it folded.
 */
export async function foldStatusCounts(db: Db): Promise<number> {
  const { rows } = await db.query<{ folded: number }>(
    `WITH d AS (DELETE FROM status_count_deltas WHERE (SELECT pg_try_advisory_xact_lock($1::bigint))
                RETURNING kind, status, n),
          f AS (INSERT INTO status_counts AS c (kind, status, n)
                SELECT kind, status, sum(n) FROM d GROUP BY kind, status
                ON CONFLICT (kind, status) DO UPDATE SET n = c.n + excluded.n)
     SELECT count(*)::int AS folded FROM d`,
    [FOLD_LOCK],
  );
  return rows[0].folded;
}
