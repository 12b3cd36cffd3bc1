import { Router } from 'express';
import multer from 'multer';
import { BATCH_ENDPOINTS } from '../../batches/batch-service.ts';
import { ApiError } from '../../errors/api-error.ts';
import type { StoredUpload } from '../../files/upload-engine.ts';
import { fileTooLarge, notAnImage, objectStoreEngine } from '../../files/upload-engine.ts';
import type { Services } from '../../services.ts';
import { userId } from '../middleware.ts';
import { batchView, fileView } from '../views.ts';

const PURPOSES = ['vision', 'image_batch'];

/**
 * `POST /v1/image-files` (multipart `purpose`, `file`): a `vision` reference image, or an
 * `image_batch` JSONL that creates a batch. The file streams straight to the object store;
 * anything refused is removed again, so bad input leaves nothing stored and charges nothing.
 */
export function imageFileRoutes(s: Services): Router {
  const { limits } = s.config;
  const upload = multer({
    storage: objectStoreEngine({
      store: s.store,
      limitFor: (purpose) =>
        purpose === 'vision'
          ? limits.visionMaxBytes
          : purpose === 'image_batch'
            ? limits.batchUploadMaxBytes
            : Math.max(limits.visionMaxBytes, limits.batchUploadMaxBytes),
      precheck: async (req, purpose) => {
        if (purpose !== undefined && !PURPOSES.includes(purpose)) throw invalidPurpose(purpose);
        if (purpose === 'image_batch') await s.accounts.requirePrivacy(userId(req));
      },
    }),
    limits: {
      files: 1,
      fields: 8,
      fieldSize: 64 * 1024,
      parts: 10,
      fileSize: Math.max(limits.visionMaxBytes, limits.batchUploadMaxBytes) + 1,
    },
  }).single('file');

  const r = Router();
  r.post(
    '/image-files',
    (req, _res, next) => {
      if (!req.is('multipart/form-data')) {
        return next(
          new ApiError('invalid_content_type', 'Send multipart/form-data with the fields `purpose` and `file`.', null),
        );
      }
      upload(req, _res, next);
    },
    async (req, res) => {
      const stored = req.file as (Express.Multer.File & StoredUpload) | undefined;
      try {
        const purpose = req.body?.purpose;
        if (purpose === undefined)
          throw new ApiError('missing_purpose', "Give a 'purpose': vision or image_batch.", 'purpose');
        if (typeof purpose !== 'string' || !PURPOSES.includes(purpose)) throw invalidPurpose(String(purpose));
        if (!stored) throw new ApiError('missing_file', "Attach the file in the multipart field 'file'.", 'file');
        if (stored.size === 0) throw new ApiError('empty_file', 'The uploaded file is empty.', 'file');
        const base = {
          id: stored.fileId,
          userId: userId(req),
          filename: cleanFilename(stored.originalname),
          bytes: stored.size,
          objectKey: stored.objectKey,
        };
        if (purpose === 'vision') {
          // The purpose may have come after the file, when its limit and type were not yet known.
          if (stored.size > limits.visionMaxBytes) throw fileTooLarge(limits.visionMaxBytes);
          if (!stored.image) throw notAnImage(stored.imageProblem);
          return void res.json(
            fileView(
              await s.files.recordVision({
                ...base,
                mimeType: stored.image.type,
                width: stored.image.width,
                height: stored.image.height,
              }),
            ),
          );
        }
        await s.accounts.requirePrivacy(base.userId);
        const metadata = parseMetadata(req.body?.metadata);
        const batch = await s.batches.createWithUpload(
          {
            ...base,
            mimeType: 'application/jsonl',
            expiresAt: new Date(Date.now() + s.config.delivery.fileRetentionMs),
          },
          { endpoint: BATCH_ENDPOINTS[0], metadata, outputExpiresSeconds: null },
        );
        res.json(batchView(batch));
      } catch (err) {
        if (stored?.objectKey) await s.store.delete(stored.objectKey).catch(() => {});
        throw err;
      }
    },
  );
  return r;
}

const invalidPurpose = (purpose: string) =>
  new ApiError(
    'invalid_purpose',
    `purpose must be 'vision' or 'image_batch' (got '${purpose.slice(0, 40)}').`,
    'purpose',
  );

function cleanFilename(name: string | undefined): string {
  const cleaned = (name ?? '').replace(/\p{Cc}/gu, '').slice(0, 255);
  return cleaned || 'upload';
}

/** OpenAI's metadata rules: a JSON object of at most 16 string pairs (keys ≤ 64, values ≤ 512 chars). */
export function parseMetadata(raw: unknown): Record<string, string> | null {
  if (raw === undefined || raw === '') return null;
  let value: unknown;
  try {
    value = JSON.parse(String(raw));
  } catch {
    throw new ApiError('invalid_metadata', 'metadata must be a JSON object of string keys and values.', 'metadata');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new ApiError('invalid_metadata', 'metadata must be a JSON object of string keys and values.', 'metadata');
  }
  const entries = Object.entries(value);
  const ok =
    entries.length <= 16 && entries.every(([k, v]) => k.length <= 64 && typeof v === 'string' && v.length <= 512);
  if (!ok) {
    throw new ApiError(
      'invalid_metadata',
      'metadata holds at most 16 pairs; keys ≤ 64 and string values ≤ 512 characters.',
      'metadata',
    );
  }
  return value as Record<string, string>;
}
