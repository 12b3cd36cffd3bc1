import * as batches from '../batches/batch-queries.ts';
import { isLive } from '../batches/batch-states.ts';
import { withTransaction } from '../db/pool.ts';
import { isTransient } from '../errors/transient.ts';
import type { Services } from '../services.ts';
import type { JobSnapshot } from '../vertex/batch-jobs.ts';
import { abandonShardBatch } from './dead-letter.ts';
import { defineJob, SHORT_STEP } from './job.ts';
import { finalizeWhenAllDone, pollDelayMs, pollJob, schedulePoll } from './poll.ts';
import { findShard, markDone, markSubmitted } from './shard-queries.ts';

export const SHARD_LABEL = 'ibg_shard';
export const BATCH_LABEL = 'ibg_batch';

/**
 * Step 3: one BatchPredictionJob per shard. Submissions of one shard are serialised by an
 * advisory lock held for the whole step, and the shard's job is looked up by label before one
 * is created, so neither a retry nor a crash between create and commit makes a second job. A
 * job created for a shard that was cancelled meanwhile is cancelled again. Vertex refusing the
 * job for good (not a 429/503) ends the shard as failed, so the batch settles and refunds.
 */
export async function submitShard(s: Services, shardId: string): Promise<void> {
  let orphan: string | null = null;
  const next = await withTransaction(s.pool, async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`submit:${shardId}`]);
    const shard = await findShard(tx, shardId);
    if (shard?.status !== 'staged') return shard?.status === 'submitted' ? 'poll' : null;
    const batch = await batches.findBatch(tx, shard.batchId);
    if (!batch || !isLive(batch)) return null;

    let job: JobSnapshot;
    try {
      job =
        (await s.vertex.findByLabel(SHARD_LABEL, shard.id)) ??
        (await s.vertex.create({
          displayName: `${batch.id}-${shard.seq}`,
          model: batch.modelSnapshot!.publisherModel,
          inputUri: shard.inputUri,
          outputPrefix: shard.outputPrefix,
          labels: { [BATCH_LABEL]: batch.id.toLowerCase(), [SHARD_LABEL]: shard.id },
        }));
    } catch (err) {
      if (isTransient(err)) throw err;
      // Lock order as everywhere: the batch row, then its shards.
      await batches.findBatch(tx, shard.batchId, { forUpdate: true });
      const message = `Vertex refused the job: ${(err as Error).message}`;
      await markDone(tx, shardId, {
        state: 'JOB_STATE_FAILED',
        outputDir: null,
        error: { code: Number((err as { code?: number }).code ?? 2), message },
        succeeded: 0,
        failed: 0,
      });
      await finalizeWhenAllDone(s, tx, shard.batchId);
      return null;
    }
    await batches.findBatch(tx, shard.batchId, { forUpdate: true });
    if (await markSubmitted(tx, shardId, job.name)) {
      await s.queue.send(
        pollJob,
        { shardId, attempt: 0 },
        { tx, key: shardId, delayMs: pollDelayMs(0, s.config.pipeline) },
      );
    } else {
      orphan = job.name; // the shard was cancelled while we created its job
    }
    return null;
  });
  if (orphan) await s.vertex.cancel(orphan);
  if (next === 'poll') await schedulePoll(s, shardId, 0);
}

export const submitJob = defineJob<{ shardId: string }>({
  name: 'shard-submit',
  queue: SHORT_STEP,
  handle: (s, { shardId }) => submitShard(s, shardId),
  onDead: (s, { shardId }, error) => abandonShardBatch(s, shardId, error),
});
