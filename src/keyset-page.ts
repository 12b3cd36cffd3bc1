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
 *
 * `fetch` must find no row after a cursor that `cursorExists` would refuse (its cursor lookup has
 * the same conditions): then a page with rows proves the cursor good, and only an empty page
 * costs the second query that tells "nothing after it" from "no such item".
 */
export async function keysetPage<T>(opts: {
  after: string | null;
  limit: number;
  /** What `after` must be, for the message: e.g. "one of your batches". */
  what: string;
  cursorExists(after: string): Promise<boolean>;
  fetch(limit: number): Promise<T[]>;
}): Promise<Page<T>> {
  const rows = await opts.fetch(opts.limit + 1);
  if (opts.after !== null && rows.length === 0 && !(await opts.cursorExists(opts.after))) {
    throw new ApiError('invalid_cursor', `'after' must be the id of ${opts.what} (got '${opts.after}').`, 'after');
  }
  return { page: rows.slice(0, opts.limit), hasMore: rows.length > opts.limit };
}
