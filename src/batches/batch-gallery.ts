import type { Readable } from 'node:stream';
import type { Pool } from '../db/pool.ts';
import { ApiError } from '../errors/api-error.ts';
import { findUserFile } from '../files/file-queries.ts';
import { imageTypeOf } from '../files/image-header.ts';
import { CollectSink, JsonLineScanner, type JsonPath, type StringSink } from '../files/json-line-scanner.ts';
import { JsonBase64Decoder } from '../pipeline/base64-decoder.ts';
import { batchPrefix, imageTypeOfKey } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { type LineImage, type LinkSigner, linkedObjectKey } from '../storage/signed-links.ts';
import type { BatchService } from './batch-service.ts';

/** One image of a batch's output, with a link that works without an API key. */
export interface GalleryImage {
  customId: string;
  /** Its place in the line's `response.body.data`, from 0. */
  index: number;
  url: string;
  mimeType: string;
}

export interface GalleryPage {
  images: GalleryImage[];
  /** Where the next page starts; null when this one reached the end. */
  nextCursor: string | null;
}

const LF = 0x0a;
/** A custom_id is at most 256 characters; escaped, each may take up to 12 bytes of JSON text. */
const MAX_CUSTOM_ID_TEXT = 256 * 12;
/** A url-mode link is a few hundred bytes; a longer value is not one of ours. */
const MAX_URL_TEXT = 8192;
/** Base64 text enough for the 12 bytes that tell PNG, JPEG and WebP apart (escapes included). */
const HEAD_TEXT = 64;
/** A cursor: the byte offset of an output line, and which of its images comes first (`.0` left out). */
const CURSOR = /^(\d{1,15})(?:\.(\d{1,4}))?$/;

/**
 * The images of a batch, read from its output file a page at a time: each page is a ranged read
 * from the byte offset its cursor names, so a page never reads the file from the start. Lines
 * go through a structural scanner (json-line-scanner.ts) that keeps only a line's custom_id, its
 * links and the first bytes of each base64 image, whatever the line's size.
 *
 * The links: a url-mode line's images are objects of their own, whose keys are read from the
 * links in the file and signed anew (the links written there may have expired). A b64_json
 * line's images live inside the line: each gets a link to "image i of the line at byte offset
 * O", which the link route serves by decoding that one image as it streams (lineImage below).
 */
export class BatchGallery {
  private readonly pool: Pool;
  private readonly store: ObjectStore;
  private readonly links: LinkSigner;
  private readonly batches: BatchService;

  constructor(deps: { pool: Pool; store: ObjectStore; links: LinkSigner; batches: BatchService }) {
    this.pool = deps.pool;
    this.store = deps.store;
    this.links = deps.links;
    this.batches = deps.batches;
  }

  /** One page of a batch's images, in output order; `customId` keeps only that request's. */
  async page(
    userId: number,
    batchId: string,
    opts: { limit: number; after: string | null; customId: string | null },
  ): Promise<GalleryPage> {
    const batch = await this.batches.get(userId, batchId);
    const from = opts.after === null ? { offset: 0, index: 0 } : parseCursor(opts.after);
    // No output yet (or none left: deleted with its batch's files, or expired): no images.
    const file = batch.outputFileId ? await findUserFile(this.pool, userId, batch.outputFileId) : null;
    if (!file || file.bytes === 0) return { images: [], nextCursor: null };
    if (from.offset > file.bytes) throw badCursor(opts.after!);

    // A link lives no longer than the file its image is in.
    const fileExpiry = file.expiresAt ? Math.floor(file.expiresAt.getTime() / 1000) : Number.POSITIVE_INFINITY;
    const expires = Math.min(this.links.defaultExpiry(), fileExpiry);
    const keyPrefix = batchPrefix(userId, batchId);

    // One byte early, to check that the cursor's offset starts a line.
    const start = from.offset === 0 ? 0 : from.offset - 1;
    const source = this.store.readStream(file.objectKey, { start });
    const images: GalleryImage[] = [];
    for await (const line of outputLines(source, start, from.offset !== 0)) {
      if (line === 'not_a_line_start') throw badCursor(opts.after!);
      if (opts.customId !== null && line.customId !== opts.customId) continue;
      for (const item of line.items) {
        if (line.offset === from.offset && item.index < from.index) continue;
        let url: string;
        let mimeType: string;
        if (item.kind === 'url') {
          const key = linkedObjectKey(item.url, keyPrefix);
          if (key === null) continue; // not a link to one of this batch's images: nothing to show
          url = this.links.sign(key, expires);
          mimeType = imageTypeOfKey(key);
        } else {
          url = this.links.signLineImage(file.objectKey, { offset: line.offset, index: item.index }, expires);
          mimeType = item.mimeType;
        }
        // One image past the page: it is where the next page starts.
        if (images.length === opts.limit) return { images, nextCursor: cursorOf(line.offset, item.index) };
        images.push({ customId: line.customId, index: item.index, url, mimeType });
      }
      // A full page at the end of a line: unfiltered, the next line (every output line has an
      // image) is where the next page starts, without reading it (it may be megabytes of base64).
      if (images.length === opts.limit && opts.customId === null) {
        return { images, nextCursor: line.next < file.bytes ? cursorOf(line.next, 0) : null };
      }
    }
    return { images, nextCursor: null };
  }

