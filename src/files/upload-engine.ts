import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Request } from 'express';
import type multer from 'multer';
import { ApiError } from '../errors/api-error.ts';
import { newId } from '../ids.ts';
import { uploadKey } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';

/** What the engine hands back on `req.file` once the upload is in the store. */
export interface StoredUpload {
  fileId: string;
  objectKey: string;
  size: number;
  /** The image type recognised from the first bytes, or null. */
  sniffedType: 'image/png' | 'image/jpeg' | 'image/webp' | null;
}

export function sniffImageType(head: Buffer): StoredUpload['sniffedType'] {
  if (head.length >= 8 && head.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])))
    return 'image/png';
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'image/jpeg';
  if (head.length >= 12 && head.toString('latin1', 0, 4) === 'RIFF' && head.toString('latin1', 8, 12) === 'WEBP')
    return 'image/webp';
  return null;
}

/**
 * Counts bytes on their way to the store, stops at the size limit, and recognises the image
 * type from the first bytes — so a vision upload that is not an image is refused before the
 * rest of it is sent anywhere.
 */
class UploadGuard extends Transform {
  size = 0;
  sniffedType: StoredUpload['sniffedType'] = null;
  private head: Buffer = Buffer.alloc(0);
  private readonly limit: number;
  private readonly mustBeImage: boolean;

  constructor(limit: number, mustBeImage: boolean) {
    super();
    this.limit = limit;
    this.mustBeImage = mustBeImage;
  }

  _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    this.size += chunk.length;
    if (this.size > this.limit) return done(fileTooLarge(this.limit));
    if (this.head.length < 12) {
      this.head = Buffer.concat([this.head, chunk.subarray(0, 12 - this.head.length)]);
      if (this.head.length >= 12 || this.mustBeImage) this.sniffedType = sniffImageType(this.head);
      if (this.mustBeImage && this.head.length >= 12 && !this.sniffedType) return done(notAnImage());
    }
    done(null, chunk);
  }

  _flush(done: TransformCallback) {
    this.sniffedType = sniffImageType(this.head);
    if (this.mustBeImage && this.size > 0 && !this.sniffedType) return done(notAnImage());
    done();
  }
}

export const notAnImage = () =>
  new ApiError('invalid_image', 'A vision file must be a PNG, JPEG or WebP image.', 'file');

export const fileTooLarge = (limit: number) =>
  new ApiError('file_too_large', `The file is larger than the limit of ${limit} bytes.`, 'file');

export interface UploadEngineOptions {
  store: ObjectStore;
  limitFor(purpose: string | undefined): number;
  /** Runs before a single byte is stored; throws to refuse the upload (e.g. privacy not accepted). */
  precheck(req: Request, purpose: string | undefined): Promise<void>;
}

/** A multer storage engine that streams the file straight into the object store. */
export function objectStoreEngine(opts: UploadEngineOptions): multer.StorageEngine {
  return {
    _handleFile(req, file, cb) {
      const purpose = typeof req.body?.purpose === 'string' ? req.body.purpose : undefined;
      const userId = (req as Request & { userId: number }).userId;
      const fileId = newId('file');
      const objectKey = uploadKey(userId, fileId);
      const guard = new UploadGuard(opts.limitFor(purpose), purpose === 'vision');
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
        return { fileId, objectKey, size: guard.size, sniffedType: guard.sniffedType } satisfies StoredUpload;
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
