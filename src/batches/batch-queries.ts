import type { ModelInfo } from '../billing/model-catalog.ts';
import { type Db, jsonb } from '../db/pool.ts';
import type { BatchErrorCode } from '../errors/codes.ts';
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

const batchColumns = `id, user_id AS "userId", status, outcome, endpoint, input_file_id AS "inputFileId",
  output_file_id AS "outputFileId", error_file_id AS "errorFileId", model, errors, metadata,
  request_total AS "requestTotal", request_completed AS "requestCompleted", request_failed AS "requestFailed",
  image_total AS "imageTotal", image_succeeded AS "imageSucceeded", model_snapshot AS "modelSnapshot", pre_deducted AS "preDeducted", settled, refunded,
  created_at AS "createdAt", in_progress_at AS "inProgressAt", finalizing_at AS "finalizingAt",
  completed_at AS "completedAt", failed_at AS "failedAt", expired_at AS "expiredAt",
  cancelling_at AS "cancellingAt", cancelled_at AS "cancelledAt", expires_at AS "expiresAt", completion_window AS "completionWindow",
  output_expires_seconds AS "outputExpiresSeconds"`;

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
  return rows[0];
}

export async function findBatch(db: Db, id: string, opts: { forUpdate?: boolean } = {}): Promise<BatchRow | null> {
  const { rows } = await db.query<BatchRow>(
    `SELECT ${batchColumns} FROM batches WHERE id = $1 AND deleted_at IS NULL ${opts.forUpdate ? 'FOR UPDATE' : ''}`,
    [id],
  );
  return rows[0] ?? null;
}

export async function findUserBatch(db: Db, userId: number, id: string): Promise<BatchRow | null> {
  const { rows } = await db.query<BatchRow>(
    `SELECT ${batchColumns} FROM batches WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`,
    [id, userId],
  );
  return rows[0] ?? null;
}

/** Newest first; `after` is the last id of the previous page (keyset pagination). */
export async function listUserBatches(
  db: Db,
  userId: number,
  opts: { limit: number; after: string | null; status: BatchStatus | null },
): Promise<BatchRow[]> {
  const { rows } = await db.query<BatchRow>(
    `SELECT ${batchColumns} FROM batches b
      WHERE user_id = $1 AND deleted_at IS NULL
        AND ($3::text IS NULL OR status = $3)
        AND ($2::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM batches WHERE id = $2 AND user_id = $1))
      ORDER BY created_at DESC, id DESC
      LIMIT $4`,
    [userId, opts.after, opts.status, opts.limit],
  );
  return rows;
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
  const { rows } = await db.query<BatchRow>(
    `UPDATE batches SET ${sets.join(', ')} WHERE id = $1 AND status = ANY($2::text[]) AND deleted_at IS NULL
     RETURNING ${batchColumns}`,
    values,
  );
  return rows[0] ?? null;
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
