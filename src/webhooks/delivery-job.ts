import { withTransaction } from '../db/pool.ts';
import { log } from '../logger.ts';
import { defineJob, SHORT_STEP } from '../pipeline/job.ts';
import type { Services } from '../services.ts';
import { postWebhook } from './webhook-http.ts';
import * as q from './webhook-queries.ts';

/** One attempt: connecting, the receiver's answer and draining it. */
export const WEBHOOK_TIMEOUT_MS = 10_000;
/** The backoff doubles from WEBHOOK_RETRY_BASE up to this. */
export const WEBHOOK_MAX_DELAY_MS = 3_600_000;
/** No attempt is scheduled later than this after the event. */
export const WEBHOOK_GIVE_UP_MS = 72 * 3_600_000;
/** A job that comes this much before its delivery's due time (a duplicate) waits instead. */
const EARLY_TOLERANCE_MS = 1000;
/** How overdue a pending delivery must be before the sweep takes its job for lost. */
const OVERDUE_GRACE_MS = 5 * 60_000;

/**
 * When the attempt after `attempts` failed ones is due: `baseMs` doubling per attempt, capped at
 * an hour; null (give up) when that would be more than 72 h after the delivery was created.
 */
export function nextAttemptAt(createdAt: Date, attempts: number, baseMs: number, now = new Date()): Date | null {
  const delay = Math.min(baseMs * 2 ** Math.max(0, attempts - 1), WEBHOOK_MAX_DELAY_MS);
  const next = new Date(now.getTime() + delay);
  return next.getTime() - createdAt.getTime() > WEBHOOK_GIVE_UP_MS ? null : next;
}

/**
 * One attempt at one delivery. Nothing is held open while the receiver answers: a 2xx marks it
 * delivered; anything else records the attempt and, in the same transaction, queues the next one
 * as a delayed job, so an attempt is never recorded without its successor or the reverse. A
 * process dying mid-attempt leaves the job to pg-boss, which runs it again (at least once; the
 * receiver dedupes by `webhook-id`); a delivered, given-up or stopped delivery is skipped.
 */
export async function attemptDelivery(s: Services, deliveryId: string): Promise<void> {
  const d = await q.findDeliveryTarget(s.pool, deliveryId);
  if (d?.status !== 'pending') return;
  if (d.endpointDeleted) {
    await q.stopPendingDeliveries(s.pool, d.endpointId);
    return;
  }
  const early = (d.nextAttemptAt?.getTime() ?? 0) - Date.now();
  if (early > EARLY_TOLERANCE_MS) {
    // A duplicate job (e.g. the sweep's) may have taken the queue slot of the scheduled one: stand in for it.
    await s.queue.send(webhookDeliveryJob, { deliveryId }, { key: deliveryId, delayMs: early });
    return;
  }
  const { webhookAllowPrivateUrls: allowPrivate, webhookRetryBaseMs } = s.config.delivery;
  const result = await postWebhook(
    d.url,
    { id: d.eventId, body: d.body, secret: d.secret },
    { allowPrivate, timeoutMs: WEBHOOK_TIMEOUT_MS },
  );
  if (result.ok) {
    await q.markDelivered(s.pool, deliveryId, result.statusCode!);
    return;
  }
  const now = new Date();
  const next = nextAttemptAt(d.createdAt, d.attempts + 1, webhookRetryBaseMs, now);
  await withTransaction(s.pool, async (tx) => {
    const recorded = await q.recordFailedAttempt(tx, {
      id: deliveryId,
      attemptsBefore: d.attempts,
      statusCode: result.statusCode,
      error: result.error ?? 'not delivered',
      nextAttemptAt: next,
    });
    if (recorded && next) {
      await s.queue.send(
        webhookDeliveryJob,
        { deliveryId },
        { tx, key: deliveryId, delayMs: next.getTime() - now.getTime() },
      );
    }
  });
  const fields = { deliveryId, eventId: d.eventId, attempt: d.attempts + 1, error: result.error };
  if (next) log.info({ ...fields, nextAttemptAt: next.toISOString() }, 'webhook not delivered; it will be retried');
  else log.warn(fields, 'webhook not delivered; given up after 72 h');
}

/**
 * Pending deliveries long overdue lost their job (dead-lettered during an outage, say): queue
 * them again. Keyed by delivery, so one still queued is not queued twice. Run by the sweep.
 */
export async function requeueOverdueDeliveries(s: Services): Promise<void> {
  for (const deliveryId of await q.findOverdueDeliveries(s.pool, OVERDUE_GRACE_MS, 500)) {
    await s.queue.send(webhookDeliveryJob, { deliveryId }, { key: deliveryId });
  }
}

export const webhookDeliveryJob = defineJob<{ deliveryId: string }>({
  name: 'webhook-deliver',
  queue: SHORT_STEP,
  handle: (s, { deliveryId }) => attemptDelivery(s, deliveryId),
  // Failed the same way on every try (not an outage, not the receiver: its failures are recorded,
  // not thrown): stop it rather than loop through the sweep.
  onDead: (s, { deliveryId }, error) =>
    q.markDeliveryFailed(s.pool, deliveryId, `internal error: ${error}`.slice(0, 200)),
});
