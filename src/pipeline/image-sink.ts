import { imageContentType, imageKey } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import type { LinkSigner } from '../storage/signed-links.ts';
import { finish } from '../storage/streams.ts';
import type { ImageSink } from './stitcher.ts';

/**
 * Where finalize puts url-mode images: one object each under the run's images prefix, with the
 * image's Content-Type, and a signed link to it. The link is made when the line is written, so
 * IMAGE_URL_TTL counts from then.
 */
export function objectImageSink(deps: { store: ObjectStore; links: LinkSigner; prefix: string }): ImageSink {
  return ({ requestId, img, mimeType, data }) => {
    const key = imageKey(deps.prefix, requestId, img, mimeType);
    // An image is about a megabyte: one request, no resumable session to open first.
    const upload = deps.store.writeStream(key, imageContentType(mimeType), { resumable: false });
    // The decoded pieces are in memory already: handed over at once, the store writes them in as
    // few requests (or writev calls) as it likes, instead of one round trip per piece.
    for (const piece of data) upload.write(piece);
    return { url: deps.links.sign(key), stored: finish(upload) };
  };
}
