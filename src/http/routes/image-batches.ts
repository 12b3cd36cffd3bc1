import { Router } from 'express';
import { BATCH_STATUSES, isBatchStatus } from '../../batches/batch-states.ts';
import { ApiError } from '../../errors/api-error.ts';
import type { Services } from '../../services.ts';
import { userId } from '../middleware.ts';
import { batchView } from '../views.ts';

/** `GET/DELETE /v1/image-batches/{id}`, `GET /v1/image-batches`, `POST /v1/image-batches/{id}/cancel`. */
export function imageBatchRoutes(s: Services): Router {
  const r = Router();
  r.get('/image-batches', async (req, res) => {
    const { limit, after, status } = listQuery(req.query);
    const { page, hasMore } = await s.batches.list(userId(req), { limit, after, status });
    res.json({
      object: 'list',
      data: page.map(batchView),
      first_id: page[0]?.id ?? null,
      last_id: page.at(-1)?.id ?? null,
      has_more: hasMore,
    });
  });
  r.get('/image-batches/:id', async (req, res) => {
    res.json(batchView(await s.batches.get(userId(req), req.params.id)));
  });
  r.post('/image-batches/:id/cancel', async (req, res) => {
    res.json(batchView(await s.batches.cancel(userId(req), req.params.id)));
  });
  r.delete('/image-batches/:id', async (req, res) => {
    await s.batches.delete(userId(req), req.params.id);
    res.json({ id: req.params.id, object: 'batch.deleted', deleted: true });
  });
  return r;
}

function listQuery(query: Record<string, unknown>) {
  const single = (name: string) => {
    const v = query[name];
    if (Array.isArray(v)) throw new ApiError('invalid_query', `Give '${name}' once.`, name);
    return typeof v === 'string' ? v : undefined;
  };
  const rawLimit = single('limit');
  const limit = rawLimit === undefined ? 20 : Number(rawLimit);
  if (!/^\d+$/.test(rawLimit ?? '20') || limit < 1 || limit > 100) {
    throw new ApiError('invalid_limit', `limit must be a whole number from 1 to 100 (got '${rawLimit}').`, 'limit');
  }
  const status = single('status');
  if (status !== undefined && !isBatchStatus(status)) {
    throw new ApiError(
      'invalid_status',
      `status must be one of ${BATCH_STATUSES.join(', ')} (got '${status}').`,
      'status',
    );
  }
  return { limit, after: single('after') ?? null, status: status ?? null };
}
