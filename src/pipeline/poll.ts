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
    // Most looks at a job waiting in Vertex's queue see nothing new, and write nothing: with
    // thousands of jobs in flight, a look is one read, one Vertex call and the next look queued.
    const counted = job.succeeded !== shard.imagesSucceeded || job.failed !== shard.imagesFailed;
    if (counted || job.state !== shard.vertexState) {
      await recordProgress(s.pool, shardId, { state: job.state, succeeded: job.succeeded, failed: job.failed });
    }
    if (counted) await refreshLiveCounts(s.pool, shard.batchId);
    await schedulePoll(s, shardId, nextPollAttempt(attempt, shard.vertexState, job.state));
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

/** Each look that saw no change of the job's state waits this many times longer than the last. */
const POLL_BACKOFF = 2;

/**
 * The wait before look number `attempt` (0-based since the job's state last changed):
 * POLL_INTERVAL_MS, then twice as long each time, up to POLL_MAX_INTERVAL_MS. A job is looked at
 * soon after it is submitted and soon after each change (a small batch ends a few seconds after
 * it starts running), while one that sits in Vertex's queue for hours is asked less and less
 * often; never more than once per POLL_INTERVAL_MS.
 */
export function pollDelayMs(attempt: number, p: { pollIntervalMs: number; pollMaxIntervalMs: number }): number {
  return Math.min(p.pollMaxIntervalMs, Math.round(p.pollIntervalMs * POLL_BACKOFF ** Math.min(attempt, 60)));
}

/** The next look's attempt: back to 0 when the job's state changed since the last look (the first has none). */
export function nextPollAttempt(attempt: number, stateBefore: string | null, stateNow: string): number {
  return stateBefore === null || stateBefore === stateNow ? attempt + 1 : 0;
}

export async function schedulePoll(s: Services, shardId: string, attempt: number): Promise<void> {
  const delayMs = pollDelayMs(attempt, s.config.pipeline);
  await s.queue.send(pollJob, { shardId, attempt }, { key: shardId, delayMs });
}

export const pollJob = defineJob<{ shardId: string; attempt: number }>({
  name: 'shard-poll',
  // Every look is a delayed job: one missed by its wake-up waits at most a second more.
  queue: { ...SHORT_STEP, idlePollSeconds: 1 },
  handle: (s, { shardId, attempt }) => pollShard(s, shardId, attempt ?? 0),
  onDead: (s, { shardId }, error) => abandonShardBatch(s, shardId, error),
});
