import { Router } from 'express';
import { ApiError } from '../../errors/api-error.ts';
import type { Services } from '../../services.ts';
import { userId } from '../middleware.ts';
import { listLimit, listPage, singleQuery } from '../query.ts';
import { webhookDeliveryView, webhookEndpointView } from '../views.ts';

/**
 * `POST/GET /v1/webhooks`, `DELETE /v1/webhooks/{id}`, `GET /v1/webhooks/{id}/deliveries`:
 * endpoints that receive signed batch events.
 */
export function webhookRoutes(s: Services): Router {
  const r = Router();
  r.post('/webhooks', async (req, res) => {
    const body: unknown = req.body ?? {};
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new ApiError('invalid_body', 'The body must be a JSON object: {"url": …, "events": […]}.');
    }
    const endpoint = await s.webhooks.create(userId(req), body as { url?: unknown; events?: unknown });
    // The secret is shown here and never again.
    res.json(webhookEndpointView(endpoint, { withSecret: true }));
  });
  r.get('/webhooks', async (req, res) => {
    const { page, hasMore } = await s.webhooks.list(userId(req), pageQuery(req.query));
    res.json(
      listPage(
        page.map((e) => webhookEndpointView(e)),
        hasMore,
      ),
    );
  });
  r.delete('/webhooks/:id', async (req, res) => {
    await s.webhooks.delete(userId(req), req.params.id);
    res.json({ id: req.params.id, object: 'webhook_endpoint.deleted', deleted: true });
  });
  r.get('/webhooks/:id/deliveries', async (req, res) => {
    const { page, hasMore } = await s.webhooks.deliveries(userId(req), req.params.id, pageQuery(req.query));
    res.json(listPage(page.map(webhookDeliveryView), hasMore));
  });
  return r;
}

/** `limit` (1–100, default 20) and `after`. */
const pageQuery = (query: Record<string, unknown>) => ({
  limit: listLimit(query, { fallback: 20, max: 100 }),
  after: singleQuery(query, 'after') ?? null,
});
