import { log } from '../logger.ts';

/** SQLSTATEs that mean the server is gone or refusing (class 08 too), not that the query is wrong. */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const UNAVAILABLE_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);
/** What node-postgres and its pool say in words, without a code. */
const UNAVAILABLE_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i;

/** Errors raised on a connection to Postgres (see markDatabaseError). */
const fromDatabase = new WeakSet<object>();

/**
 * Marks `err` as raised on a connection to Postgres (its socket, by the driver, or by the job
 * queue, which talks to nothing else), and returns it. A bare socket error (ECONNRESET,
 * ECONNREFUSED) does not say where it came from: Cloud Storage's client raises the same, and that
 * is no database outage.
 */
export function markDatabaseError<T>(err: T): T {
  if (err !== null && typeof err === 'object') fromDatabase.add(err);
  return err;
}

/**
 * True when `err` says Postgres cannot be reached (down, restarting, out of connections), not that
 * a query failed, nor that something else (the object store, Vertex) could not be reached: a
 * server error of that kind (pg's DatabaseError: a SQLSTATE with a severity, also once
 * serialized), node-postgres's own words for a lost or refused connection, or a socket error
 * marked as raised on a connection to Postgres.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; severity?: unknown } | null;
  if (!e || typeof e !== 'object') return false;
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : '';
  if (typeof e.severity === 'string' && (UNAVAILABLE_SQLSTATES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) {
    return true;
  }
  // 'timeout expired': the driver's own connect timeout, destroying the socket.
  if (fromDatabase.has(e) && (UNAVAILABLE_ERRNOS.has(code) || message === 'timeout expired')) return true;
  return UNAVAILABLE_MESSAGE.test(message);
}

/**
 * Remembers whether the database is down, so an outage is logged once as a warning (and its end
 * once), not as an error per request or per queue poll.
 */
export class DatabaseAvailability {
  private downSince: number | null = null;

  /** Reports an error; true when it was an outage (already logged or logged now). */
  report(err: unknown, where: string): boolean {
    if (!isDatabaseUnavailable(err)) return false;
    if (this.downSince === null) {
      this.downSince = Date.now();
      log.warn({ where, error: (err as Error).message }, 'database unavailable: answering 503 until it is back');
    }
    return true;
  }

  /** A connection succeeded. */
  reachable(): void {
    if (this.downSince === null) return;
    log.info({ outageMs: Date.now() - this.downSince }, 'database reachable again');
    this.downSince = null;
  }

  get down(): boolean {
    return this.downSince !== null;
  }
}