  /**
   * The bytes of image `index` of the line at `offset` of an object (a gallery link to a b64_json
   * image): a ranged read from the offset, the one base64 string decoded as it streams by, the
   * rest of the line skipped. The first bytes are read before this resolves, so a missing object
   * or image is an ApiError here (`file_not_found`) and the Content-Type is known.
   */
  async lineImage(
    objectKey: string,
    image: LineImage,
  ): Promise<{ contentType: string; body: AsyncIterable<Buffer>; close(): Promise<void> }> {
    const bytes = lineImageBytes(this.store.readStream(objectKey, { start: image.offset }), image.index);
    const head: Buffer[] = [];
    let length = 0;
    try {
      while (length < 12) {
        const next = await bytes.next();
        if (next.done) break;
        head.push(next.value);
        length += next.value.length;
      }
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      // 404: the object is gone; 416: the offset is past its end (it cannot be, for a link we signed).
      if (code === 404 || code === 416) throw imageGone();
      throw err;
    }
    if (length === 0) throw imageGone();
    const first = Buffer.concat(head);
    return {
      contentType: imageTypeOf(first) ?? 'application/octet-stream',
      body: (async function* () {
        yield first;
        yield* bytes;
      })(),
      close: async () => void (await bytes.return(undefined)),
    };
  }
}

const imageGone = () => new ApiError('file_not_found', 'The image behind this link no longer exists.');

const badCursor = (after: string) =>
  new ApiError(
    'invalid_cursor',
    `'after' must be a next_cursor of this batch's image list (got '${after.slice(0, 40)}').`,
    'after',
  );

function parseCursor(after: string): { offset: number; index: number } {
  const m = CURSOR.exec(after);
  if (!m) throw badCursor(after);
  return { offset: Number(m[1]), index: Number(m[2] ?? 0) };
}

const cursorOf = (offset: number, index: number) => (index === 0 ? String(offset) : `${offset}.${index}`);

/** An image entry of an output line: a link to an object (url mode) or base64 in the line. */
type LineItem = { index: number } & ({ kind: 'url'; url: string } | { kind: 'b64'; mimeType: string });

interface OutputLine {
  /** Byte offset of the line's first byte in the file. */
  offset: number;
  /** Byte offset of the next line (just past this one's line feed). */
  next: number;
  customId: string;
  items: LineItem[];
}

/** `response.body.data[i].<field>`: i, or null for any other path. */
function dataIndex(path: JsonPath, field: string): number | null {
  return path.length === 5 &&
    path[0] === 'response' &&
    path[1] === 'body' &&
    path[2] === 'data' &&
    typeof path[3] === 'number' &&
    path[4] === field
    ? path[3]
    : null;
}

/** What one line keeps while it streams by: its custom_id, its links, the first base64 of each image. */
class LineCollector {
  private customId: CollectSink | null = null;
  private readonly urls = new Map<number, CollectSink>();
  private readonly heads = new Map<number, CollectSink>();

