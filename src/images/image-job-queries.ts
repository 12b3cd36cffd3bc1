import { keysetList } from '../db/keyset-list.ts';
import type { Db } from '../db/pool.ts';
import { jsonb } from '../db/pool.ts';
import { countByStatus } from '../db/status-count-queries.ts';
import type { ImageRequestBody } from '../vertex/translate.ts';

export const IMAGE_JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'] as const;
export type ImageJobStatus = (typeof IMAGE_JOB_STATUSES)[number];
export const OPEN_JOB_STATUSES: readonly ImageJobStatus[] = ['queued', 'running'];

/** A reference image (or the mask) of a job, as a stored object. */
export interface JobInput {
  key: string;
  mimeType: string;
  role: 'image' | 'mask';
}

/** One image a job made, stored as an object. */
export interface JobImage {
  index: number;
  key: string;
  mimeType: string;
  revisedPrompt: string | null;
}

/** OpenAI's image `usage`, summed over the job's calls. */
export interface ImageUsage {
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  input_tokens_details: { text_tokens: number; image_tokens: number };
}

export interface ImageJobRow {
  id: string;
  userId: number;
  mode: 'sync' | 'async';
  source: 'openai' | 'task';
  operation: 'generation' | 'edit';
  model: string;
  request: ImageRequestBody;
  inputs: JobInput[];
  n: number;
  sizeTier: string;
  unitPrice: number;
  responseFormat: 'b64_json' | 'url';
  status: ImageJobStatus;
  images: JobImage[];
  preDeducted: number;
  settled: number | null;
  refunded: number | null;
  usage: ImageUsage | null;
  errorCode: string | null;
  errorMessage: string | null;
  taskRequestId: string | null;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  expiresAt: Date;
}

export type NewImageJob = Pick<
  ImageJobRow,
  | 'id'
  | 'userId'
  | 'mode'
  | 'source'
  | 'operation'
  | 'model'
  | 'request'
  | 'inputs'
  | 'n'
  | 'sizeTier'
  | 'unitPrice'
  | 'responseFormat'
  | 'taskRequestId'
  | 'expiresAt'
>;

const columns = `id, user_id AS "userId", mode, source, operation, model, request, inputs, n, size_tier AS "sizeTier",
  unit_price::int AS "unitPrice", response_format AS "responseFormat", status, images,
  pre_deducted::int AS "preDeducted", settled::int, refunded::int, usage, error_code AS "errorCode",
  error_message AS "errorMessage", task_request_id AS "taskRequestId", created_at AS "createdAt",
  started_at AS "startedAt", completed_at AS "completedAt", expires_at AS "expiresAt"`;

/*
 * The statements of every single-image request are named: prepared once per connection, they skip
 * Postgres's parse and plan on each call (a sync request runs about ten).
 */

export async function insertImageJob(db: Db, j: NewImageJob): Promise<ImageJobRow> {
  const { rows } = await db.query<ImageJobRow>({
    name: 'insert-image-job',
    text: `INSERT INTO image_jobs (id, user_id, mode, source, operation, model, request, inputs, n, size_tier, unit_price,
                             response_format, status, started_at, pre_deducted, task_request_id, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
             CASE $3 WHEN 'sync' THEN 'running' ELSE 'queued' END, CASE $3 WHEN 'sync' THEN now() END,
             $9::int * $11::bigint, $13, $14)
     RETURNING ${columns}`,
    values: [
      j.id,
      j.userId,
      j.mode,
      j.source,
      j.operation,
      j.model,
      jsonb(j.request),
      jsonb(j.inputs),
      j.n,
      j.sizeTier,
      j.unitPrice,
      j.responseFormat,
      j.taskRequestId,
      j.expiresAt,
    ],
  });
  return rows[0];
}

export async function findImageJob(
  db: Db,
  id: string,
  opts: { forUpdate?: boolean } = {},
): Promise<ImageJobRow | null> {
  const { rows } = await db.query<ImageJobRow>({
    name: opts.forUpdate ? 'find-image-job-for-update' : 'find-image-job',
    text: `SELECT ${columns} FROM image_jobs WHERE id = $1 ${opts.forUpdate ? 'FOR UPDATE' : ''}`,
    values: [id],
  });
  return rows[0] ?? null;
}

export async function findUserImageJob(db: Db, userId: number, id: string): Promise<ImageJobRow | null> {
  const { rows } = await db.query<ImageJobRow>(`SELECT ${columns} FROM image_jobs WHERE id = $1 AND user_id = $2`, [
    id,
    userId,
  ]);
  return rows[0] ?? null;
}

export async function imageJobExistsForUser(db: Db, userId: number, id: string): Promise<boolean> {
  const { rowCount } = await db.query('SELECT 1 FROM image_jobs WHERE id = $1 AND user_id = $2', [id, userId]);
  return rowCount === 1;
}

