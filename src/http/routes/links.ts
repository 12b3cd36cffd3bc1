import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import { ApiError } from '../../errors/api-error.ts';
import type { Services } from '../../services.ts';

/**
 * `GET /links/{object key}?expires=&signature=`: the objects behind signed links (url-mode
 * images), streamed from the object store without an API key — the link is the credential.
 * With `offset` and `index` too, one image inside a b64_json line of an output file.
 * Always through this process, whatever the store, so the same path serves offline and on
 * Google Cloud.
 */
export function linkRoutes(s: Services): Router {
  const r = Router();
  r.get('/*key', async (req, res) => {
    // The path as sent, not as decoded: the signature covers exactly those bytes.
    const link = s.links.verify(req.baseUrl + req.path, req.query);
    // Altered or expired: one answer for both, nothing that tells a forger how close they came.
    if (link === null) throw new ApiError('invalid_link', 'This link is invalid or has expired.');
    if (link.image) {
      // One image inside a line of an output file (the batch gallery's b64_json images): decoded
      // as it streams, so its length is not known up front and the answer is chunked.
      const image = await s.gallery.lineImage(link.objectKey, link.image);
      res.set({
        'Content-Type': image.contentType,
        'Cache-Control': `private, max-age=${s.links.secondsLeft(link)}`,
        'X-Content-Type-Options': 'nosniff',
      });
      if (req.method === 'HEAD') {
        await image.close();
        return void res.end();
      }
      await pipeline(Readable.from(image.body), res);
      return;
    }
    const object = await s.store.stat(link.objectKey);
    if (object === null) throw new ApiError('file_not_found', 'The file behind this link no longer exists.');
    res.set({
      'Content-Type': object.contentType,
      'Content-Length': String(object.size),
      'Cache-Control': `private, max-age=${s.links.secondsLeft(link)}`,
      'X-Content-Type-Options': 'nosniff',
    });
    if (req.method === 'HEAD') return void res.end();
    await pipeline(s.store.readStream(link.objectKey), res);
  });
  return r;
}
