import { Router } from 'express';
import { BATCH_ENDPOINTS } from '../../batches/batch-service.ts';
import type { Services } from '../../services.ts';
import { idempotencyOf, idempotent, uploadFingerprint } from '../idempotency.ts';
import { parseExpiresAfter, parseMetadata, uploadHandlers, visionFile } from '../uploads.ts';
import { batchView, fileView } from '../views.ts';

/**
 * `POST /v1/image-files` (multipart `purpose`, `file`): a `vision` reference image, or an
 * `image_batch` JSONL that creates a batch at once (no second call, unlike OpenAI's files and
 * batches). Takes an `Idempotency-Key`.
 */
export function imageFileRoutes(s: Services): Router {
  const r = Router();
  r.post(
    '/image-files',
    // It may create a batch: the user's batch answers stay out of the read cache until it ends.
    s.readCache.writing,
    idempotent(s, 'multipart'),
    ...uploadHandlers(
      s,
      { purposes: ['vision', 'image_batch'], privacyPurposes: ['image_batch'] },
      async (req, res, upload) => {
        const idempotency = idempotencyOf(res);
        if (idempotency) idempotency.fingerprint = uploadFingerprint(req, upload.stored.sha256);
        const seconds = parseExpiresAfter(upload.fields.expires_after, 'expires_after');
        if (upload.purpose === 'vision') {
          const file = await s.files.record(visionFile(upload, seconds && seconds * 1000), idempotency?.keep(fileView));
          return void res.json(fileView(file));
        }
        await s.accounts.requirePrivacy(upload.file.userId);
        const metadata = parseMetadata(upload.fields.metadata);
        const batch = await s.batches.createWithUpload(
          {
            ...upload.file,
            mimeType: 'application/jsonl',
            retentionMs: seconds ? seconds * 1000 : s.config.delivery.fileRetentionMs,
          },
          { endpoint: BATCH_ENDPOINTS[0], metadata, outputExpiresSeconds: null },
          idempotency?.keep(batchView),
        );
        res.json(batchView(batch));
      },
    ),
  );
  return r;
}
