import type { ModelInfo } from '../billing/model-catalog.ts';
import { keysetList } from '../db/keyset-list.ts';
import { afterCommit, type Db, jsonb } from '../db/pool.ts';
import { countByStatus } from '../db/status-count-queries.ts';
import type { BatchErrorCode } from '../errors/codes.ts';
import { log } from '../logger.ts';
import { type BatchOutcome, type BatchStatus, canTransition } from './batch-states.ts';

export type { BatchOutcome, BatchStatus } from './batch-states.ts';

export interface BatchError {
  code: BatchErrorCode;
  message: string;
  param: string | null;
  line: number | null;
}

export interface BatchRow {
  id: string;
  userId: number;
  status: BatchStatus;
  outcome: BatchOutcome | null;
  endpoint: string;
  inputFileId: string;
  outputFileId: string | null;
  errorFileId: string | null;
  model: string | null;
  errors: BatchError[] | null;
  metadata: Record<string, string> | null;
  requestTotal: number;
  requestCompleted: number;
  requestFailed: number;
  imageTotal: number;
  imageSucceeded: number;
  modelSnapshot: ModelInfo | null;
  preDeducted: number;
  settled: number | null;
  refunded: number | null;
  createdAt: Date;
  inProgressAt: Date | null;
  finalizingAt: Date | null;
  completedAt: Date | null;
  failedAt: Date | null;
  expiredAt: Date | null;
  cancellingAt: Date | null;
  cancelledAt: Date | null;
  expiresAt: Date;
  /** As OpenAI shows it, e.g. `24h`. */
  completionWindow: string;
  /** OpenAI's `output_expires_after.seconds`: the life of the output and error files (null: FILE_RETENTION). */
  outputExpiresSeconds: number | null;
}

/** Columns a state change may set, by their camelCase name. */
const settable = {
  outcome: 'outcome',
  outputFileId: 'output_file_id',
  errorFileId: 'error_file_id',
  model: 'model',
  errors: 'errors',
  requestTotal: 'request_total',
  requestCompleted: 'request_completed',
  requestFailed: 'request_failed',
  imageTotal: 'image_total',
  imageSucceeded: 'image_succeeded',
  modelSnapshot: 'model_snapshot',
  preDeducted: 'pre_deducted',
  settled: 'settled',
  refunded: 'refunded',
} as const;
export type BatchChanges = Partial<Pick<BatchRow, keyof typeof settable>>;

/** The columns a batch's view shows (but its timestamps). */
const viewFields = `id, status, endpoint, input_file_id AS "inputFileId", output_file_id AS "outputFileId",
  error_file_id AS "errorFileId", model, errors, metadata, request_total AS "requestTotal",
  request_completed AS "requestCompleted", request_failed AS "requestFailed", pre_deducted AS "preDeducted", settled,
  refunded, completion_window AS "completionWindow"`;
const batchFields = `${viewFields}, user_id AS "userId", outcome, image_total AS "imageTotal",
  image_succeeded AS "imageSucceeded", output_expires_seconds AS "outputExpiresSeconds"`;
const batchTimes = {
  createdAt: 'created_at',
  inProgressAt: 'in_progress_at',
  finalizingAt: 'finalizing_at',
  completedAt: 'completed_at',
  failedAt: 'failed_at',
  expiredAt: 'expired_at',
  cancellingAt: 'cancelling_at',
  cancelledAt: 'cancelled_at',
  expiresAt: 'expires_at',
} as const;
const times = (read: (column: string) => string) =>
  Object.entries(batchTimes)
    .map(([name, column]) => `${read(column)} AS "${name}"`)
    .join(', ');
const batchColumns = `${batchFields}, ${times((column) => column)}, model_snapshot AS "modelSnapshot"`;

/**
 * A batch as clients read it (GET and list): what its view shows and no more, since every field
 * costs its parse on each row of each page. No model snapshot (only the pipeline reads it: at a
 * page of 100 that is 60 KB of JSON less to send and parse), and timestamps to the second, read
 * as epoch seconds (an integer to parse instead of a timestamp's text: pg's date parser was the
 * largest cost of a page of 100).
 */
export type ClientBatchRow = Omit<
  BatchRow,
  'modelSnapshot' | 'userId' | 'outcome' | 'imageTotal' | 'imageSucceeded' | 'outputExpiresSeconds'
>;

const clientBatchColumns = `${viewFields}, ${times((column) => `floor(date_part('epoch', ${column}))::int8`)}`;

function clientBatch(row: Record<string, unknown>): ClientBatchRow {
  for (const name of Object.keys(batchTimes)) {
    const seconds = row[name] as number | null;
    if (seconds !== null) row[name] = new Date(seconds * 1000);
  }
  return row as unknown as ClientBatchRow;
}

export async function insertBatch(
  db: Db,
  b: {
    id: string;
    userId: number;
    inputFileId: string;
    metadata: Record<string, string> | null;
    expiresAt: Date;
    completionWindow: string;
    endpoint: string;
    outputExpiresSeconds: number | null;
  },
): Promise<BatchRow> {
  const { rows } = await db.query<BatchRow>(
    `INSERT INTO batches (id, user_id, status, input_file_id, metadata, expires_at, completion_window, endpoint, output_expires_seconds)
     VALUES ($1, $2, 'validating', $3, $4, $5, $6, $7, $8) RETURNING ${batchColumns}`,
    [b.id, b.userId, b.inputFileId, b.metadata, b.expiresAt, b.completionWindow, b.endpoint, b.outputExpiresSeconds],
  );
  logStatusChange(db, rows[0], null);
  return rows[0];
}

