/**
 * Minimal PNG encoder (8-bit RGB, non-interlaced) on node:zlib: deflate for
 * the pixel data and zlib.crc32 for chunk checksums. No native dependencies.
 */
import { constants, crc32, deflateSync } from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function pngChunk(type: string, data: Buffer): Buffer {
  const chunk = Buffer.alloc(12 + data.length);
  chunk.writeUInt32BE(data.length, 0);
  chunk.write(type, 4, 'latin1');
  data.copy(chunk, 8);
  chunk.writeUInt32BE(crc32(chunk.subarray(4, 8 + data.length)), 8 + data.length);
  return chunk;
}

/**
 * Encodes already filtered scanlines: `raw` holds, for each row, one filter
 * type byte followed by width * 3 bytes. Callers use filter 2 ("Up") with
 * zero bytes for rows equal to the one above, which deflate squeezes to
 * almost nothing, so even a 4K image encodes in milliseconds.
 */
export function encodePng(width: number, height: number, raw: Buffer, extraChunks: Buffer[] = []): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // colour type: truecolour
  header[10] = 0; // deflate
  header[11] = 0; // adaptive filtering
  header[12] = 0; // no interlace
  const idat = deflateSync(raw, { level: 1, strategy: constants.Z_DEFAULT_STRATEGY });
  return Buffer.concat([
    SIGNATURE,
    pngChunk('IHDR', header),
    ...extraChunks,
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * Grows a PNG to about `targetBytes` with a private ancillary chunk ("pdDg":
 * ancillary, private, safe to copy) that decoders skip, so benchmarks move
 * realistic byte counts while the image stays valid. The filler is not
 * compressible, like real image data.
 */
export function padPng(png: Buffer, targetBytes: number, filler: (size: number) => Buffer): Buffer {
  const missing = targetBytes - png.length - 12;
  if (missing <= 0) return png;
  const iend = png.length - 12; // IEND is always the last 12 bytes
  return Buffer.concat([png.subarray(0, iend), pngChunk('pdDg', filler(missing)), png.subarray(iend)]);
}
