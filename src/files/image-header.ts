/**
 * Learns an uploaded image's type and size from its first bytes while it streams in, so a
 * file that merely starts like an image is refused before it is stored. Memory stays a few
 * dozen bytes whatever the chunking: PNG and WebP keep their size within the first 30 bytes,
 * and JPEG segments before the frame header (EXIF, ICC profiles…) are skipped by counting.
 */

export type ImageType = 'image/png' | 'image/jpeg' | 'image/webp';
export interface ImageInfo {
  type: ImageType;
  width: number;
  height: number;
}
export type HeaderState = { state: 'more' } | { state: 'done'; info: ImageInfo } | { state: 'invalid'; reason: string };

export const MAX_IMAGE_SIDE = 16384;

const NOT_AN_IMAGE = 'not a PNG, JPEG or WebP image';
const MORE: HeaderState = { state: 'more' };
/** RIFF header (12) + chunk header (8) + the 10 bytes VP8 and VP8X need: the longest fixed header read. */
const HEAD_SIZE = 30;

/** null stands for bytes that may be anything (the RIFF size). */
const SIGNATURES: [ImageType, (number | null)[]][] = [
  ['image/png', [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
  ['image/jpeg', [0xff, 0xd8, 0xff]],
  ['image/webp', [...Buffer.from('RIFF'), null, null, null, null, ...Buffer.from('WEBP')]],
];

const LABELS: Record<ImageType, string> = { 'image/png': 'PNG', 'image/jpeg': 'JPEG', 'image/webp': 'WebP' };

function invalid(reason: string): HeaderState {
  return { state: 'invalid', reason };
}

function sized(type: ImageType, width: number, height: number): HeaderState {
  const ok = (side: number) => side >= 1 && side <= MAX_IMAGE_SIDE;
  if (ok(width) && ok(height)) return { state: 'done', info: { type, width, height } };
  return invalid(`image is ${width}x${height} pixels; width and height must each be 1 to ${MAX_IMAGE_SIDE}`);
}

/**
 * The type of an image by its first bytes (12 are enough for all three), or null when they are
 * not those of a PNG, JPEG or WebP (or too few to tell).
 */
export function imageTypeOf(head: Buffer): ImageType | null {
  const type = sniff(head);
  return type === 'more' || type === 'invalid' ? null : type;
}

/** Decides as soon as the bytes in rule out every signature, not only once 12 are in. */
function sniff(head: Buffer): ImageType | 'more' | 'invalid' {
  let possible = false;
  for (const [type, signature] of SIGNATURES) {
    const n = Math.min(head.length, signature.length);
    if (!signature.slice(0, n).every((byte, i) => byte === null || head[i] === byte)) continue;
    if (n === signature.length) return type;
    possible = true;
  }
  return possible ? 'more' : 'invalid';
}

/** The signature, then IHDR: length 13, type, width and height. */
function readPng(head: Buffer): HeaderState {
  if (head.length < 16) return MORE;
  if (head.readUInt32BE(8) !== 13 || head.toString('latin1', 12, 16) !== 'IHDR')
    return invalid('corrupt PNG: it does not start with an IHDR chunk');
  if (head.length < 24) return MORE;
  return sized('image/png', head.readUInt32BE(16), head.readUInt32BE(20));
}

/** Bytes of the first chunk's payload each kind needs. */
const WEBP_NEEDS: Record<string, number> = { 'VP8 ': 10, VP8L: 5, VP8X: 10 };

function readWebp(head: Buffer): HeaderState {
  if (head.length < 16) return MORE;
  const kind = head.toString('latin1', 12, 16);
  const needs = WEBP_NEEDS[kind];
  if (needs === undefined) return invalid('corrupt WebP: the image does not start with a VP8, VP8L or VP8X chunk');
  if (head.length < 20 + needs) return MORE;
  if (head.readUInt32LE(16) < needs) return invalid('corrupt WebP: the first chunk is too short');
  const data = head.subarray(20);
  if (kind === 'VP8 ') {
    // Only key frames carry the start code and the size; a lone inter frame cannot be decoded.
    if (data[0] & 1) return invalid('corrupt WebP: the lossy bitstream does not start with a key frame');
    if (data[3] !== 0x9d || data[4] !== 0x01 || data[5] !== 0x2a) return invalid('corrupt WebP: bad VP8 start code');
    // The top 2 bits are an upscaling hint, not part of the size.
    return sized('image/webp', data.readUInt16LE(6) & 0x3fff, data.readUInt16LE(8) & 0x3fff);
  }
  if (kind === 'VP8L') {
    if (data[0] !== 0x2f) return invalid('corrupt WebP: bad VP8L signature');
    const bits = data.readUInt32LE(1);
    return sized('image/webp', (bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1);
  }
  return sized('image/webp', data.readUIntLE(4, 3) + 1, data.readUIntLE(7, 3) + 1);
}

/** Frame headers (SOFn) of every coding process; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are tables. */
function isFrameHeader(marker: number): boolean {
  return marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
}

/**
 * Walks JPEG segments byte-wise from just after SOI. Segment payloads are skipped by count, so
 * only a segment length (2 bytes) or the start of a frame header (5 bytes) is ever held.
 */
class JpegWalker {
  private phase: 'prefix' | 'marker' | 'length' | 'skip' | 'frame' = 'prefix';
  private marker = 0;
  private skip = 0;
  private readonly bytes = Buffer.alloc(5);
  private have = 0;

  get buffered(): number {
    return this.have;
  }

  push(chunk: Buffer): HeaderState {
    let at = 0;
    while (at < chunk.length) {
      const phase = this.phase;
      if (phase === 'skip') {
        const n = Math.min(this.skip, chunk.length - at);
        at += n;
        this.skip -= n;
        if (this.skip === 0) this.phase = 'prefix';
      } else if (phase === 'prefix') {
        if (chunk[at++] !== 0xff) return invalid('corrupt JPEG: a segment does not start with a marker');
        this.phase = 'marker';
      } else if (phase === 'marker') {
        const marker = chunk[at++];
        if (marker === 0xff) continue; // fill byte, allowed before any marker
        if (marker === 0xda || marker === 0xd9) return invalid('corrupt JPEG: no frame header before the image data');
        if (marker === 0x00 || marker === 0xd8) return invalid('corrupt JPEG: unexpected marker');
        if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
          this.phase = 'prefix'; // standalone: no length follows
          continue;
        }
        this.marker = marker;
        this.phase = 'length';
      } else {
        const want = phase === 'length' ? 2 : 5;
        const n = Math.min(want - this.have, chunk.length - at);
        chunk.copy(this.bytes, this.have, at, at + n);
        at += n;
        this.have += n;
        if (this.have < want) break;
        this.have = 0;
        // Frame header: precision, then height before width.
        if (phase === 'frame') return sized('image/jpeg', this.bytes.readUInt16BE(3), this.bytes.readUInt16BE(1));
        const length = this.bytes.readUInt16BE(0); // counts its own 2 bytes
        if (length < 2) return invalid('corrupt JPEG: segment length below 2');
        if (isFrameHeader(this.marker)) {
          if (length < 7) return invalid('corrupt JPEG: frame header too short');
          this.phase = 'frame';
        } else {
          this.skip = length - 2;
          this.phase = this.skip > 0 ? 'skip' : 'prefix';
        }
      }
    }
    return MORE;
  }
}

export class ImageHeaderReader {
  private readonly head = Buffer.alloc(HEAD_SIZE);
  private headLength = 0;
  private recognised: ImageType | null = null;
  private jpeg: JpegWalker | null = null;
  private result: HeaderState = MORE;

  /** The type recognised from the magic bytes as soon as they are in (null before, or when not an image). */
  get type(): ImageType | null {
    return this.recognised;
  }

  /** Header bytes held right now, for proving memory stays bounded. */
  get bufferedBytes(): number {
    return this.headLength + (this.jpeg?.buffered ?? 0);
  }

  push(chunk: Buffer): HeaderState {
    if (this.result.state !== 'more') return this.result;
    if (this.jpeg) return this.settle(this.jpeg.push(chunk));
    const take = Math.min(chunk.length, HEAD_SIZE - this.headLength);
    chunk.copy(this.head, this.headLength, 0, take);
    this.headLength += take;
    const head = this.head.subarray(0, this.headLength);
    if (!this.recognised) {
      const sniffed = sniff(head);
      if (sniffed === 'invalid') return this.settle(invalid(NOT_AN_IMAGE));
      if (sniffed === 'more') return MORE;
      this.recognised = sniffed;
    }
    if (this.recognised === 'image/png') return this.settle(readPng(head));
    if (this.recognised === 'image/webp') return this.settle(readWebp(head));
    // JPEG is walked rather than read at fixed offsets: hand it what followed SOI.
    this.jpeg = new JpegWalker();
    this.headLength = 0;
    const state = this.jpeg.push(head.subarray(2));
    return this.settle(state.state === 'more' ? this.jpeg.push(chunk.subarray(take)) : state);
  }

  /** The stream ended: 'done' if dimensions were found, else 'invalid' (truncated / no header). */
  end(): HeaderState {
    if (this.result.state !== 'more') return this.result;
    const type = this.recognised;
    return this.settle(invalid(type ? `truncated ${LABELS[type]}: the file ends before the image size` : NOT_AN_IMAGE));
  }

  private settle(state: HeaderState): HeaderState {
    this.result = state;
    if (state.state !== 'more') this.headLength = 0;
    return state;
  }
}
