import type { NextFunction, Request, RequestHandler, Response } from 'express';
import multer from 'multer';
import { ApiError } from '../errors/api-error.ts';
import type { NewFile } from '../files/file-queries.ts';
import { fileTooLarge, notAnImage, objectStoreEngine, type StoredUpload } from '../files/upload-engine.ts';
import type { Services } from '../services.ts';
import { userId } from './middleware.ts';

/** The multipart uploads of one route: which purposes it takes, and the limit of each. */
export interface UploadSpec {
  purposes: readonly string[];
  /** Purposes whose upload needs the privacy policy accepted before a byte is stored. */
  privacyPurposes: readonly string[];
}

/** A file stored by the upload, with the form fields that came with it. */
export interface ReceivedUpload {
  purpose: string;
  stored: StoredUpload;
  /** The form fields (multer nests `a[b]` names into objects). */
  fields: Record<string, unknown>;
  /** The parts of the file record every purpose shares. */
  file: Omit<NewFile, 'purpose' | 'mimeType'>;
}

export const MULTIPART_LIMITS = { files: 1, fields: 8, fieldSize: 64 * 1024, parts: 10 };

/**
 * `POST` handlers of a multipart upload route: the file streams straight to the object store
 * (refused early when the purpose, size or privacy says so), then `handle` records it. Anything
 * refused or failed afterwards is removed from the store again, so bad input leaves nothing
 * stored and charges nothing.
 */
export function uploadHandlers(
  s: Services,
  spec: UploadSpec,
  handle: (req: Request, res: Response, upload: ReceivedUpload) => Promise<void>,
): RequestHandler[] {
  const { limits } = s.config;
  const limitFor = (purpose: string | undefined) =>
    purpose === 'vision'
      ? limits.visionMaxBytes
      : purpose !== undefined && spec.purposes.includes(purpose)
        ? limits.batchUploadMaxBytes
        : Math.max(limits.visionMaxBytes, limits.batchUploadMaxBytes);
  const upload = multer({
    storage: objectStoreEngine({
      store: s.store,
      limitFor,
      precheck: async (req, purpose) => {
        if (purpose !== undefined && !spec.purposes.includes(purpose)) throw invalidPurpose(purpose, spec);
        if (purpose !== undefined && spec.privacyPurposes.includes(purpose)) {
          await s.accounts.requirePrivacy(userId(req));
        }
      },
      // The file's digest is part of an idempotent request's fingerprint.
      hash: (req) => req.get('idempotency-key') !== undefined,
    }),
    limits: { ...MULTIPART_LIMITS, fileSize: Math.max(limits.visionMaxBytes, limits.batchUploadMaxBytes) + 1 },
  }).single('file');

  return [
    requireMultipart,
    upload,
    async (req, res) => {
      const stored = req.file as (Express.Multer.File & StoredUpload) | undefined;
      try {
        const fields = (req.body ?? {}) as Record<string, unknown>;
        const purpose = fields.purpose;
        if (purpose === undefined) {
          throw new ApiError('missing_purpose', `Give a 'purpose': ${spec.purposes.join(' or ')}.`, 'purpose');
        }
        if (typeof purpose !== 'string' || !spec.purposes.includes(purpose)) {
          throw invalidPurpose(String(purpose), spec);
        }
        if (!stored) throw new ApiError('missing_file', "Attach the file in the multipart field 'file'.", 'file');
        if (stored.size === 0) throw new ApiError('empty_file', 'The uploaded file is empty.', 'file');
        // The purpose may have come after the file, when its limit and type were not yet known.
        if (stored.size > limitFor(purpose)) throw fileTooLarge(limitFor(purpose));
        if (purpose === 'vision' && !stored.image) throw notAnImage(stored.imageProblem);
        const file = {
          id: stored.fileId,
          userId: userId(req),
          filename: cleanFilename(stored.originalname),
          bytes: stored.size,
          objectKey: stored.objectKey,
        };
        await handle(req, res, { purpose, stored, fields, file });
      } catch (err) {
        if (stored?.objectKey) await s.store.delete(stored.objectKey).catch(() => {});
        throw err;
      }
    },
  ];
}

/** A vision image's record: its type and pixel size as read from its header. */
export function visionFile(upload: ReceivedUpload, retentionMs: number | null): NewFile {
  const image = upload.stored.image!;
  return {
    ...upload.file,
    purpose: 'vision',
    mimeType: image.type,
    width: image.width,
    height: image.height,
    retentionMs,
  };
}

export function requireMultipart(req: Request, _res: Response, next: NextFunction) {
  if (!req.is('multipart/form-data')) {
    throw new ApiError('invalid_content_type', 'Send multipart/form-data with the fields `purpose` and `file`.', null);
  }
  next();
}

const invalidPurpose = (purpose: string, spec: UploadSpec) =>
  new ApiError(
    'invalid_purpose',
    `purpose must be ${spec.purposes.map((p) => `'${p}'`).join(' or ')} (got '${purpose.slice(0, 40)}').`,
    'purpose',
  );

function cleanFilename(name: string | undefined): string {
  const cleaned = (name ?? '').replace(/\p{Cc}/gu, '').slice(0, 255);
  return cleaned || 'upload';
}

/** OpenAI's bounds on `expires_after.seconds` and `output_expires_after.seconds`: 1 hour to 30 days. */
const EXPIRES_MIN_SECONDS = 3600;
const EXPIRES_MAX_SECONDS = 2_592_000;

/**
 * OpenAI's `expires_after` / `output_expires_after`: `{anchor: "created_at", seconds}` (a
 * multipart form sends `name[anchor]` and `name[seconds]`, the seconds as text). Returns the
 * seconds, or null when not given.
 */
export function parseExpiresAfter(raw: unknown, param: string): number | null {
  if (raw === undefined || raw === null || raw === '') return null;
  const bad = () =>
    new ApiError(
      'invalid_expires_after',
      `${param} must be {"anchor": "created_at", "seconds": ${EXPIRES_MIN_SECONDS}–${EXPIRES_MAX_SECONDS}}.`,
      param,
    );
  if (typeof raw !== 'object' || Array.isArray(raw)) throw bad();
  const { anchor, seconds, ...rest } = raw as Record<string, unknown>;
  if (anchor !== 'created_at' || Object.keys(rest).length) throw bad();
  const n = typeof seconds === 'string' && /^\d{1,10}$/.test(seconds) ? Number(seconds) : seconds;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < EXPIRES_MIN_SECONDS || n > EXPIRES_MAX_SECONDS) throw bad();
  return n;
}

/**
 * OpenAI's metadata rules: an object of at most 16 string pairs (keys ≤ 64, values ≤ 512
 * characters), given as JSON text in a form field or as an object.
 */
export function parseMetadata(raw: unknown): Record<string, string> | null {
  if (raw === undefined || raw === null || raw === '') return null;
  let value: unknown = raw;
  const invalid = () =>
    new ApiError('invalid_metadata', 'metadata must be a JSON object of string keys and values.', 'metadata');
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch {
      throw invalid();
    }
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw invalid();
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