/** Newest first, after the cursor job: one index seek per form (see keysetList). */
export async function listUserImageJobs(
  db: Db,
  userId: number,
  opts: { limit: number; after: string | null; status: ImageJobStatus | null },
): Promise<ImageJobRow[]> {
  const { rows } = await db.query<ImageJobRow>(
    keysetList({
      name: 'list-user-image-jobs',
      table: 'image_jobs',
      columns,
      live: '',
      userId,
      filter: opts.status === null ? null : { column: 'status', value: opts.status },
      after: opts.after,
      limit: opts.limit,
    }),
  );
  return rows;
}

/** The user's sync calls still running (USER_MAX_CONCURRENT_REQUESTS), counted under the user's row lock. */
export async function countOpenSyncJobs(db: Db, userId: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>({
    name: 'count-open-sync-jobs',
    text: `SELECT count(*)::int AS n FROM image_jobs WHERE user_id = $1 AND mode = 'sync' AND status IN ('queued', 'running')`,
    values: [userId],
  });
  return rows[0].n;
}

/** queued → running (first start) or running → running (a resumed run); null when the job is no longer open. */
export async function startImageJob(db: Db, id: string): Promise<ImageJobRow | null> {
  const { rows } = await db.query<ImageJobRow>(
    `UPDATE image_jobs SET status = 'running', started_at = coalesce(started_at, now())
      WHERE id = $1 AND status IN ('queued', 'running') RETURNING ${columns}`,
    [id],
  );
  return rows[0] ?? null;
}

/**
 * Records one image while the job runs; false when the job ended meanwhile (cancelled, expired)
 * or the image was recorded already (a redelivered run), so the caller drops its object.
 */
export async function recordJobImage(db: Db, id: string, image: JobImage): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE image_jobs SET images = images || jsonb_build_array($2::jsonb)
      WHERE id = $1 AND status = 'running' AND NOT images @> jsonb_build_array(jsonb_build_object('index', $3::int))`,
    [id, jsonb(image), image.index],
  );
  return rowCount === 1;
}

/** Ends an open job (compare-and-set on its status); null when it had ended already. */
export async function finishImageJob(
  db: Db,
  id: string,
  end: {
    status: Exclude<ImageJobStatus, 'queued' | 'running'>;
    settled: number;
    refunded: number;
    usage: ImageUsage | null;
    errorCode: string | null;
    errorMessage: string | null;
    /** The job keeps no images (none were paid for): its record stops naming them. */
    dropImages: boolean;
  },
): Promise<ImageJobRow | null> {
  const { rows } = await db.query<ImageJobRow>({
    name: 'finish-image-job',
    text: `UPDATE image_jobs SET status = $2, settled = $3, refunded = $4, usage = coalesce($5, usage), error_code = $6,
            error_message = $7, completed_at = now(), images = CASE WHEN $8 THEN '[]'::jsonb ELSE images END
      WHERE id = $1 AND status IN ('queued', 'running') RETURNING ${columns}`,
    values: [
      id,
      end.status,
      end.settled,
      end.refunded,
      end.usage && jsonb(end.usage),
      end.errorCode,
      end.errorMessage,
      end.dropImages,
    ],
  });
  return rows[0] ?? null;
}

/** Open jobs past their expiry, oldest first. */
export async function findExpiredOpenJobs(db: Db, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM image_jobs WHERE status IN ('queued', 'running') AND expires_at <= now()
      ORDER BY expires_at LIMIT $1`,
    [limit],
  );
  return rows.map((r) => r.id);
}

/** Async jobs open longer than `olderThanMs` since they were made: their pg-boss job may be lost. */
export async function findOpenAsyncJobs(db: Db, olderThanMs: number, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM image_jobs WHERE mode = 'async' AND status IN ('queued', 'running')
        AND created_at < now() - make_interval(secs => $1::double precision / 1000)
      ORDER BY created_at LIMIT $2`,
    [olderThanMs, limit],
  );
  return rows.map((r) => r.id);
}

/** Finished jobs past retention whose objects are still stored: marked, and returned for deletion. */
export async function markJobsPurged(db: Db, retentionMs: number, limit: number): Promise<ImageJobRow[]> {
  const { rows } = await db.query<ImageJobRow>(
    `UPDATE image_jobs SET purged_at = now()
      WHERE id IN (SELECT id FROM image_jobs WHERE purged_at IS NULL AND completed_at IS NOT NULL
                     AND completed_at < now() - make_interval(secs => $1::double precision / 1000)
                   ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED)
      RETURNING ${columns}`,
    [retentionMs, limit],
  );
  return rows;
}

/** How many image jobs (sync requests too) are in each status, for operators; absent statuses have none. */
export function countImageJobsByStatus(db: Db): Promise<Map<ImageJobStatus, number>> {
  // Kept by triggers, as for batches (sql/0006_status_counts.sql).
  return countByStatus(db, 'image_jobs');
}
