import { ApiError } from './errors/api-error.ts';

/** One page of a list, newest first or as asked, and whether more follow. */
export interface Page<T> {
  page: T[];
  hasMore: boolean;
}

/**
 * One page of a keyset-paginated list, the way every list route reads: `after` must be one of
 * the caller's items (else 400 `invalid_cursor`, never an empty page that hides a typo), and one
 * row more than `limit` is fetched to know whether more follow.
 */
export async function keysetPage<T>(opts: {
  after: string | null;
  limit: number;
  /** What `after` must be, for the message: e.g. "one of your batches". */
  what: string;
  cursorExists(after: string): Promise<boolean>;
  fetch(limit: number): Promise<T[]>;
}): Promise<Page<T>> {
  if (opts.after !== null && !(await opts.cursorExists(opts.after))) {
    throw new ApiError('invalid_cursor', `'after' must be the id of ${opts.what} (got '${opts.after}').`, 'after');
  }
  const rows = await opts.fetch(opts.limit + 1);
  return { page: rows.slice(0, opts.limit), hasMore: rows.length > opts.limit };
}
