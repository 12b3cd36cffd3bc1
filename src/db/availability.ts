import { log } from '../logger.ts';

/** SQLSTATE classes and codes that mean the server is gone or refusing, not that the query is wrong. */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH']);

/** True when `err` says Postgres cannot be reached (down, restarting, out of connections), not that a query failed. */
export function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (!e) return false;
  const code = typeof e.code === 'string' ? e.code : '';
  if (UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08') || UNAVAILABLE_ERRNOS.has(code)) return true;
  const message = typeof e.message === 'string' ? e.message : '';
  // node-postgres says these in words, without a code.
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
    message,
  );
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
