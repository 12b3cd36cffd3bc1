import * as batches from '../batches/batch-queries.ts';
import { withTransaction } from '../db/pool.ts';
import { foldStatusCounts } from '../db/status-count-queries.ts';
import { purgeOldKeys } from '../idempotency/idempotency-queries.ts';
import type { Services } from '../services.ts';
import { endBatch } from '../webhooks/batch-events.ts';
import { requeueOverdueDeliveries } from '../webhooks/delivery-job.ts';
import { cancelJob } from './cancel.ts';
import { finalizeJob } from './finalize.ts';
import { defineJob, SHORT_STEP } from './job.ts';
import { pollDelayMs, pollJob } from './poll.ts';
import { listShardStates, listShards } from './shard-queries.ts';
import { stageJob } from './stage.ts';
import { submitJob } from './submit.ts';
import { validateJob } from './validate.ts';

/**
 * The safety net, run every SWEEP_INTERVAL_MS by one worker at a time: expires batches past
 * their completion window, and re-enqueues the next step of every open batch. Jobs are keyed,
 * so a step that is already queued is not queued twice; one lost with a crashed process is.
 * It also applies retention: files past `expires_at` and idempotent answers past 24 h go.
 */
export async function sweep(s: Services): Promise<void> {
  for (const id of await batches.findExpiredOpenBatches(s.pool, 500)) await expire(s, id);
  const open = await batches.findOpenBatches(s.pool, s.config.pipeline.sweepIntervalMs, 1000);
  const looking = open.length ? await s.queue.waitingKeys(pollJob) : new Set<string>();
  const waiting = await waitingForVertex(s, open, looking);
  for (const { id, status } of open) if (!waiting.has(id)) await resume(s, id, status, looking);
  // Webhook deliveries whose job was lost (dead-lettered during an outage) are queued again.
  await requeueOverdueDeliveries(s);
  // Image jobs: expired ones settled, lost runs queued again, old inputs and images deleted.
  while ((await s.imageJobs.expireDue(RETENTION_ROUND)) === RETENTION_ROUND);
  await s.imageJobs.resumeOpen(s.config.pipeline.sweepIntervalMs, 1000);
  while ((await s.imageJobs.purgeDue(s.config.delivery.fileRetentionMs, RETENTION_ROUND)) === RETENTION_ROUND);
  // In rounds, so a backlog (a first start after a long stop) is worked off without one huge transaction.
  while ((await s.files.expireDue(RETENTION_ROUND)) === RETENTION_ROUND);
  while ((await purgeOldKeys(s.pool, RETENTION_ROUND)) === RETENTION_ROUND);
  // What the status triggers wrote since the last sweep, so a count reads a few rows.
  await foldStatusCounts(s.pool);
}

const RETENTION_ROUND = 500;

/**
 * Past `expires_at`: a batch still validating ends `expired` with nothing charged; a running
 * one is cancelled, stitches what finished, settles, and ends `expired`.
 */
async function expire(s: Services, id: string) {
  const ended = await withTransaction(s.pool, (tx) =>
    endBatch(s, tx, id, ['validating'], 'expired', { outcome: 'expired', settled: 0, refunded: 0 }),
  );
  if (ended) return;
  const batch = await batches.findBatch(s.pool, id);
  if (batch?.status !== 'in_progress') return;
  if (batch.outcome === null) await batches.transition(s.pool, id, ['in_progress'], null, { outcome: 'expired' });
  await s.queue.send(cancelJob, { batchId: id }, { key: id });
}

/**
 * Running batches with nothing to resume: every shard done or waiting for its next look at Vertex.
 * With a thousand batches in flight that is nearly all of them, told apart by two reads here
 * instead of a few queries each.
 */
async function waitingForVertex(
  s: Services,
  open: Array<{ id: string; status: batches.BatchStatus }>,
  looking: Set<string>,
): Promise<Set<string>> {
  const running = open.filter((b) => b.status === 'in_progress').map((b) => b.id);
  if (!running.length) return new Set();
  const onTheirWay = new Map<string, boolean>();
  for (const shard of await listShardStates(s.pool, running)) {
    const fine = shard.status === 'done' || (shard.status === 'submitted' && looking.has(shard.id));
    onTheirWay.set(shard.batchId, (onTheirWay.get(shard.batchId) ?? true) && fine);
  }
  return new Set([...onTheirWay].filter(([, fine]) => fine).map(([id]) => id));
}

async function resume(s: Services, id: string, status: batches.BatchStatus, looking: Set<string>) {
  const batch = await batches.findBatch(s.pool, id);
  if (!batch || batch.status !== status) return;
  const byBatch = { batchId: id };
  switch (status) {
    case 'validating':
      return s.queue.send(validateJob, byBatch, { key: id });
    case 'finalizing':
      return s.queue.send(finalizeJob, byBatch, { key: id });
    case 'cancelling':
      return s.queue.send(cancelJob, byBatch, { key: id });
    case 'in_progress': {
      if (batch.outcome === 'expired') return s.queue.send(cancelJob, byBatch, { key: id });
      const shards = await listShards(s.pool, id);
      if (!shards.length) return s.queue.send(stageJob, byBatch, { key: id });
      for (const shard of shards) {
        const key = { key: shard.id };
        if (shard.status === 'staged') await s.queue.send(submitJob, { shardId: shard.id }, key);
        if (shard.status === 'submitted' && !looking.has(shard.id)) {
          // Not sooner than a next look would come: a look running right now has just asked Vertex.
          const delayMs = pollDelayMs(0, s.config.pipeline);
          await s.queue.send(pollJob, { shardId: shard.id, attempt: 0 }, { ...key, delayMs });
        }
      }
    }
  }
}

export const sweepJob = defineJob<Record<string, never>>({
  name: 'batch-sweep',
  queue: SHORT_STEP,
  concurrency: 1,
  handle: (s) => sweep(s),
});
