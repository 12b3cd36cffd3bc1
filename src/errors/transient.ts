import { isDatabaseUnavailable } from '../db/availability.ts';

const RETRYABLE_STATUSES = [429, 500, 502, 503, 504];
// gRPC DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE
const RETRYABLE_GRPC = [4, 8, 10, 13, 14];
const RETRYABLE_ERRNOS = ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN'];

/**
 * Errors worth retrying rather than failing what they were for: quota (429 / RESOURCE_EXHAUSTED),
 * unavailability (503 / UNAVAILABLE), timeouts, dropped connections, a database that is down.
 * Works on live errors and on their serialized form (a dead job's recorded error).
 */
export function isTransient(err: unknown): boolean {
  const e = err as { code?: number | string; status?: number } | null;
  if (!e) return false;
  if (typeof e.code === 'number' && (RETRYABLE_GRPC.includes(e.code) || RETRYABLE_STATUSES.includes(e.code)))
    return true;
  if (typeof e.status === 'number' && RETRYABLE_STATUSES.includes(e.status)) return true;
  if (typeof e.code === 'string' && RETRYABLE_ERRNOS.includes(e.code)) return true;
  return isDatabaseUnavailable(err);
}
