import type { NextFunction, Request, Response } from 'express';
import multer from 'multer';
import { ApiError } from '../errors.ts';
import { log } from '../logger.ts';

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

export function apiKeyAuth(authenticate: (key: string) => Promise<number | null>) {
  return async (req: Request, _res: Response, next: NextFunction) => {
    const token = bearer(req);
    if (token === null) {
      throw new ApiError(401, 'missing_api_key', 'Missing API key: send Authorization: Bearer sk-…', null);
    }
    const id = token ? await authenticate(token) : null;
    if (id === null) throw new ApiError(401, 'invalid_api_key', 'Incorrect or revoked API key provided.', null);
    (req as AuthedRequest).userId = id;
    next();
  };
}

const multerCodes: Record<string, [number, string, string]> = {
  LIMIT_FILE_SIZE: [413, 'file_too_large', 'The file is larger than the allowed size.'],
  LIMIT_FILE_COUNT: [400, 'too_many_files', 'Send exactly one file, in the `file` field.'],
  LIMIT_UNEXPECTED_FILE: [400, 'unexpected_file_field', 'Files go in the `file` field only.'],
  LIMIT_FIELD_KEY: [400, 'invalid_multipart', 'A form field name is too long.'],
  LIMIT_FIELD_VALUE: [400, 'field_too_long', 'A form field value is too long.'],
  LIMIT_FIELD_COUNT: [400, 'too_many_fields', 'Too many form fields.'],
  LIMIT_PART_COUNT: [400, 'too_many_parts', 'Too many parts in the multipart body.'],
};

/** Renders every error as the OpenAI envelope; only unexpected ones are logged as errors. */
export function errorHandler(err: unknown, req: Request, res: Response, _next: NextFunction) {
  const apiError = toApiError(err);
  if (apiError.status >= 500) log.error('request failed', { err, method: req.method, path: req.path });
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.status(apiError.status).set(apiError.headers).json(apiError.toBody());
}

function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof multer.MulterError) {
    const [status, code, message] = multerCodes[err.code] ?? [400, 'invalid_multipart', err.message];
    return new ApiError(status, code, message, err.field ?? 'file');
  }
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.parse.failed')
    return new ApiError(400, 'invalid_json', 'The request body is not valid JSON.');
  if (e?.type === 'entity.too.large') return new ApiError(413, 'body_too_large', 'The request body is too large.');
  if (e?.message && /Multipart|Unexpected end of form|Malformed part header|boundary/i.test(e.message)) {
    return new ApiError(400, 'invalid_multipart', `The multipart body could not be read: ${e.message}`);
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    return new ApiError(e.status, 'invalid_request', e.message ?? 'Bad request.');
  }
  return new ApiError(500, 'internal_error', 'The server failed to handle this request.');
}

export function notFoundRoute(req: Request) {
  throw new ApiError(404, 'route_not_found', `No route for ${req.method} ${req.path}.`);
}
