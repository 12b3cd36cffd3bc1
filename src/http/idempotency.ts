import { createHash } from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import multer from 'multer';
import type pg from 'pg';
import { ApiError } from '../errors/api-error.ts';
import { digestEngine, type StoredUpload } from '../files/upload-engine.ts';
import * as q from '../idempotency/idempotency-queries.ts';
import { requestLog } from '../logger.ts';
import type { Services } from '../services.ts';
import { userId } from './middleware.ts';
import { MULTIPART_LIMITS } from './uploads.ts';

/** A running request's hold on its key: renewed while it runs, so a dead process frees it soon. */
const LEASE_MS = 60_000;
const RENEW_MS = 20_000;
/** Printable ASCII, as Stripe and OpenAI clients send (a UUID fits many times over). */
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;

/** What a handler of an idempotent request is given (on `res.locals.idempotency`). */
export class IdempotentRequest {
  readonly userId: number;
  readonly key: string;
  /** Known at once for a JSON body; for an upload, once its file has been digested. */
  fingerprint: string | null;
  /** Frees the key unless an answer was kept; safe to call more than once. */
  readonly release: () => Promise<void>;

  constructor(userId: number, key: string, fingerprint: string | null, release: () => Promise<void>) {
    this.userId = userId;
    this.key = key;
    this.fingerprint = fingerprint;
    this.release = release;
  }

  /**
   * A hook for a service's creating transaction: keeps the answer (status 200 and the view of
   * what was made) with the write, so a crash in between cannot let a retry make it twice.
   */
  keep<T>(view: (row: T) => unknown): (tx: pg.PoolClient, row: T) => Promise<void> {
    return async (tx, row) => {
      if (this.fingerprint === null) throw new Error('idempotent request without a fingerprint');
      await q.answerKey(tx, this.userId, this.key, {
        fingerprint: this.fingerprint,
        statusCode: 200,
        response: view(row),
      });
    };
  }
}

/** The idempotency of this request, when it came with an `Idempotency-Key`. */
export const idempotencyOf = (res: Response): IdempotentRequest | undefined => res.locals.idempotency;

/**
 * `Idempotency-Key` on a creating POST: the first request with a key runs; a repeat (same user,
 * key and request) within 24 h gets the first one's answer again (`Idempotent-Replayed: true`)
 * and nothing runs or is charged twice; the same key with another request is 422
 * `idempotency_key_reused`; while the first still runs, 409 `idempotency_key_in_use`. Only 2xx
 * answers are kept: a request that failed frees its key, so it can be retried as it is.
 *
 * `body` says how the request is compared: a JSON body, or a multipart upload (its fields and
 * the file's SHA-256; a repeat is read through a digest only, never stored).
 */
export function idempotent(s: Services, body: 'json' | 'multipart'): RequestHandler {
  const digest = multer({
    storage: digestEngine(Math.max(s.config.limits.visionMaxBytes, s.config.limits.batchUploadMaxBytes)),
    limits: MULTIPART_LIMITS,
  }).single('file');
  const parseUpload = (req: Request, res: Response) =>
    new Promise<void>((resolve, reject) => digest(req, res, (err?: unknown) => (err ? reject(err) : resolve())));

  return async (req, res, next) => {
    const key = req.get('idempotency-key');
    if (key === undefined) return next();
    if (!KEY_PATTERN.test(key)) {
      throw new ApiError(
        'invalid_idempotency_key',
        'Idempotency-Key must be 1 to 255 printable ASCII characters.',
        'Idempotency-Key',
      );
    }
    const user = userId(req);
    if (!(await q.claimKey(s.pool, user, key, LEASE_MS))) {
      const kept = await q.findKey(s.pool, user, key);
      if (kept?.statusCode == null) {
        throw new ApiError(
          'idempotency_key_in_use',
          'A request with this Idempotency-Key is still running; retry once it has finished.',
          'Idempotency-Key',
        );
      }
      if (body === 'multipart') await parseUpload(req, res);
      const fingerprint =
        body === 'json' ? jsonFingerprint(req) : uploadFingerprint(req, (req.file as Partial<StoredUpload>)?.sha256);
      if (fingerprint !== kept.fingerprint) {
        throw new ApiError(
          'idempotency_key_reused',
          'This Idempotency-Key was used for a different request in the last 24 hours; use a new key.',
          'Idempotency-Key',
        );
      }
      res.status(kept.statusCode).set('Idempotent-Replayed', 'true').json(kept.response);
      return;
    }

    const renew = setInterval(() => {
      q.renewKey(s.pool, user, key, LEASE_MS).catch((err) =>
        requestLog(req).warn({ err }, 'idempotency lease renewal failed'),
      );
    }, RENEW_MS);
    renew.unref();
    let released: Promise<void> | null = null;
    // Frees the key unless the handler's transaction kept an answer. The error handler calls it
    // before answering, so a client that retries at once finds the key free.
    const release = () => {
      clearInterval(renew);
      released ??= q
        .releaseKey(s.pool, user, key)
        .catch((err) => requestLog(req).warn({ err }, 'idempotency key release failed'));
      return released;
    };
    res.locals.idempotency = new IdempotentRequest(user, key, body === 'json' ? jsonFingerprint(req) : null, release);
    res.once('close', () => void release());
    next();
  };
}

/** An upload's fingerprint, once its file is digested: set by the upload handler. */
export function uploadFingerprint(req: Request, sha256: string | null | undefined): string {
  return fingerprintOf(req, { fields: req.body ?? {}, file: sha256 ?? null });
}

const jsonFingerprint = (req: Request) => fingerprintOf(req, { body: req.body ?? null });

/** Method, path and the request's content, in a canonical form (object keys sorted). */
function fingerprintOf(req: Request, content: unknown): string {
  const path = req.originalUrl.split('?')[0];
  return createHash('sha256')
    .update(canonicalJson([req.method, path, content]))
    .digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
