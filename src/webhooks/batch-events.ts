import type pg from 'pg';
import {
  type BatchChanges,
  type BatchOutcome,
  type BatchRow,
  type BatchStatus,
  transition,
} from '../batches/batch-queries.ts';
import { newId } from '../ids.ts';
import type { JobQueue } from '../pipeline/job-queue.ts';
import { webhookDeliveryJob } from './delivery-job.ts';
import * as q from './webhook-queries.ts';

const EVENT_OF_STATUS: Partial<Record<BatchStatus, q.WebhookEventType>> = {
  completed: 'batch.completed',
  failed: 'batch.failed',
  cancelled: 'batch.cancelled',
  expired: 'batch.expired',
};

/** When the batch reached its terminal status: the event's `created_at`, as OpenAI's says. */
function endedAt(b: BatchRow): Date {
  const at: Partial<Record<BatchStatus, Date | null>> = {
    completed: b.completedAt,
    failed: b.failedAt,
    cancelled: b.cancelledAt,
    expired: b.expiredAt,
  };
  return at[b.status] ?? new Date();
}

/**
 * The one way a batch reaches a terminal status (completed, failed, cancelled, expired): the
 * compare-and-set `transition()` and its event, in the caller's transaction. Null when another
 * actor got there first (and emitted).
 */
export async function endBatch(
  deps: { queue: JobQueue },
  tx: pg.PoolClient,
  id: string,
  from: BatchStatus[],
  to: BatchOutcome,
  changes: BatchChanges,
): Promise<BatchRow | null> {
  const row = await transition(tx, id, from, to, changes);
  await recordBatchEvent(deps, tx, row);
  return row;
}

/**
 * Batch events, in the transaction that moved the batch to a terminal status: one event, one
 * delivery row per live endpoint of the user subscribed to it, one delivery job per row — all
 * committing with the status or not at all, so a crash can neither lose an event nor invent one.
 * A null row emits nothing. Settlement only inserts here; the HTTP calls happen in the delivery jobs.
 */
async function recordBatchEvent(deps: { queue: JobQueue }, tx: pg.PoolClient, batch: BatchRow | null): Promise<void> {
  if (!batch) return;
  const type = EVENT_OF_STATUS[batch.status];
  if (!type) throw new Error(`batch ${batch.id} is ${batch.status}, not finished: it has no event`);
  const endpointIds = await q.subscribedEndpointIds(tx, batch.userId, type);
  if (!endpointIds.length) return;
  const eventId = newId('evt');
  // OpenAI's event, byte for byte what every attempt sends (key order included).
  const body = JSON.stringify({
    id: eventId,
    object: 'event',
    type,
    created_at: Math.floor(endedAt(batch).getTime() / 1000),
    data: { id: batch.id },
  });
  for (const endpointId of endpointIds) {
    const id = newId('whdel');
    await q.insertDelivery(tx, { id, endpointId, eventId, eventType: type, batchId: batch.id, body });
    await deps.queue.send(webhookDeliveryJob, { deliveryId: id }, { tx, key: id });
  }
}
