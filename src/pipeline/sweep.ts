import * as batches from '../batches/batch-queries.ts';
import type { Services } from '../services.ts';
import { JOBS } from './job-queue.ts';
import { listShards } from './shard-queries.ts';

/**
 * The safety net, run every SWEEP_INTERVAL_MS by one worker at a time: expires batches past
 * their completion window, and re-enqueues the next step of every open batch. Jobs are keyed,
 * so a step that is already queued is not queued twice; one lost with a crashed process is.
 */
export async function sweep(s: Services): Promise<void> {
  for (const id of await batches.findExpiredOpenBatches(s.pool, 500)) await expire(s, id);
  for (const { id, status } of await batches.findOpenBatches(s.pool, s.config.pipeline.sweepIntervalMs, 1000)) {
    await resume(s, id, status);
  }
}

/**
 * Past `expires_at`: a batch still validating ends `expired` with nothing charged; a running
 * one is cancelled, stitches what finished, settles, and ends `expired`.
 */
async function expire(s: Services, id: string) {
  const ended = await batches.transition(s.pool, id, ['validating'], 'expired', {
    outcome: 'expired',
    settled: 0,
    refunded: 0,
  });
  if (ended) return;
  const batch = await batches.findBatch(s.pool, id);
  if (batch?.status !== 'in_progress') return;
  if (batch.outcome === null) await batches.transition(s.pool, id, ['in_progress'], null, { outcome: 'expired' });
  await s.queue.send(JOBS.cancel, { batchId: id }, { key: id });
}

async function resume(s: Services, id: string, status: batches.BatchStatus) {
  const batch = await batches.findBatch(s.pool, id);
  if (!batch || batch.status !== status) return;
  const send = (name: Parameters<typeof s.queue.send>[0], data: object, key: string) =>
    s.queue.send(name, data, { key });
  switch (status) {
    case 'validating':
      return send(JOBS.validate, { batchId: id }, id);
    case 'finalizing':
      return send(JOBS.finalize, { batchId: id }, id);
    case 'cancelling':
      return send(JOBS.cancel, { batchId: id }, id);
    case 'in_progress': {
      if (batch.outcome === 'expired') return send(JOBS.cancel, { batchId: id }, id);
      const shards = await listShards(s.pool, id);
      if (!shards.length) return send(JOBS.stage, { batchId: id }, id);
      for (const shard of shards) {
        if (shard.status === 'staged') await send(JOBS.submit, { shardId: shard.id }, shard.id);
        if (shard.status === 'submitted') await send(JOBS.poll, { shardId: shard.id, attempt: 0 }, shard.id);
      }
    }
  }
}