export async function findBatch(db: Db, id: string, opts: { forUpdate?: boolean } = {}): Promise<BatchRow | null> {
  const { rows } = await db.query<BatchRow>(
    `SELECT ${batchColumns} FROM batches WHERE id = $1 AND deleted_at IS NULL ${opts.forUpdate ? 'FOR UPDATE' : ''}`,
    [id],
  );
  return rows[0] ?? null;
}

/**
 * A named (prepared) statement: what clients poll most, and a primary-key lookup whose plan
 * never depends on its values, so each connection plans it once.
 */
export async function findUserBatch(db: Db, userId: number, id: string): Promise<ClientBatchRow | null> {
  const { rows } = await db.query({
    name: 'find-user-batch',
    text: `SELECT ${clientBatchColumns} FROM batches WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`,
    values: [id, userId],
  });
  return rows[0] ? clientBatch(rows[0]) : null;
}

/** Newest first, after the cursor batch: one index seek per form (see keysetList). */
export async function listUserBatches(
  db: Db,
  userId: number,
  opts: { limit: number; after: string | null; status: BatchStatus | null },
): Promise<ClientBatchRow[]> {
  const { rows } = await db.query(
    keysetList({
      name: 'list-user-batches',
      table: 'batches',
      columns: clientBatchColumns,
      live: 'deleted_at IS NULL',
      userId,
      filter: opts.status === null ? null : { column: 'status', value: opts.status },
      after: opts.after,
      limit: opts.limit,
    }),
  );
  return rows.map(clientBatch);
}

export async function batchExistsForUser(db: Db, userId: number, id: string): Promise<boolean> {
  const { rowCount } = await db.query('SELECT 1 FROM batches WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL', [
    id,
    userId,
  ]);
  return rowCount === 1;
}

/**
 * The compare-and-set every state change goes through: moves the batch to `to` (stamping
 * `<to>_at`) only if it is still in one of `from`. Returns null when another actor got there
 * first, which makes every step safe to run twice.
 */
export async function transition(
  db: Db,
  id: string,
  from: BatchStatus[],
  to: BatchStatus | null,
  changes: BatchChanges = {},
): Promise<BatchRow | null> {
  const illegal = to ? from.filter((f) => !canTransition(f, to)) : [];
  if (illegal.length) throw new Error(`a batch cannot go from ${illegal.join(', ')} to ${to}`);
  const sets: string[] = [];
  const values: unknown[] = [id, from];
  if (to) {
    values.push(to);
    sets.push(`status = $${values.length}`);
    if (to !== 'validating') sets.push(`${to}_at = coalesce(${to}_at, now())`);
  }
  for (const [key, value] of Object.entries(changes)) {
    const column = settable[key as keyof typeof settable];
    if (!column) throw new Error(`batch column ${key} cannot be set`);
    values.push(key === 'errors' || key === 'modelSnapshot' ? jsonb(value) : value);
    // An outcome, once decided (e.g. expired), is kept: a later cancel cannot rewrite it.
    sets.push(key === 'outcome' ? `outcome = coalesce(outcome, $${values.length})` : `${column} = $${values.length}`);
  }
  // The row as it was, locked, says which of `from` the batch moved from (for the log line).
  const { rows } = await db.query<BatchRow & { previousStatus: BatchStatus }>(
    `UPDATE batches SET ${sets.join(', ')}
       FROM (SELECT status AS previous_status FROM batches WHERE id = $1 FOR UPDATE) previous
      WHERE id = $1 AND status = ANY($2::text[]) AND deleted_at IS NULL
     RETURNING ${batchColumns}, previous.previous_status AS "previousStatus"`,
    values,
  );
  if (!rows[0]) return null;
  const { previousStatus, ...batch } = rows[0];
  if (to && previousStatus !== to) logStatusChange(db, batch, previousStatus);
  return batch;
}

/** One info line per status change of a batch, once its transaction has committed. */
function logStatusChange(db: Db, batch: BatchRow, from: BatchStatus | null) {
  afterCommit(db, () =>
    log.info({ batchId: batch.id, userId: batch.userId, from, to: batch.status }, 'batch status changed'),
  );
}

export async function markBatchDeleted(db: Db, id: string): Promise<void> {
  await db.query('UPDATE batches SET deleted_at = now() WHERE id = $1', [id]);
}

/** Batches past their completion window that are still running (the expiry sweep). */
export async function findExpiredOpenBatches(db: Db, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM batches WHERE status IN ('validating', 'in_progress') AND expires_at < now() AND deleted_at IS NULL
      ORDER BY expires_at LIMIT $1`,
    [limit],
  );
  return rows.map((r) => r.id);
}

/** Open batches, for the sweep that re-enqueues work a crashed process may have dropped. */
export async function findOpenBatches(
  db: Db,
  olderThanMs: number,
  limit: number,
): Promise<Array<{ id: string; status: BatchStatus }>> {
  const { rows } = await db.query<{ id: string; status: BatchStatus }>(
    `SELECT id, status FROM batches
      WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') AND deleted_at IS NULL
        AND created_at < now() - make_interval(secs => $1::double precision / 1000)
      ORDER BY created_at LIMIT $2`,
    [olderThanMs, limit],
  );
  return rows;
}

/** How many batches are in each status, for operators (deleted batches left out); absent statuses have none. */
export function countBatchesByStatus(db: Db): Promise<Map<BatchStatus, number>> {
  // Kept by triggers: a count(*) over every batch took seconds at a million (sql/0006_status_counts.sql).
  return countByStatus(db, 'batches');
}
