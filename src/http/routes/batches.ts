import { Router } from 'express';
import { BATCH_ENDPOINTS } from '../../batches/batch-service.ts';
import { ApiError } from '../../errors/api-error.ts';
import type { Services } from '../../services.ts';
import { idempotencyOf, idempotent } from '../idempotency.ts';
import { userId } from '../middleware.ts';
import { batchListQuery, listLimit, listPage, singleQuery } from '../query.ts';
import { parseExpiresAfter, parseMetadata } from '../uploads.ts';
import { batchImageView, batchView } from '../views.ts';

const BODY_FIELDS = ['input_file_id', 'endpoint', 'completion_window', 'metadata', 'output_expires_after'];

/**
 * Batches on two paths over one batch service: OpenAI's `/v1/batches` (created from an uploaded
 * file with `POST /v1/batches`) and our `/v1/image-batches` (created by uploading to
 * `/v1/image-files`). A batch made either way is visible, cancellable and deletable on both.
 */
export function batchRoutes(s: Services): Router {
  const r = Router();
  // Requests that change batches keep the user's answers out of the read cache until they end.
  const writing = s.readCache.writing;
  r.post('/batches', writing, idempotent(s, 'json'), async (req, res) => {
    const body = createBody(req.body);
    const user = userId(req);
    await s.accounts.requirePrivacy(user);
    const batch = await s.batches.createFromFile(
      user,
      body.inputFileId,
      body.options,
      idempotencyOf(res)?.keep(batchView),
    );
    res.json(batchView(batch));
  });
  for (const base of ['/batches', '/image-batches']) {
    // Both paths answer the same JSON: one kept answer serves both.
    r.get(base, (req, res) => {
      const user = userId(req);
      const query = batchListQuery(req.query);
      const key = `batches ${query.limit} ${query.status ?? ''} ${query.after ?? ''}`;
      return s.readCache.answer(res, user, key, async () => {
        const { page, hasMore } = await s.batches.list(user, query);
        return listPage(page.map(batchView), hasMore);
      });
    });
    r.get(`${base}/:id`, (req, res) => {
      const user = userId(req);
      const id = req.params.id;
      return s.readCache.answer(res, user, `batch ${id}`, async () => batchView(await s.batches.get(user, id)));
    });
    // The images of the output file, a page at a time, with signed links (the dashboard's gallery).
    r.get(`${base}/:id/images`, async (req, res) => {
      const { images, nextCursor } = await s.gallery.page(userId(req), req.params.id, {
        limit: listLimit(req.query, { fallback: 24, max: 100 }),
        after: singleQuery(req.query, 'after') ?? null,
        customId: singleQuery(req.query, 'custom_id') ?? null,
      });
      res.json({
        object: 'list',
        data: images.map(batchImageView),
        has_more: nextCursor !== null,
        next_cursor: nextCursor,
      });
    });
    r.post<{ id: string }>(`${base}/:id/cancel`, writing, async (req, res) => {
      res.json(batchView(await s.batches.cancel(userId(req), req.params.id)));
    });
    r.delete<{ id: string }>(`${base}/:id`, writing, async (req, res) => {
      await s.batches.delete(userId(req), req.params.id);
      res.json({ id: req.params.id, object: 'batch.deleted', deleted: true });
    });
  }
  return r;
}

/** The body of `POST /v1/batches`, checked as OpenAI checks it. */
function createBody(body: unknown) {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new ApiError('invalid_body', 'Send a JSON object: {"input_file_id", "endpoint", "completion_window"}.');
  }
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).find((k) => !BODY_FIELDS.includes(k));
  if (unknown !== undefined) {
    throw new ApiError(
      'unknown_parameter',
      `Unrecognized request argument: ${unknown.slice(0, 64)}.`,
      unknown.slice(0, 64),
    );
  }
  for (const name of ['input_file_id', 'endpoint', 'completion_window']) {
    if (b[name] === undefined || b[name] === null) {
      throw new ApiError('missing_required_parameter', `Missing required parameter: '${name}'.`, name);
    }
  }
  if (typeof b.input_file_id !== 'string') {
    throw new ApiError(
      'invalid_input_file',
      'input_file_id must be the id of a file uploaded with purpose batch.',
      'input_file_id',
    );
  }
  if (!(BATCH_ENDPOINTS as readonly unknown[]).includes(b.endpoint)) {
    throw new ApiError(
      'invalid_endpoint',
      `endpoint must be ${BATCH_ENDPOINTS.map((e) => `'${e}'`).join(' or ')} (got ${JSON.stringify(b.endpoint).slice(0, 60)}).`,
      'endpoint',
    );
  }
  if (b.completion_window !== '24h') {
    throw new ApiError(
      'invalid_completion_window',
      `completion_window must be '24h' (got ${JSON.stringify(b.completion_window).slice(0, 20)}).`,
      'completion_window',
    );
  }
  return {
    inputFileId: b.input_file_id,
    options: {
      endpoint: b.endpoint as string,
      metadata: parseMetadata(b.metadata),
      outputExpiresSeconds: parseExpiresAfter(b.output_expires_after, 'output_expires_after'),
    },
  };
}
