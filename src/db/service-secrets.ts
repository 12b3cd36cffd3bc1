import type { Db } from './pool.ts';

/**
 * A secret every process of the service must share, made by whichever asks first: each proposes
 * its own candidate, the first insert wins and everyone reads the winner back, so processes
 * starting at the same moment still agree.
 */
export async function sharedSecret(db: Db, name: string, candidate: string): Promise<string> {
  await db.query(`INSERT INTO service_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, [
    name,
    candidate,
  ]);
  const { rows } = await db.query<{ value: string }>(`SELECT value FROM service_secrets WHERE name = $1`, [name]);
  return rows[0].value;
}
