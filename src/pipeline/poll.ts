import type pg from 'pg';
import * as batches from '../batches/batch-queries.ts';
import { withTransaction } from '../db/pool.ts';
import type { Services } from '../services.ts';
import { isNotFound, type JobSnapshot } from '../vertex/batch-jobs.ts';
import { abandonShardBatch } from './dead-letter.ts';
import { finalizeJob } from './finalize.ts';
import { defineJob, SHORT_STEP } from './job.ts';
import { findShard, listShards, markDone, recordProgress, refreshLiveCounts } from './shard-queries.ts';

/**
 * Step 4: look at a shard's job once, record its progress (live request counts on the
 * batch), and either schedule the next look with backoff or, when the job has ended, mark
 * the shard done — the last shard to finish moves the batch to `finalizing`.
 */
export async function pollShard(s: Services, shardId: string, attempt: number): Promise<void> {
  const shard = await findShard(s.pool, shardId);
  if (shard?.status !== 'submitted' || !shard.vertexJob) return;
  const job = await lookAt(s, shard.vertexJob);
  if (!job.terminal) {
    await recordProgress(s.pool, shardId, { state: job.state, succeeded: job.succeeded, failed: job.failed });
    await refreshLiveCounts(s.pool, shard.batchId);
    await schedulePoll(s, shardId, attempt + 1);
    return;
  }
  await withTransaction(s.pool, async (tx) => {
    await batches.findBatch(tx, shard.batchId, { forUpdate: true });
    await markDone(tx, shardId, {
      state: job.state,
      outputDir: job.outputDir,
      error: job.error,
      succeeded: job.succeeded,
      failed: job.failed,
    });
    await finalizeWhenAllDone(s, tx, shard.batchId);
  });
  await refreshLiveCounts(s.pool, shard.batchId);
}

/**
 * The job's state. A job that no longer exists (deleted outside the service) has ended:
 * treated as failed, so the batch settles and refunds instead of waiting forever.
 */
async function lookAt(s: Services, name: string): Promise<JobSnapshot> {
  try {
    return await s.vertex.get(name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    return {
      name,
      state: 'JOB_STATE_FAILED',
      terminal: true,
      succeeded: 0,
      failed: 0,
      outputDir: null,
      error: { code: 5, message: `The Vertex job ${name} no longer exists.` },
    };
  }
}

/** With the batch row locked: if every shard has ended, move on to stitching and settling. */
export async function finalizeWhenAllDone(s: Services, tx: pg.PoolClient, batchId: string) {
  const shards = await listShards(tx, batchId);
  if (shards.some((x) => x.status !== 'done')) return;
  const moved = await batches.transition(tx, batchId, ['in_progress', 'cancelling'], 'finalizing');
  if (moved) await s.queue.send(finalizeJob, { batchId }, { tx, key: batchId });
}

export async function schedulePoll(s: Services, shardId: string, attempt: number): Promise<void> {
  const { pollIntervalMs, pollMaxIntervalMs } = s.config.pipeline;
  // Backoff: a long queue is asked less often, but never less than every POLL_MAX_INTERVAL_MS.
  const delayMs = Math.min(pollMaxIntervalMs, Math.round(pollIntervalMs * 1.5 ** Math.min(attempt, 30)));
  await s.queue.send(pollJob, { shardId, attempt }, { key: shardId, delayMs });
}

export const pollJob = defineJob<{ shardId: string; attempt: number }>({
  name: 'shard-poll',
  queue: SHORT_STEP,
  handle: (s, { shardId, attempt }) => pollShard(s, shardId, attempt ?? 0),
  onDead: (s, { shardId }, error) => abandonShardBatch(s, shardId, error),
});