  open(path: JsonPath): StringSink | null {
    if (path.length === 1 && path[0] === 'custom_id') {
      this.customId = new CollectSink(MAX_CUSTOM_ID_TEXT);
      return this.customId;
    }
    const url = dataIndex(path, 'url');
    if (url !== null) return this.set(this.urls, url, new CollectSink(MAX_URL_TEXT));
    const b64 = dataIndex(path, 'b64_json');
    if (b64 !== null) return this.set(this.heads, b64, new CollectSink(HEAD_TEXT));
    return null;
  }

  private set(map: Map<number, CollectSink>, index: number, sink: CollectSink): CollectSink {
    map.set(index, sink);
    return sink;
  }

  /** The line as read; null for a line without a custom_id (a blank line). */
  finish(offset: number, next: number): OutputLine | null {
    const customId = this.customId?.value ?? null;
    if (customId === null) return null;
    const items: LineItem[] = [];
    for (const index of new Set([...this.urls.keys(), ...this.heads.keys()])) {
      const url = this.urls.get(index)?.value;
      const head = this.heads.get(index);
      if (typeof url === 'string') items.push({ index, kind: 'url', url });
      else if (head) items.push({ index, kind: 'b64', mimeType: sniffBase64(head.raw) });
    }
    items.sort((a, b) => a.index - b.index);
    return { offset, next, customId, items };
  }
}

/** The image type of base64 text by its first bytes. */
function sniffBase64(text: Buffer): string {
  try {
    return imageTypeOf(new JsonBase64Decoder().push(text)) ?? 'application/octet-stream';
  } catch {
    return 'application/octet-stream'; // not base64: served as opaque bytes, if at all
  }
}

/**
 * The lines of an output file read from byte `start`, one at a time (none held past its end).
 * With `oneByteEarly`, the read starts one byte before the wanted line, and that byte must be a
 * line feed: else the first and only item is `not_a_line_start`.
 */
async function* outputLines(
  source: Readable,
  start: number,
  oneByteEarly: boolean,
): AsyncGenerator<OutputLine | 'not_a_line_start'> {
  let lineStart = oneByteEarly ? start + 1 : start;
  let position = start;
  let checked = !oneByteEarly;
  let line = new LineCollector();
  const scanner = new JsonLineScanner((path) => line.open(path));
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      let at = 0;
      if (!checked && chunk.length > 0) {
        if (chunk[0] !== LF) {
          yield 'not_a_line_start';
          return;
        }
        checked = true;
        at = 1;
        position += 1;
      }
      while (at < chunk.length) {
        const end = scanner.scan(chunk, at);
        if (end === -1) {
          position += chunk.length - at;
          break;
        }
        position += end - at;
        at = end;
        const done = line.finish(lineStart, position);
        lineStart = position;
        line = new LineCollector();
        if (done) yield done;
      }
    }
    // A last line without a line feed (the service always writes one; a file need not have it).
    if (!scanner.atLineStart) {
      scanner.reset();
      const done = line.finish(lineStart, position);
      if (done) yield done;
    }
  } finally {
    source.destroy();
  }
}

/**
 * The decoded bytes of `response.body.data[index].b64_json` of the line `source` starts with,
 * piece by piece as the base64 streams by (one chunk's worth at a time). Ends with nothing when
 * the line has no such image.
 */
async function* lineImageBytes(source: Readable, index: number): AsyncGenerator<Buffer> {
  const decoder = new JsonBase64Decoder();
  const pieces: Buffer[] = [];
  let ended = false;
  const scanner = new JsonLineScanner((path) =>
    dataIndex(path, 'b64_json') === index
      ? {
          piece: (text) => void pieces.push(decoder.push(text)),
          end: () => {
            pieces.push(decoder.end());
            ended = true;
          },
        }
      : null,
  );
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      const lineEnd = scanner.scan(chunk);
      for (const piece of pieces.splice(0)) if (piece.length > 0) yield piece;
      if (ended || lineEnd !== -1) return;
    }
  } finally {
    source.destroy();
  }
}
