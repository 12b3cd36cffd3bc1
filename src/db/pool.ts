import pg from 'pg';
import { log } from '../logger.ts';
import { markDatabaseError } from './availability.ts';

/** int8 columns (quota, bytes) come back as JS numbers: every amount we store is far below 2^53. */
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Pool = pg.Pool;
/** Anything that runs a query: the pool, or a client inside a transaction. */
export type Db = Pick<pg.Pool, 'query'> | pg.PoolClient;

/** A connection attempt that takes longer fails (and the request answers 503), instead of hanging. */
const CONNECT_TIMEOUT_MS = 5000;

/**
 * A node-postgres client whose socket errors are marked as the database's (markDatabaseError): a
 * refused or reset connection is then told apart from the same errno out of another client.
 */
export class DatabaseClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    // Added before the client's own listener (at connect): marked before any query hears of it.
    this.connection.on('error', markDatabaseError);
  }
}

export function createPool(connectionString: string, max = 10): pg.Pool {
  const pool = new pg.Pool({
    Client: DatabaseClient,
    connectionString,
    max,
    idleTimeoutMillis: 10_000,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  // An idle client losing its connection (e.g. Postgres restarting) must not crash the process.
  pool.on('error', () => {});
  // Every query of the pool and of its transaction clients goes through here: the one place where
  // user strings are made storable.
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    client.query = ((...args: unknown[]) => query(...storableArgs(args))) as typeof client.query;
  });
  return pool;
}

/**
 * U+0000 is the one character Postgres cannot store in `text` or `jsonb`, and user strings (a
 * file's bytes echoed in a validation message, a JSON `\u0000` in a custom_id) may hold it. Every
 * query parameter is made storable here, at the database boundary: NUL becomes U+FFFD, in strings,
 * arrays and JSON values alike.
 */
export function storable(value: unknown): unknown {
  if (typeof value === 'string') return value.includes('\u0000') ? value.replaceAll('\u0000', '\uFFFD') : value;
  if (Array.isArray(value)) return value.map(storable);
  if (value === null || typeof value !== 'object' || value instanceof Date || Buffer.isBuffer(value)) return value;
  if ('toPostgres' in value) return value;
  return jsonText(value); // what pg would send for an object, made storable
}

/** A value for a `jsonb` parameter (an array would otherwise go as a Postgres array). */
export const jsonb = (value: unknown) => ({ toPostgres: () => jsonText(value) });

/**
 * JSON.stringify escapes NUL as `\u0000` (and a backslash as `\\`), so an escape preceded by an
 * even run of backslashes is a NUL, whether it came from a key or a value.
 */
function jsonText(value: unknown): string {
  return JSON.stringify(value).replace(/(?<!\\)((?:\\\\)*)\\u0000/g, '$1\\ufffd');
}

function storableArgs(args: unknown[]): unknown[] {
  const [first, values, ...rest] = args;
  if (typeof first === 'string' && Array.isArray(values)) return [first, values.map(storable), ...rest];
  if (first && typeof first === 'object' && 'text' in first && Array.isArray((first as pg.QueryConfig).values)) {
    const config = first as pg.QueryConfig;
    return [{ ...config, values: config.values!.map(storable) }, values, ...rest];
  }
  return args;
}

/** What to do once the transaction open on a client commits (a rollback drops it). */
const commitHooks = new WeakMap<object, Array<() => void>>();

/**
 * Runs `fn` once what was written on `db` is committed: at once outside a transaction, after the
 * COMMIT inside one of withTransaction, never if it rolls back. For what happens outside the
 * database (a log line, a metric), so it never reports a change that did not happen.
 */
export function afterCommit(db: Db, fn: () => void): void {
  const hooks = commitHooks.get(db);
  if (hooks) hooks.push(fn);
  else fn();
}

/** A connection lost while checked out, between two queries (nobody else listens then). */
const ignoreLostConnection = () => {};

/**
 * Runs `fn` in a transaction. Serialization failures and deadlocks are retried, so callers
 * can write plain read-modify-write code with row locks.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    // Postgres going away while this client waits between queries (e.g. on a Vertex call inside
    // the transaction) emits 'error' on the client: unheard, that would crash the process. The
    // next query fails instead, and the client is dropped from the pool on release.
    client.on('error', ignoreLostConnection);
    const hooks: Array<() => void> = [];
    let result: T;
    try {
      await client.query('BEGIN');
      commitHooks.set(client, hooks);
      result = await fn(client);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      const code = (err as { code?: string }).code;
      if ((code === '40001' || code === '40P01') && attempt < 5) continue;
      throw err;
    } finally {
      commitHooks.delete(client);
      client.removeListener('error', ignoreLostConnection);
      client.release();
    }
    for (const hook of hooks) {
      try {
        hook();
      } catch (err) {
        // Committed is committed: a failing report of it must not make the caller think otherwise.
        log.error({ err }, 'after-commit hook failed');
      }
    }
    return result;
  }
}
