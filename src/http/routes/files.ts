import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import { ApiError } from '../../errors/api-error.ts';
import { FILE_PURPOSES, type FilePurpose } from '../../files/file-queries.ts';
import type { Services } from '../../services.ts';
import { idempotencyOf, idempotent, uploadFingerprint } from '../idempotency.ts';
import { userId } from '../middleware.ts';
import { listLimit, listPage, singleQuery } from '../query.ts';
import { parseExpiresAfter, uploadHandlers, visionFile } from '../uploads.ts';
import { fileView } from '../views.ts';

/**
 * OpenAI's Files API: `POST /v1/files` (purpose `batch`: a JSONL for a later `POST /v1/batches`;
 * `vision`: a reference image), list, retrieve, content (streamed, with Range) and delete.
 */
export function fileRoutes(s: Services): Router {
  const r = Router();
  r.post(
    '/files',
    idempotent(s, 'multipart'),
    ...uploadHandlers(s, { purposes: ['batch', 'vision'], privacyPurposes: [] }, async (req, res, upload) => {
      const idempotency = idempotencyOf(res);
      if (idempotency) idempotency.fingerprint = uploadFingerprint(req, upload.stored.sha256);
      const seconds = parseExpiresAfter(upload.fields.expires_after, 'expires_after');
      // A batch input lives FILE_RETENTION unless told otherwise; a reference image until deleted.
      const file =
        upload.purpose === 'vision'
          ? visionFile(upload, seconds && seconds * 1000)
          : {
              ...upload.file,
              purpose: 'batch' as const,
              mimeType: 'application/jsonl',
              retentionMs: seconds ? seconds * 1000 : s.config.delivery.fileRetentionMs,
            };
      res.json(fileView(await s.files.record(file, idempotency?.keep(fileView))));
    }),
  );
  r.get('/files', async (req, res) => {
    const purpose = singleQuery(req.query, 'purpose');
    if (purpose !== undefined && !(FILE_PURPOSES as readonly string[]).includes(purpose)) {
      throw new ApiError(
        'invalid_purpose',
        `purpose must be one of ${FILE_PURPOSES.join(', ')} (got '${purpose.slice(0, 40)}').`,
        'purpose',
      );
    }
    const order = singleQuery(req.query, 'order') ?? 'desc';
    if (order !== 'asc' && order !== 'desc') {
      throw new ApiError('invalid_order', `order must be 'asc' or 'desc' (got '${order.slice(0, 20)}').`, 'order');
    }
    const { page, hasMore } = await s.files.list(userId(req), {
      purpose: (purpose as FilePurpose | undefined) ?? null,
      order,
      limit: listLimit(req.query, { fallback: 10_000, max: 10_000 }),
      after: singleQuery(req.query, 'after') ?? null,
    });
    res.json(listPage(page.map(fileView), hasMore));
  });
  r.get('/files/:id', async (req, res) => {
    res.json(fileView(await s.files.get(userId(req), req.params.id)));
  });
  r.get('/files/:id/content', async (req, res) => {
    const content = await s.files.content(userId(req), req.params.id, req.get('range'));
    res.status(content.status).set(content.headers);
    if (req.method === 'HEAD') return void res.end();
    await pipeline(content.body, res);
  });
  r.delete('/files/:id', async (req, res) => {
    await s.files.delete(userId(req), req.params.id);
    res.json({ id: req.params.id, object: 'file', deleted: true });
  });
  return r;
}
