import * as batches from '../batches/batch-queries.ts';
import { withTransaction } from '../db/pool.ts';
import type { Services } from '../services.ts';
import { abandonBatch } from './dead-letter.ts';
import { defineJob, SHORT_STEP } from './job.ts';
import { finalizeWhenAllDone, schedulePoll } from './poll.ts';
import { listShards, markNeverSubmitted } from './shard-queries.ts';

/**
 * Cancellation and expiry: shards never submitted end at once; every running Vertex job is
 * asked to cancel, and the shard polls see them end (a cancelled job keeps what it wrote).
 * When all shards have ended, the batch stitches what finished and settles.
 */
export async function cancelBatch(s: Services, batchId: string): Promise<void> {
  const batch = await batches.findBatch(s.pool, batchId);
  if (!batch || !(batch.status === 'cancelling' || (batch.status === 'in_progress' && batch.outcome === 'expired')))
    return;
  const running = await withTransaction(s.pool, async (tx) => {
    await batches.findBatch(tx, batchId, { forUpdate: true });
    for (const shard of await listShards(tx, batchId)) {
      if (shard.status === 'staged') await markNeverSubmitted(tx, shard.id);
    }
    await finalizeWhenAllDone(s, tx, batchId);
    // The shards that have a Vertex job: a submission racing with this one either committed
    // before the batch lock was taken (its job is cancelled below) or will find its shard done
    // and cancel the job it made itself.
    return (await listShards(tx, batchId)).filter((x) => x.status === 'submitted');
  });
  for (const shard of running) {
    await s.vertex.cancel(shard.vertexJob!);
    await schedulePoll(s, shard.id, 0);
  }
}

export const cancelJob = defineJob<{ batchId: string }>({
  name: 'batch-cancel',
  queue: SHORT_STEP,
  concurrency: 1,
  handle: (s, { batchId }) => cancelBatch(s, batchId),
  onDead: (s, { batchId }, error) => abandonBatch(s, batchId, error),
});
