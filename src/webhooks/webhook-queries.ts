import { keysetList } from '../db/keyset-list.ts';
import type { Db } from '../db/pool.ts';

export const WEBHOOK_EVENTS = ['batch.completed', 'batch.failed', 'batch.cancelled', 'batch.expired'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENTS)[number];

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface WebhookEndpointRow {
  id: string;
  userId: number;
  url: string;
  events: WebhookEventType[];
  /** `whsec_` + base64 of 32 random bytes; shown to the client only when the endpoint is made. */
  secret: string;
  createdAt: Date;
}

export interface WebhookDeliveryRow {
  id: string;
  endpointId: string;
  eventId: string;
  eventType: WebhookEventType;
  batchId: string;
  /** The event exactly as sent, every attempt. */
  body: string;
  status: DeliveryStatus;
  attempts: number;
  lastStatusCode: number | null;
  lastError: string | null;
  /** When the next attempt is due; null once delivered or given up. */
  nextAttemptAt: Date | null;
  deliveredAt: Date | null;
  createdAt: Date;
}

/** A delivery with what an attempt needs of its endpoint. */
export interface DeliveryTarget extends WebhookDeliveryRow {
  url: string;
  secret: string;
  endpointDeleted: boolean;
}

const endpointColumns = `id, user_id AS "userId", url, events, secret, created_at AS "createdAt"`;
const deliveryColumns = `d.id, d.endpoint_id AS "endpointId", d.event_id AS "eventId", d.event_type AS "eventType",
  d.batch_id AS "batchId", d.body, d.status, d.attempts, d.last_status_code AS "lastStatusCode",
  d.last_error AS "lastError", d.next_attempt_at AS "nextAttemptAt", d.delivered_at AS "deliveredAt",
  d.created_at AS "createdAt"`;

export async function insertEndpoint(
  db: Db,
  e: { id: string; userId: number; url: string; events: WebhookEventType[]; secret: string },
): Promise<WebhookEndpointRow> {
  const { rows } = await db.query<WebhookEndpointRow>(
    `INSERT INTO webhook_endpoints (id, user_id, url, events, secret) VALUES ($1, $2, $3, $4, $5)
     RETURNING ${endpointColumns}`,
    [e.id, e.userId, e.url, e.events, e.secret],
  );
  return rows[0];
}

/** A live endpoint of this user; another user's is indistinguishable from a missing one. */
export async function findUserEndpoint(db: Db, userId: number, id: string): Promise<WebhookEndpointRow | null> {
  const { rows } = await db.query<WebhookEndpointRow>(
    `SELECT ${endpointColumns} FROM webhook_endpoints WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`,
    [id, userId],
  );
  return rows[0] ?? null;
}

/** Newest first, after the cursor endpoint: one index seek per form (see keysetList). */
export async function listUserEndpoints(
  db: Db,
  userId: number,
  opts: { limit: number; after: string | null },
): Promise<WebhookEndpointRow[]> {
  const { rows } = await db.query<WebhookEndpointRow>(
    keysetList({
      name: 'list-user-webhook-endpoints',
      table: 'webhook_endpoints',
      columns: endpointColumns,
      live: 'deleted_at IS NULL',
      userId,
      filter: null,
      after: opts.after,
      limit: opts.limit,
    }),
  );
  return rows;
}

/** Returns false when the endpoint was not a live one of this user (missing, foreign, or deleted already). */
export async function markEndpointDeleted(db: Db, userId: number, id: string): Promise<boolean> {
  const { rowCount } = await db.query(
    'UPDATE webhook_endpoints SET deleted_at = now() WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL',
    [id, userId],
  );
  return rowCount === 1;
}

/** A deleted endpoint's deliveries still pending end `failed`; their queued attempts then find nothing to do. */
export async function stopPendingDeliveries(db: Db, endpointId: string): Promise<void> {
  await db.query(
    `UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted', next_attempt_at = NULL
      WHERE endpoint_id = $1 AND status = 'pending'`,
    [endpointId],
  );
}

