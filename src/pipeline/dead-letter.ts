import type { Job } from 'pg-boss';
import type { BatchError } from '../batches/batch-queries.ts';
import * as batches from '../batches/batch-queries.ts';
import { FINISHED } from '../batches/batch-states.ts';
import { withTransaction } from '../db/pool.ts';
import { isTransient } from '../errors/transient.ts';
import { log } from '../logger.ts';
import type { Services } from '../services.ts';
import { endBatch } from '../webhooks/batch-events.ts';
import type { AnyJob } from './job.ts';
import { findShard, listShards } from './shard-queries.ts';

/**
 * A job that used up its retries, as pg-boss hands it to the dead-letter queue: the payload, and
 * the queue and last error it failed with. A last error that is transient (Vertex, Cloud Storage
 * or Postgres unavailable) is an outage, not a broken step: the sweep queues the step again and
 * the completion window bounds the wait. Anything else failed the same way on every try, and the
 * job's `onDead` settles what it was for.
 */
export async function handleDeadJob(s: Services, jobs: readonly AnyJob[], dead: Job<object>): Promise<void> {
  const source = dead as Job<object> & { sourceName?: string; sourceOutput?: unknown };
  const fields = { job: source.sourceName, data: dead.data, error: source.sourceOutput };
  if (isTransient(source.sourceOutput)) {
    log.warn(fields, 'pipeline step used up its retries during an outage; the sweep will queue it again');
    return;
  }
  log.error(fields, 'pipeline step failed for good');
  const job = jobs.find((j) => j.name === source.sourceName);
  const message = (source.sourceOutput as { message?: unknown } | null)?.message;
  await job?.onDead?.(s, dead.data, typeof message === 'string' ? message : 'unknown error');
}

const INTERNAL_ERROR: BatchError = {
  code: 'internal_error',
  message: 'The batch could not be processed: an internal step kept failing. Everything charged was refunded.',
  param: null,
  line: null,
};

/**
 * The dead-letter end of a batch: it ends `failed` with `internal_error`, everything charged is
 * refunded in the same transaction (no output is delivered), and its Vertex jobs are asked to
 * stop. Safe to run twice: a finished batch is left as it is.
 */
export async function abandonBatch(s: Services, batchId: string, reason: string): Promise<void> {
  const running = await withTransaction(s.pool, async (tx) => {
    const batch = await batches.findBatch(tx, batchId, { forUpdate: true });
    if (!batch || FINISHED.includes(batch.status)) return [];
    const refund = batch.preDeducted;
    await endBatch(s, tx, batchId, [batch.status], 'failed', {
      outcome: 'failed',
      errors: [...(batch.errors ?? []), INTERNAL_ERROR],
      settled: 0,
      refunded: refund,
    });
    await s.billing.refundIn(tx, {
      userId: batch.userId,
      batchId,
      model: batch.model,
      amount: refund,
      content: `batch ${batchId} failed (internal error): refunded ${refund} of ${batch.preDeducted}`,
    });
    return (await listShards(tx, batchId)).filter((x) => x.status === 'submitted' && x.vertexJob);
  });
  for (const shard of running) {
    await s.vertex.cancel(shard.vertexJob!).catch((err) => log.warn({ err }, 'vertex job not cancelled'));
  }
  log.error({ batchId, reason }, 'batch failed: a step kept failing');
}

/** The same, for a step that works on one shard. */
export async function abandonShardBatch(s: Services, shardId: string, reason: string): Promise<void> {
  const shard = await findShard(s.pool, shardId);
  if (shard) await abandonBatch(s, shard.batchId, reason);
}
