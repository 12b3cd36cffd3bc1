import { type Db, jsonb } from '../db/pool.ts';

/** A key's record: running (statusCode null, held by a lease) or answered (kept for 24 h). */
export interface IdempotencyRow {
  fingerprint: string | null;
  statusCode: number | null;
  response: unknown;
  lockedUntil: Date | null;
  createdAt: Date;
}

/** How long an answered key is kept and replayed. */
export const KEY_LIFETIME_HOURS = 24;

/**
 * Takes the key for a new request: it is free, or its last holder died (an unanswered key whose
 * lease ran out), or its answer is older than 24 h. False when another request holds it or an
 * answer is kept. Concurrent claims serialise on the primary key: exactly one wins.
 */
export async function claimKey(db: Db, userId: number, key: string, leaseMs: number): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO idempotency_keys (user_id, key, locked_until)
     VALUES ($1, $2, now() + make_interval(secs => $3::double precision / 1000))
     ON CONFLICT (user_id, key) DO UPDATE
        SET locked_until = EXCLUDED.locked_until, fingerprint = NULL, status_code = NULL, response = NULL,
            created_at = now()
      WHERE (idempotency_keys.status_code IS NULL AND idempotency_keys.locked_until < now())
         OR idempotency_keys.created_at < now() - make_interval(hours => ${KEY_LIFETIME_HOURS})`,
    [userId, key, leaseMs],
  );
  return rowCount === 1;
}

export async function findKey(db: Db, userId: number, key: string): Promise<IdempotencyRow | null> {
  const { rows } = await db.query<IdempotencyRow>(
    `SELECT fingerprint, status_code AS "statusCode", response, locked_until AS "lockedUntil", created_at AS "createdAt"
       FROM idempotency_keys WHERE user_id = $1 AND key = $2`,
    [userId, key],
  );
  return rows[0] ?? null;
}

/** The running request is alive: extend its lease. */
export async function renewKey(db: Db, userId: number, key: string, leaseMs: number): Promise<void> {
  await db.query(
    `UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3::double precision / 1000)
      WHERE user_id = $1 AND key = $2 AND status_code IS NULL`,
    [userId, key, leaseMs],
  );
}

/** Keeps the answer; run in the transaction of the write it reports. */
export async function answerKey(
  db: Db,
  userId: number,
  key: string,
  answer: { fingerprint: string; statusCode: number; response: unknown },
): Promise<void> {
  await db.query(
    `UPDATE idempotency_keys SET fingerprint = $3, status_code = $4, response = $5, locked_until = NULL
      WHERE user_id = $1 AND key = $2`,
    [userId, key, answer.fingerprint, answer.statusCode, jsonb(answer.response)],
  );
}

/** A request that ended without an answer kept (it failed) frees its key for a retry. */
export async function releaseKey(db: Db, userId: number, key: string): Promise<void> {
  await db.query('DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND status_code IS NULL', [userId, key]);
}

/** The sweep drops answers past their 24 h. */
export async function purgeOldKeys(db: Db, limit: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM idempotency_keys WHERE ctid IN (
       SELECT ctid FROM idempotency_keys
        WHERE created_at < now() - make_interval(hours => ${KEY_LIFETIME_HOURS}) LIMIT $1)`,
    [limit],
  );
  return rowCount ?? 0;
}
