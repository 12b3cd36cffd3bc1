import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import multer from 'multer';
import type { DatabaseAvailability } from '../db/availability.ts';
import { ApiError } from '../errors/api-error.ts';
import type { HttpErrorCode } from '../errors/codes.ts';
import { findStringPath } from '../json-path.ts';
import { requestLog } from '../logger.ts';

export type AuthedRequest = Request & { userId: number };

/** Express 5 passes rejected promises on; this keeps handlers one-liners over services. */
export const userId = (req: Request) => (req as AuthedRequest).userId;

/** `Authorization: Bearer <token>` → the token, or null. */
export function bearer(req: Request): string | null {
  const header = req.get('authorization');
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1] : '';
}

/** Whether a token given matches the one expected, in constant time (no timing tells how much of it was right). */
export function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A strong ETag for a body that does not change while the process runs (a page, the API
 * document), made once: JSON answers carry no ETag (the app hashes none), but these are
 * revalidated on each load, and with this tag set `res.send` answers a matching
 * `If-None-Match` with a 304.
 */
export function fixedETag(body: string | Buffer): string {
  return `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
}

export function apiKeyAuth(authenticate: (key: string) => Promise<number | null>) {
  return async (req: Request, _res: Response, next: NextFunction) => {
    const token = bearer(req);
    if (token === null) {
      throw new ApiError('missing_api_key', 'Missing API key: send Authorization: Bearer sk-…', null);
    }
    const id = token ? await authenticate(token) : null;
    if (id === null) throw new ApiError('invalid_api_key', 'Incorrect or revoked API key provided.', null);
    (req as AuthedRequest).userId = id;
    next();
  };
}

const multerCodes: Record<string, [HttpErrorCode, string]> = {
  LIMIT_FILE_SIZE: ['file_too_large', 'The file is larger than the allowed size.'],
  LIMIT_FILE_COUNT: ['too_many_files', 'Send exactly one file, in the `file` field.'],
  LIMIT_UNEXPECTED_FILE: ['unexpected_file_field', 'Files go in the `file` field only.'],
  LIMIT_FIELD_KEY: ['invalid_multipart', 'A form field name is too long.'],
  LIMIT_FIELD_VALUE: ['field_too_long', 'A form field value is too long.'],
  LIMIT_FIELD_COUNT: ['too_many_fields', 'Too many form fields.'],
  LIMIT_PART_COUNT: ['too_many_parts', 'Too many parts in the multipart body.'],
};

/** Seconds a client is told to wait while the database is unreachable. */
const RETRY_AFTER_SECONDS = 5;

/**
 * Renders every error as the OpenAI envelope. A lost database is a 503 logged once per outage;
 * only other unexpected errors are logged as errors.
 */
export function errorHandler(db: DatabaseAvailability) {
  return async (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const apiError = db.report(err, 'http') ? unavailable() : toApiError(err);
    // A failed idempotent request frees its key before the client hears of the failure.
    await (res.locals.idempotency as { release(): Promise<void> } | undefined)?.release();
    // Lines of the request's logger carry its id (see observability.ts).
    if (apiError.code === 'internal_error')
      requestLog(req).error({ err, method: req.method, path: req.path }, 'request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A route group may render errors its own way (the task API: `{code, message, data: null}`).
    const body =
      res.locals.errorEnvelope === 'task'
        ? { code: apiError.code, message: apiError.message, data: null }
        : apiError.toBody();
    res.status(apiError.status).set(apiError.headers).json(body);
  };
}

const unavailable = () =>
  new ApiError('service_unavailable', 'The service cannot reach its database; try again shortly.').withHeaders({
    'Retry-After': String(RETRY_AFTER_SECONDS),
  });

function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof multer.MulterError) {
    const [code, message] = multerCodes[err.code] ?? ['invalid_multipart', err.message];
    return new ApiError(code, message, err.field ?? 'file');
  }
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.parse.failed') return new ApiError('invalid_json', 'The request body is not valid JSON.');
  if (e?.type === 'entity.too.large') return new ApiError('body_too_large', 'The request body is too large.');
  if (e?.status === 415) return new ApiError('invalid_content_type', e.message ?? 'Unsupported content type.');
  if (e?.message && /Multipart|Unexpected end of form|Malformed part header|boundary/i.test(e.message)) {
    return new ApiError('invalid_multipart', `The multipart body could not be read: ${e.message}`);
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    return new ApiError('invalid_request', e.message ?? 'Bad request.');
  }
  return new ApiError('internal_error', 'The server failed to handle this request.');
}

/**
 * Refuses a NUL character anywhere in the query string or a JSON body: Postgres cannot store one
 * in text, and no name, id or setting needs one.
 */
export function rejectNulCharacters(req: Request, _res: Response, next: NextFunction) {
  const hasNul = (text: string) => text.includes('\u0000');
  const where = findStringPath(req.query, hasNul) ?? findStringPath(req.body, hasNul);
  if (where !== null) {
    throw new ApiError(
      'invalid_value',
      `${where || 'The body'} must not contain a NUL character (U+0000).`,
      where || null,
    );
  }
  next();
}

export function notFoundRoute(req: Request) {
  throw new ApiError('route_not_found', `No route for ${req.method} ${req.path}.`);
}
