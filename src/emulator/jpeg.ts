/**
 * Baseline JPEG through jpeg-js (pure JavaScript: npm cannot build native
 * addons here), plus padding that keeps the file decodable.
 */
import jpegJs from 'jpeg-js';

const SOI = 0xffd8;
/** APP15: an application segment no decoder claims, so every decoder skips it. */
const APP15 = 0xffef;
const PAD_ID = Buffer.from('EMULATOR-PAD\0', 'latin1');
/** A segment's 16-bit length counts itself (2 bytes), hence 65533 bytes of payload at most. */
const MAX_SEGMENT_PAYLOAD = 0xffff - 2;

/** `rgba` is width * height * 4 bytes; quality 0–100 as Vertex's compressionQuality. */
export function encodeJpeg(
  width: number,
  height: number,
  rgba: Uint8Array | Uint8ClampedArray,
  quality: number,
  comment?: string,
): Buffer {
  // jpeg-js treats quality 0 as 1; its comments become COM segments.
  return jpegJs.encode({ width, height, data: rgba, comments: comment ? [comment] : undefined }, Math.max(1, quality))
    .data;
}

/**
 * Grows a JPEG to `targetBytes` with APP15 segments of incompressible filler.
 * A segment is length-prefixed, so decoders skip it without looking inside;
 * they go after the leading APPn/COM segments (JFIF wants its APP0 first) and
 * before the tables and frame header, where the syntax allows them.
 */
export function padJpeg(jpeg: Buffer, targetBytes: number, filler: (size: number) => Buffer): Buffer {
  if (jpeg.readUInt16BE(0) !== SOI) throw new Error('not a JPEG: no SOI marker');
  const overhead = 4 + PAD_ID.length;
  const missing = targetBytes - jpeg.length;
  if (missing < overhead) return jpeg;
  // Spread the payload evenly over as few segments as fit, so the size comes out exact.
  const count = Math.ceil(missing / (overhead + MAX_SEGMENT_PAYLOAD - PAD_ID.length));
  const payloadTotal = missing - count * overhead;
  const bytes = filler(payloadTotal);
  const parts: Buffer[] = [];
  let used = 0;
  for (let i = 0; i < count; i++) {
    const payload = Math.floor((payloadTotal * (i + 1)) / count) - used;
    const header = Buffer.alloc(4);
    header.writeUInt16BE(APP15, 0);
    header.writeUInt16BE(2 + PAD_ID.length + payload, 2);
    parts.push(header, PAD_ID, bytes.subarray(used, used + payload));
    used += payload;
  }
  const at = endOfLeadingSegments(jpeg);
  return Buffer.concat([jpeg.subarray(0, at), ...parts, jpeg.subarray(at)]);
}

/** Offset just past SOI and the APPn/COM segments that follow it. */
function endOfLeadingSegments(jpeg: Buffer): number {
  let at = 2;
  while (at + 4 <= jpeg.length) {
    const marker = jpeg.readUInt16BE(at);
    const isAppOrCom = (marker >= 0xffe0 && marker <= 0xffef) || marker === 0xfffe;
    if (!isAppOrCom) break;
    at += 2 + jpeg.readUInt16BE(at + 2);
  }
  return at;
}