/** Ids of the user's live endpoints subscribed to this event. */
export async function subscribedEndpointIds(db: Db, userId: number, type: WebhookEventType): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM webhook_endpoints WHERE user_id = $1 AND deleted_at IS NULL AND $2 = ANY(events) ORDER BY id`,
    [userId, type],
  );
  return rows.map((r) => r.id);
}

/** A delivery due now (next_attempt_at = now()). */
export async function insertDelivery(
  db: Db,
  d: { id: string; endpointId: string; eventId: string; eventType: WebhookEventType; batchId: string; body: string },
): Promise<void> {
  await db.query(
    `INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, batch_id, body, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, $6, now())`,
    [d.id, d.endpointId, d.eventId, d.eventType, d.batchId, d.body],
  );
}

/** Newest first, keyset-paginated like the endpoints. */
export async function listEndpointDeliveries(
  db: Db,
  endpointId: string,
  opts: { limit: number; after: string | null },
): Promise<WebhookDeliveryRow[]> {
  const { rows } = await db.query<WebhookDeliveryRow>(
    `SELECT ${deliveryColumns} FROM webhook_deliveries d
      WHERE d.endpoint_id = $1
        AND ($2::text IS NULL OR (d.created_at, d.id) < (SELECT created_at, id FROM webhook_deliveries WHERE id = $2 AND endpoint_id = $1))
      ORDER BY d.created_at DESC, d.id DESC
      LIMIT $3`,
    [endpointId, opts.after, opts.limit],
  );
  return rows;
}

export async function deliveryExists(db: Db, endpointId: string, id: string): Promise<boolean> {
  const { rowCount } = await db.query('SELECT 1 FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2', [
    id,
    endpointId,
  ]);
  return rowCount === 1;
}

export async function findDeliveryTarget(db: Db, id: string): Promise<DeliveryTarget | null> {
  const { rows } = await db.query<DeliveryTarget>(
    `SELECT ${deliveryColumns}, e.url, e.secret, e.deleted_at IS NOT NULL AS "endpointDeleted"
       FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
      WHERE d.id = $1`,
    [id],
  );
  return rows[0] ?? null;
}

/** Only a pending delivery is marked: one its endpoint's deletion stopped meanwhile stays stopped. */
export async function markDelivered(db: Db, id: string, statusCode: number): Promise<void> {
  await db.query(
    `UPDATE webhook_deliveries
        SET status = 'delivered', attempts = attempts + 1, last_status_code = $2, last_error = NULL,
            next_attempt_at = NULL, delivered_at = now()
      WHERE id = $1 AND status = 'pending'`,
    [id, statusCode],
  );
}

/**
 * Records a failed attempt: still pending with `nextAttemptAt`, or `failed` when it is null (given
 * up). Compares `attempts` with what the attempt started from, so of two racing attempts only one
 * records (and schedules) the next; false for the other, or when the delivery was stopped.
 */
export async function recordFailedAttempt(
  db: Db,
  a: { id: string; attemptsBefore: number; statusCode: number | null; error: string; nextAttemptAt: Date | null },
): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE webhook_deliveries
        SET attempts = attempts + 1, last_status_code = $3, last_error = $4, next_attempt_at = $5,
            status = CASE WHEN $5::timestamptz IS NULL THEN 'failed' ELSE 'pending' END
      WHERE id = $1 AND status = 'pending' AND attempts = $2`,
    [a.id, a.attemptsBefore, a.statusCode, a.error, a.nextAttemptAt],
  );
  return rowCount === 1;
}

/** A delivery whose job kept failing for a reason that is not an outage: it ends `failed`. */
export async function markDeliveryFailed(db: Db, id: string, error: string): Promise<void> {
  await db.query(
    `UPDATE webhook_deliveries SET status = 'failed', last_error = $2, next_attempt_at = NULL
      WHERE id = $1 AND status = 'pending'`,
    [id, error],
  );
}

/** Pending deliveries overdue by more than `graceMs`: their job was lost (e.g. dead-lettered in an outage). */
export async function findOverdueDeliveries(db: Db, graceMs: number, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM webhook_deliveries
      WHERE status = 'pending' AND next_attempt_at < now() - make_interval(secs => $1::double precision / 1000)
      ORDER BY next_attempt_at LIMIT $2`,
    [graceMs, limit],
  );
  return rows.map((r) => r.id);
}
