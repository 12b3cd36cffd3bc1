import type { Db } from '../db/pool.ts';

export interface UserRow {
  id: number;
  name: string;
  quota: number;
  usedQuota: number;
  privacyAcceptedAt: Date | null;
  createdAt: Date;
}

const userColumns = `id, name, quota, used_quota AS "usedQuota", privacy_accepted_at AS "privacyAcceptedAt", created_at AS "createdAt"`;

export async function insertUser(db: Db, name: string): Promise<UserRow> {
  const { rows } = await db.query<UserRow>(`INSERT INTO users (name) VALUES ($1) RETURNING ${userColumns}`, [name]);
  return rows[0];
}

export async function findUser(db: Db, id: number): Promise<UserRow | null> {
  const { rows } = await db.query<UserRow>(`SELECT ${userColumns} FROM users WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

/**
 * The user's row lock, for a transaction that must see the user settled before it decides (an
 * image request counts the user's running requests under it). Quota moves take it themselves.
 */
export async function lockUser(db: Db, id: number): Promise<UserRow | null> {
  // Named: prepared once per connection (every single-image request starts here).
  const { rows } = await db.query<UserRow>({
    name: 'lock-user',
    text: `SELECT ${userColumns} FROM users WHERE id = $1 FOR UPDATE`,
    values: [id],
  });
  return rows[0] ?? null;
}

export async function insertApiKey(db: Db, userId: number, keyHash: string, keyHint: string): Promise<number> {
  const { rows } = await db.query<{ id: number }>(
    'INSERT INTO api_keys (user_id, key_hash, key_hint) VALUES ($1, $2, $3) RETURNING id',
    [userId, keyHash, keyHint],
  );
  return rows[0].id;
}

export async function findUserIdByKeyHash(db: Db, keyHash: string): Promise<number | null> {
  const { rows } = await db.query<{ userId: number }>(
    'SELECT user_id AS "userId" FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL',
    [keyHash],
  );
  return rows[0]?.userId ?? null;
}

export async function listApiKeys(db: Db, userId: number) {
  const { rows } = await db.query<{ id: number; keyHint: string; createdAt: Date; revokedAt: Date | null }>(
    `SELECT id, key_hint AS "keyHint", created_at AS "createdAt", revoked_at AS "revokedAt"
       FROM api_keys WHERE user_id = $1 ORDER BY id`,
    [userId],
  );
  return rows;
}

/** The revoked key's hash (revoking twice is once), or null when the user has no such key. */
export async function revokeApiKey(db: Db, userId: number, keyId: number): Promise<string | null> {
  const { rows } = await db.query<{ keyHash: string }>(
    `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND user_id = $2
     RETURNING key_hash AS "keyHash"`,
    [keyId, userId],
  );
  return rows[0]?.keyHash ?? null;
}

/** Idempotent: the first acceptance time is kept. */
export async function acceptPrivacy(db: Db, userId: number): Promise<Date> {
  const { rows } = await db.query<{ at: Date }>(
    `UPDATE users SET privacy_accepted_at = coalesce(privacy_accepted_at, now()) WHERE id = $1
     RETURNING privacy_accepted_at AS at`,
    [userId],
  );
  return rows[0].at;
}

/**
 * Users newest first (by id), the page after id `after`; `search` matches a name containing it
 * (any case) or, when it is a number, that id.
 */
export async function listUsers(
  db: Db,
  opts: { limit: number; after: number | null; search: string | null },
): Promise<UserRow[]> {
  const pattern = opts.search === null ? null : `%${opts.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  const id = opts.search !== null && /^\d{1,15}$/.test(opts.search.trim()) ? Number(opts.search.trim()) : null;
  const { rows } = await db.query<UserRow>(
    `SELECT ${userColumns} FROM users
      WHERE ($1::bigint IS NULL OR id < $1)
        AND ($2::text IS NULL OR name ILIKE $2 OR id = $3::bigint)
      ORDER BY id DESC
      LIMIT $4`,
    [opts.after, pattern, id, opts.limit],
  );
  return rows;
}
