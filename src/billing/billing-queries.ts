import type { Db } from '../db/pool.ts';

export type LogType = 'topup' | 'pre_deduction' | 'difference' | 'adjustment';

export interface BillingLogRow {
  id: number;
  userId: number;
  batchId: string | null;
  imageJobId: string | null;
  model: string | null;
  type: LogType;
  quotaDelta: number;
  content: string;
  createdAt: Date;
}

/**
 * Moves quota and writes its log row in one statement: `delta` to the remaining quota (and the
 * row's quota_delta), `usedDelta` to the used quota. Refuses (returns false, writing nothing)
 * when the remaining quota would go negative, so a racing spender can never overdraw. The
 * UPDATE takes the user's row lock: moves of one user are serialised by it.
 */
export async function moveQuotaLogged(
  db: Db,
  move: {
    userId: number;
    delta: number;
    usedDelta: number;
    batchId?: string | null;
    imageJobId?: string | null;
    model?: string | null;
    type: LogType;
    content: string;
  },
): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'move-quota-logged',
    text: `WITH moved AS (
       UPDATE users SET quota = quota + $2, used_quota = used_quota + $3 WHERE id = $1 AND quota + $2 >= 0 RETURNING id
     )
     INSERT INTO billing_logs (user_id, batch_id, image_job_id, model, type, quota_delta, content)
     SELECT id, $4, $5, $6, $7, $2, $8 FROM moved`,
    values: [
      move.userId,
      move.delta,
      move.usedDelta,
      move.batchId ?? null,
      move.imageJobId ?? null,
      move.model ?? null,
      move.type,
      move.content,
    ],
  });
  return rowCount === 1;
}

export async function listLogs(
  db: Db,
  filter: { userId?: number; batchId?: string; imageJobId?: string; afterId?: number; limit: number },
) {
  const { rows } = await db.query<BillingLogRow>(
    `SELECT id, user_id AS "userId", batch_id AS "batchId", image_job_id AS "imageJobId", model, type,
            quota_delta AS "quotaDelta", content, created_at AS "createdAt"
       FROM billing_logs
      WHERE ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR batch_id = $2)
        AND ($5::text IS NULL OR image_job_id = $5) AND id > $3
      ORDER BY id LIMIT $4`,
    [filter.userId ?? null, filter.batchId ?? null, filter.afterId ?? 0, filter.limit, filter.imageJobId ?? null],
  );
  return rows;
}

/**
 * A user's quota next to the sum and count of their log rows, read in one statement (one
 * snapshot), so a quota move committing meanwhile is seen on both sides or on neither.
 */
export async function userLedger(
  db: Db,
  userId: number,
): Promise<{ quota: number; logSum: number; logCount: number } | null> {
  const { rows } = await db.query<{ quota: number; logSum: number; logCount: number }>(
    `SELECT u.quota, coalesce(l.sum, 0)::bigint AS "logSum", coalesce(l.count, 0)::int AS "logCount"
       FROM users u
       LEFT JOIN (SELECT sum(quota_delta) AS sum, count(*) AS count FROM billing_logs WHERE user_id = $1) l ON true
      WHERE u.id = $1`,
    [userId],
  );
  return rows[0] ?? null;
}
