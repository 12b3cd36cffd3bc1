import * as batches from '../batches/batch-queries.ts';
import { findModel } from '../billing/model-catalog.ts';
import { withTransaction } from '../db/pool.ts';
import type { Services } from '../services.ts';
import { JOBS } from './job-queue.ts';
import { findShard, markSubmitted } from './shard-queries.ts';
import { isLive } from './stage.ts';

export const SHARD_LABEL = 'ibg_shard';
export const BATCH_LABEL = 'ibg_batch';

/**
 * Step 3: one BatchPredictionJob per shard. Before creating, the shard's job is looked up by
 * label, so a crash between create and commit never makes a second job; a job created for a
 * shard that was cancelled meanwhile is cancelled again.
 */
export async function submitShard(s: Services, shardId: string): Promise<void> {
  const shard = await findShard(s.pool, shardId);
  if (!shard) return;
  if (shard.status === 'submitted') return schedulePoll(s, shardId, 0);
  if (shard.status !== 'staged') return;
  const batch = await batches.findBatch(s.pool, shard.batchId);
  if (!batch || !isLive(batch)) return;

  const model = (await findModel(s.pool, shard.model, null))!;
  const job =
    (await s.vertex.findByLabel(SHARD_LABEL, shard.id)) ??
    (await s.vertex.create({
      displayName: `${batch.id}-${shard.seq}`,
      model: model.publisherModel,
      inputUri: shard.inputUri,
      outputPrefix: shard.outputPrefix,
      labels: { [BATCH_LABEL]: batch.id.toLowerCase(), [SHARD_LABEL]: shard.id },
    }));
  const recorded = await withTransaction(s.pool, async (tx) => {
    await batches.findBatch(tx, shard.batchId, { forUpdate: true });
    const ok = await markSubmitted(tx, shardId, job.name);
    if (ok) await s.queue.send(JOBS.poll, { shardId, attempt: 0 }, { tx, key: shardId, delayMs: s.config.pipeline.pollIntervalMs });
    return ok;
  });
  if (!recorded) await s.vertex.cancel(job.name);
}

export async function schedulePoll(s: Services, shardId: string, attempt: number): Promise<void> {
  const { pollIntervalMs, pollMaxIntervalMs } = s.config.pipeline;
  // Backoff: a long queue is asked less often, but never less than every POLL_MAX_INTERVAL_MS.
  const delayMs = Math.min(pollMaxIntervalMs, Math.round(pollIntervalMs * 1.5 ** Math.min(attempt, 30)));
  await s.queue.send(JOBS.poll, { shardId, attempt }, { key: shardId, delayMs });
}
