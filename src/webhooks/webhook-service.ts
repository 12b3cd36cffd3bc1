import { randomBytes } from 'node:crypto';
import type { Pool } from '../db/pool.ts';
import { withTransaction } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import { looksLikeId, newId } from '../ids.ts';
import { keysetPage, type Page } from '../keyset-page.ts';
import { checkWebhookUrl } from './url-guard.ts';
import * as q from './webhook-queries.ts';

export type WebhookEndpointRow = q.WebhookEndpointRow;
export type WebhookDeliveryRow = q.WebhookDeliveryRow;

/** Standard Webhooks' secret format: the receiver's SDK signs with the base64-decoded bytes. */
const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/** A client's webhook endpoints and what was delivered to them. Delivery itself is a pipeline job. */
export class WebhookService {
  private readonly pool: Pool;
  private readonly allowPrivateUrls: boolean;

  constructor(deps: { pool: Pool; allowPrivateUrls: boolean }) {
    this.pool = deps.pool;
    this.allowPrivateUrls = deps.allowPrivateUrls;
  }

  /** A new endpoint, and its secret: the only time the secret is shown. */
  async create(userId: number, input: { url?: unknown; events?: unknown }): Promise<WebhookEndpointRow> {
    if (input.url === undefined || input.url === null) {
      throw new ApiError('missing_required_parameter', 'url is required.', 'url');
    }
    const events = parseEvents(input.events);
    const url = await checkWebhookUrl(input.url, this.allowPrivateUrls);
    return q.insertEndpoint(this.pool, { id: newId('wh'), userId, url, events, secret: newSecret() });
  }

  async get(userId: number, id: string): Promise<WebhookEndpointRow> {
    const endpoint = looksLikeId('wh', id) ? await q.findUserEndpoint(this.pool, userId, id) : null;
    if (!endpoint) throw notFound('webhook', id, 'webhook_id');
    return endpoint;
  }

  list(userId: number, opts: { limit: number; after: string | null }): Promise<Page<WebhookEndpointRow>> {
    return keysetPage({
      ...opts,
      what: 'one of your webhook endpoints',
      cursorExists: async (after) =>
        looksLikeId('wh', after) && (await q.findUserEndpoint(this.pool, userId, after)) !== null,
      fetch: (limit) => q.listUserEndpoints(this.pool, userId, { ...opts, limit }),
    });
  }

  /** Deletes the endpoint and stops its pending deliveries in the same transaction. */
  async delete(userId: number, id: string): Promise<void> {
    const deleted =
      looksLikeId('wh', id) &&
      (await withTransaction(this.pool, async (tx) => {
        if (!(await q.markEndpointDeleted(tx, userId, id))) return false;
        await q.stopPendingDeliveries(tx, id);
        return true;
      }));
    if (!deleted) throw notFound('webhook', id, 'webhook_id');
  }

  /** An endpoint's deliveries, newest first. */
  async deliveries(
    userId: number,
    endpointId: string,
    opts: { limit: number; after: string | null },
  ): Promise<Page<WebhookDeliveryRow>> {
    await this.get(userId, endpointId);
    return keysetPage({
      ...opts,
      what: 'a delivery of this endpoint',
      cursorExists: async (after) => looksLikeId('whdel', after) && q.deliveryExists(this.pool, endpointId, after),
      fetch: (limit) => q.listEndpointDeliveries(this.pool, endpointId, { ...opts, limit }),
    });
  }
}

/** `events`: absent means all four; otherwise a non-empty list of them (repeats kept once). */
function parseEvents(events: unknown): q.WebhookEventType[] {
  if (events === undefined) return [...q.WEBHOOK_EVENTS];
  const known = (e: unknown): e is q.WebhookEventType =>
    typeof e === 'string' && (q.WEBHOOK_EVENTS as readonly string[]).includes(e);
  if (!Array.isArray(events) || !events.length || !events.every(known)) {
    throw new ApiError(
      'invalid_events',
      `events must be a non-empty list of ${q.WEBHOOK_EVENTS.join(', ')} (got ${JSON.stringify(events)?.slice(0, 200)}).`,
      'events',
    );
  }
  return q.WEBHOOK_EVENTS.filter((e) => events.includes(e));
}
