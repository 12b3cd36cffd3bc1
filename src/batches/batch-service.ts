import type pg from 'pg';
import type { Pool } from '../db/pool.ts';
import { withTransaction } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import type { NewFile } from '../files/file-queries.ts';
import { findUserFile, insertFile, markFilesDeleted } from '../files/file-queries.ts';
import { looksLikeId, newId } from '../ids.ts';
import { keysetPage } from '../keyset-page.ts';
import { cancelJob } from '../pipeline/cancel.ts';
import type { JobQueue } from '../pipeline/job-queue.ts';
import { validateJob } from '../pipeline/validate.ts';
import { batchPrefix } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { endBatch } from '../webhooks/batch-events.ts';
import * as q from './batch-queries.ts';
import { FINISHED } from './batch-states.ts';

/**
 * The endpoints a batch can run: what its lines' `url` must be. An edits line is a generations
 * body whose reference images (`image_file_ids`, vision files) are the images to edit.
 */
export const BATCH_ENDPOINTS = ['/v1/images/generations', '/v1/images/edits'] as const;

/** What a batch is asked for, however it is made. */
export interface BatchOptions {
  endpoint: string;
  metadata: Record<string, string> | null;
  /** Life of the output and error files (OpenAI's `output_expires_after.seconds`); null = FILE_RETENTION. */
  outputExpiresSeconds: number | null;
}

/** Runs in the transaction that creates the batch (e.g. to keep an idempotent answer with it). */
export type WithBatch = (tx: pg.PoolClient, batch: q.BatchRow) => Promise<void>;

/** The client-facing life of a batch: create, read, list, cancel, delete. The pipeline does the rest. */
export class BatchService {
  private readonly pool: Pool;
  private readonly store: ObjectStore;
  private readonly queue: JobQueue;
  private readonly completionWindowMs: number;

  constructor(deps: { pool: Pool; store: ObjectStore; queue: JobQueue; completionWindowMs: number }) {
    this.pool = deps.pool;
    this.store = deps.store;
    this.queue = deps.queue;
    this.completionWindowMs = deps.completionWindowMs;
  }

  /** A batch of a JSONL uploaded with it (`/v1/image-files`): file, batch and its validation in one transaction. */
  async createWithUpload(
    input: Omit<NewFile, 'purpose'>,
    options: BatchOptions,
    within?: WithBatch,
  ): Promise<q.BatchRow> {
    return withTransaction(this.pool, async (tx) => {
      await insertFile(tx, { ...input, purpose: 'image_batch' });
      return this.insert(tx, input.userId, input.id, options, within);
    });
  }

  /**
   * A batch of a JSONL uploaded before (OpenAI's `POST /v1/batches` with `input_file_id`): any
   * live `batch` or `image_batch` file of the user. The same file may feed several batches.
   */
  async createFromFile(
    userId: number,
    inputFileId: string,
    options: BatchOptions,
    within?: WithBatch,
  ): Promise<q.BatchRow> {
    return withTransaction(this.pool, async (tx) => {
      const file = looksLikeId('file', inputFileId) ? await findUserFile(tx, userId, inputFileId) : null;
      if (!file) throw notFound('file', inputFileId, 'input_file_id');
      if (file.purpose !== 'batch' && file.purpose !== 'image_batch') {
        throw new ApiError(
          'invalid_input_file',
          `File ${inputFileId} has purpose '${file.purpose}'; a batch reads a JSONL uploaded with purpose 'batch'.`,
          'input_file_id',
        );
      }
      return this.insert(tx, userId, inputFileId, options, within);
    });
  }

  private async insert(
    tx: pg.PoolClient,
    userId: number,
    inputFileId: string,
    options: BatchOptions,
    within: WithBatch | undefined,
  ): Promise<q.BatchRow> {
    const batch = await q.insertBatch(tx, {
      id: newId('batch'),
      userId,
      inputFileId,
      ...options,
      expiresAt: new Date(Date.now() + this.completionWindowMs),
      completionWindow: windowLabel(this.completionWindowMs),
    });
    await this.queue.send(validateJob, { batchId: batch.id }, { tx, key: batch.id });
    await within?.(tx, batch);
    return batch;
  }

  async get(userId: number, id: string): Promise<q.ClientBatchRow> {
    const batch = looksLikeId('batch', id) ? await q.findUserBatch(this.pool, userId, id) : null;
    if (!batch) throw notFound('batch', id, 'batch_id');
    return batch;
  }

  list(userId: number, opts: { limit: number; after: string | null; status: q.BatchStatus | null }) {
    return keysetPage({
      ...opts,
      what: 'one of your batches',
      cursorExists: async (after) => looksLikeId('batch', after) && q.batchExistsForUser(this.pool, userId, after),
      fetch: (limit) => q.listUserBatches(this.pool, userId, { ...opts, limit }),
    });
  }

  /**
   * A batch still validating is cancelled at once (nothing was charged or sent); a running one
   * moves to `cancelling` and the pipeline cancels its Vertex jobs, stitches what finished and
   * settles. Cancelling twice answers the same batch.
   */
  async cancel(userId: number, id: string): Promise<q.ClientBatchRow> {
    const batch = await this.get(userId, id);
    if (batch.status === 'cancelling' || batch.status === 'cancelled') return batch;
    const cancelled = await withTransaction(this.pool, (tx) =>
      endBatch({ queue: this.queue }, tx, id, ['validating'], 'cancelled', {
        outcome: 'cancelled',
        settled: 0,
        refunded: 0,
      }),
    );
    if (cancelled) return cancelled;
    const cancelling = await withTransaction(this.pool, async (tx) => {
      const row = await q.transition(tx, id, ['in_progress'], 'cancelling', { outcome: 'cancelled' });
      if (row) await this.queue.send(cancelJob, { batchId: id }, { tx, key: id });
      return row;
    });
    if (cancelling) return cancelling;
    const now = await this.get(userId, id);
    if (now.status === 'cancelling' || now.status === 'cancelled') return now;
    throw new ApiError(
      'batch_not_cancellable',
      `Batch ${id} is ${now.status} and can no longer be cancelled.`,
      'batch_id',
    );
  }

  /** Deletes a finished batch and every file it has (input, output, errors, staging). */
  async delete(userId: number, id: string): Promise<void> {
    const batch = await this.get(userId, id);
    if (!FINISHED.includes(batch.status)) {
      throw new ApiError(
        'batch_not_finished',
        `Batch ${id} is ${batch.status}; only a finished batch can be deleted (cancel it first).`,
        'batch_id',
      );
    }
    const fileIds = [batch.inputFileId, batch.outputFileId, batch.errorFileId].filter((f): f is string => Boolean(f));
    const files = await withTransaction(this.pool, async (tx) => {
      const locked = await q.findBatch(tx, id, { forUpdate: true });
      // A concurrent delete got here first: the batch is gone, and only the first removes its files.
      if (!locked) throw notFound('batch', id, 'batch_id');
      await q.markBatchDeleted(tx, id);
      return markFilesDeleted(tx, fileIds);
    });
    // Objects go after the commit: a crash here leaves only unreachable objects, never a live
    // record pointing at a missing one.
    for (const f of files) await this.store.delete(f.objectKey);
    await this.store.deletePrefix(batchPrefix(userId, id));
  }
}

/** A duration as OpenAI writes a completion window: `24h`, or `90m`, `45s` when not whole hours. */
export function windowLabel(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.ceil(ms / 1000)}s`;
}
