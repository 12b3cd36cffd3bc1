import type pg from 'pg';

/** Filters are enum values the API has checked (a status, a purpose): nothing to escape. */
const FILTER_VALUE = /^[a-z0-9_]{1,40}$/;

/**
 * One page of a user's list, newest first (or oldest first), after a cursor row: the query of
 * one form of a keyset list (sql/0005_read_path_indexes.sql plans its indexes).
 *
 * - The rows are the user's live ones (`live`), `filter` an optional equality on one column
 *   (status, purpose; written into the statement), and `after` the id of the last row of the
 *   previous page: the cursor row is read once by primary key and compared as a row, so that it
 *   is part of the index condition (a seek), not a filter. A cursor that is not one of the user's
 *   live rows matches no row.
 * - Each form (filter or not, cursor or not, order) is a prepared statement of its own, named
 *   after it: Postgres parses and plans a named statement once per connection, and planning a list
 *   anew cost it about four times as much as running it (~200 µs against ~50 µs). Its generic plan
 *   must still seek by index, so no form has an optional condition (`$2 IS NULL OR …`) that only
 *   a plan made for the values could drop.
 */
export function keysetList(opts: {
  /** Names the statement: one per table and column list. */
  name: string;
  table: string;
  columns: string;
  /** Conditions on the user's rows that every list applies (e.g. `deleted_at IS NULL`), or ''. */
  live: string;
  userId: number;
  filter: { column: string; value: string } | null;
  after: string | null;
  limit: number;
  order?: 'asc' | 'desc';
}): pg.QueryConfig {
  const [cmp, dir] = opts.order === 'asc' ? ['>', 'ASC'] : ['<', 'DESC'];
  const live = opts.live ? ` AND ${opts.live}` : '';
  const values: unknown[] = [opts.userId, opts.limit];
  let where = `user_id = $1${live}`;
  let form = opts.order ?? 'desc';
  if (opts.filter !== null) {
    // A literal, not a parameter: a generic plan that knew only "some status" could pick the
    // list index and filter it, reading the user's whole history for a status they have none of.
    // With the value in the text, each value has its own statement and its plan knows how rare it is.
    const { column, value } = opts.filter;
    if (!FILTER_VALUE.test(value)) throw new Error(`not a ${column} value: ${JSON.stringify(value)}`);
    where += ` AND ${column} = '${value}'`;
    form += `-${column}=${value}`;
  }
  if (opts.after !== null) {
    values.push(opts.after);
    where += ` AND (created_at, id) ${cmp} (SELECT created_at, id FROM ${opts.table} WHERE id = $${values.length} AND user_id = $1${live})`;
    form += '-after';
  }
  return {
    name: `${opts.name}-${form}`,
    text: `SELECT ${opts.columns} FROM ${opts.table} WHERE ${where} ORDER BY created_at ${dir}, id ${dir} LIMIT $2`,
    values,
  };
}
