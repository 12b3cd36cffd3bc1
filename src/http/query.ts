import querystring from 'node:querystring';
import type { Express, Request } from 'express';
import { BATCH_STATUSES, type BatchStatus, isBatchStatus } from '../batches/batch-states.ts';
import { ApiError } from '../errors/api-error.ts';

const PARSED = Symbol('parsed query');

/**
 * `req.query`, parsed once per request: Express 5 parses the query string again on every read
 * of it, and a list request reads it four or five times (the NUL check, limit, after, status…).
 * Parsed as the app's 'simple' query parser does (node:querystring); the query string is the
 * same at every mount point, so it is taken from `originalUrl` (up to a `#`, as Express's URL
 * parser cuts it). Every read gets the same object: nothing may change it.
 */
export function parseQueryOnce(app: Express): void {
  Object.defineProperty(app.request, 'query', {
    configurable: true,
    enumerable: true,
    get(this: Request & { [PARSED]?: { raw: string; query: querystring.ParsedUrlQuery } }) {
      const url = this.originalUrl ?? this.url;
      const at = url.indexOf('?');
      const hash = url.indexOf('#', at + 1);
      const raw = at === -1 ? '' : url.slice(at + 1, hash === -1 ? undefined : hash);
      const memo = this[PARSED];
      if (memo?.raw === raw) return memo.query;
      const query = querystring.parse(raw);
      this[PARSED] = { raw, query };
      return query;
    },
  });
}

/** Query parameters of list routes, read one way everywhere. */
type Query = Record<string, unknown>;

/** A parameter given at most once (`?a=1&a=2` is refused rather than guessed at). */
export function singleQuery(query: Query, name: string): string | undefined {
  const v = query[name];
  if (Array.isArray(v)) throw new ApiError('invalid_query', `Give '${name}' once.`, name);
  return typeof v === 'string' ? v : undefined;
}

/** `limit`: a whole number from 1 to `max`, `fallback` when absent. */
export function listLimit(query: Query, opts: { fallback: number; max: number }): number {
  const raw = singleQuery(query, 'limit');
  if (raw === undefined) return opts.fallback;
  const limit = Number(raw);
  if (!/^\d+$/.test(raw) || limit < 1 || limit > opts.max) {
    throw new ApiError('invalid_limit', `limit must be a whole number from 1 to ${opts.max} (got '${raw}').`, 'limit');
  }
  return limit;
}

/** The query of a batch list: `limit` (1–100, default 20), `after`, `status`. */
export function batchListQuery(query: Query): { limit: number; after: string | null; status: BatchStatus | null } {
  const status = singleQuery(query, 'status');
  if (status !== undefined && !isBatchStatus(status)) {
    throw new ApiError(
      'invalid_status',
      `status must be one of ${BATCH_STATUSES.join(', ')} (got '${status}').`,
      'status',
    );
  }
  return {
    limit: listLimit(query, { fallback: 20, max: 100 }),
    after: singleQuery(query, 'after') ?? null,
    status: status ?? null,
  };
}

/** OpenAI's list envelope. */
export function listPage<T extends { id: string }>(data: T[], hasMore: boolean) {
  return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: hasMore };
}
