import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Request } from 'express';
import type multer from 'multer';
import { ApiError } from '../errors/api-error.ts';
import { newId } from '../ids.ts';
import { uploadKey } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { type HeaderState, ImageHeaderReader, type ImageInfo } from './image-header.ts';

/** What the engine hands back on `req.file` once the upload is in the store. */
export interface StoredUpload {
  fileId: string;
  objectKey: string;
  size: number;
  /** The image read from the file's header (type and pixel size), or null when it is not one. */
  image: ImageInfo | null;
  /** Why it is not a readable image, when it is not. */
  imageProblem: string | null;
  /** Hex SHA-256 of the bytes, when asked for (an idempotent request's fingerprint). */
  sha256: string | null;
}

/**
 * Counts bytes on their way to the store, stops at the size limit, and reads the image header as
 * it passes — so a vision upload that is not a readable image is refused before the rest of it
 * is sent anywhere.
 */
class UploadGuard extends Transform {
  size = 0;
  image: ImageInfo | null = null;
  imageProblem: string | null = null;
  private readonly header = new ImageHeaderReader();
  private readonly limit: number;
  private readonly mustBeImage: boolean;
  readonly hash: Hash | null;

  constructor(limit: number, mustBeImage: boolean, hash: boolean) {
    super();
    this.limit = limit;
    this.mustBeImage = mustBeImage;
    this.hash = hash ? createHash('sha256') : null;
  }

  _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    this.size += chunk.length;
    if (this.size > this.limit) return done(fileTooLarge(this.limit));
    this.hash?.update(chunk);
    if (!this.image && !this.imageProblem && !this.record(this.header.push(chunk)))
      return done(notAnImage(this.imageProblem));
    done(null, chunk);
  }

  _flush(done: TransformCallback) {
    if (!this.image && !this.imageProblem && !this.record(this.header.end()) && this.size > 0) {
      return done(notAnImage(this.imageProblem));
    }
    done();
  }

  /** False when a vision upload must stop here. */
  private record(state: HeaderState): boolean {
    if (state.state === 'done') this.image = state.info;
    if (state.state === 'invalid') this.imageProblem = state.reason;
    return !(this.mustBeImage && this.imageProblem);
  }
}

export const notAnImage = (reason: string | null) =>
  new ApiError(
    'invalid_image',
    `A vision file must be a PNG, JPEG or WebP image${reason ? `: ${reason}` : '.'}`,
    'file',
  );

export const fileTooLarge = (limit: number) =>
  new ApiError('file_too_large', `The file is larger than the limit of ${limit} bytes.`, 'file');

export interface UploadEngineOptions {
  store: ObjectStore;
  limitFor(purpose: string | undefined): number;
  /** Runs before a single byte is stored; throws to refuse the upload (e.g. privacy not accepted). */
  precheck(req: Request, purpose: string | undefined): Promise<void>;
  /** Whether to compute the file's SHA-256 on the way. */
  hash(req: Request): boolean;
  /** Where the file is stored; default: the user's uploads (`uploadKey`). */
  objectKey?(req: Request, fileId: string): string;
  /** Every file must be a readable image (default: only `purpose=vision` ones). */
  imagesOnly?: boolean;
}

/** A multer storage engine that streams the file straight into the object store. */
export function objectStoreEngine(opts: UploadEngineOptions): multer.StorageEngine {
  return {
    _handleFile(req, file, cb) {
      const purpose = typeof req.body?.purpose === 'string' ? req.body.purpose : undefined;
      const userId = (req as Request & { userId: number }).userId;
      const fileId = newId('file');
      const objectKey = opts.objectKey?.(req, fileId) ?? uploadKey(userId, fileId);
      const guard = new UploadGuard(opts.limitFor(purpose), opts.imagesOnly || purpose === 'vision', opts.hash(req));
      const run = async () => {
        try {
          await opts.precheck(req, purpose);
          await pipeline(
            file.stream,
            guard,
            opts.store.writeStream(objectKey, file.mimetype || 'application/octet-stream'),
          );
        } catch (err) {
          file.stream.resume(); // let the rest of the request drain so the answer can be sent
          await opts.store.delete(objectKey).catch(() => {});
          throw err;
        }
        return {
          fileId,
          objectKey,
          size: guard.size,
          image: guard.image,
          imageProblem: guard.imageProblem,
          sha256: guard.hash?.digest('hex') ?? null,
        } satisfies StoredUpload;
      };
      run().then(
        (info) => cb(null, info as Partial<Express.Multer.File>),
        (err) => cb(err),
      );
    },
    _removeFile(_req, file, cb) {
      const key = (file as unknown as StoredUpload).objectKey;
      if (!key) return cb(null);
      opts.store.delete(key).then(() => cb(null), cb);
    },
  };
}

/**
 * A multer storage engine that only digests the file (SHA-256) and keeps nothing: how a repeat
 * of an idempotent upload is compared with the first without storing it again.
 */
export function digestEngine(limit: number): multer.StorageEngine {
  return {
    _handleFile(_req, file, cb) {
      const guard = new UploadGuard(limit, false, true);
      const sink = new Writable({ write: (_chunk, _enc, done) => done() });
      pipeline(file.stream, guard, sink).then(
        () => cb(null, { size: guard.size, sha256: guard.hash!.digest('hex') } as Partial<Express.Multer.File>),
        (err) => {
          file.stream.resume();
          cb(err);
        },
      );
    },
    _removeFile(_req, _file, cb) {
      cb(null);
    },
  };
}
