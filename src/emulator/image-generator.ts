/**
 * Placeholder images: deterministic, decodable PNGs, JPEGs or WebPs whose size
 * follows the request's imageConfig and whose look follows the prompt (and the
 * reference image when there is one). There is no model: these only stand in
 * for one.
 */
import { createHash } from 'node:crypto';
import { encodeJpeg, padJpeg } from './jpeg.ts';
import { encodePng, padPng, pngChunk } from './png.ts';
import { encodeWebp, padWebp } from './webp.ts';

const SOFTWARE = 'image-batch-gateway emulator (placeholder, no model)';

export type ImageSize = '1K' | '2K' | '4K';

/**
 * Gemini's published output sizes per aspect ratio at 1K (Gemini 2.5 Flash
 * Image, Gemini 3 Pro Image); 2K and 4K are 2x and 4x of these, as in
 * Gemini 3 Pro Image's table.
 */
const SIZES_1K: Record<string, [number, number]> = {
  '1:1': [1024, 1024],
  '2:3': [832, 1248],
  '3:2': [1248, 832],
  '3:4': [864, 1184],
  '4:3': [1184, 864],
  '4:5': [896, 1152],
  '5:4': [1152, 896],
  '9:16': [768, 1344],
  '16:9': [1344, 768],
  '21:9': [1536, 672],
};

export const SUPPORTED_ASPECT_RATIOS = Object.keys(SIZES_1K);
export const SUPPORTED_IMAGE_SIZES: ImageSize[] = ['1K', '2K', '4K'];

export function imageDimensions(
  aspectRatio: string | undefined,
  imageSize: string | undefined,
): { width: number; height: number } {
  const base = SIZES_1K[aspectRatio ?? '1:1'];
  if (!base) throw new Error(`Unsupported aspect ratio: ${aspectRatio}`);
  const scale = imageSize === undefined || imageSize === '1K' ? 1 : imageSize === '2K' ? 2 : imageSize === '4K' ? 4 : 0;
  if (!scale) throw new Error(`Unsupported image size: ${imageSize}`);
  return { width: base[0] * scale, height: base[1] * scale };
}

export interface ImageSpec {
  width: number;
  height: number;
  /** Everything that should change the picture: prompt text, reference image digests, … */
  seed: string;
  padToBytes?: number;
}

/** The picture once, before any encoding: each band of tiles is one RGB row repeated. */
export interface Mosaic {
  width: number;
  height: number;
  /** One RGB row (width * 3 bytes) per band of tiles. */
  bandRows: Buffer[];
  /** The band each image row belongs to (length: height). */
  rowBand: Uint8Array;
}

/**
 * A mosaic of tiles coloured from a hash of the seed, each tile a horizontal
 * gradient. Every encoder starts from this, so PNG, JPEG and WebP show the
 * same pixels (up to JPEG/WebP's loss).
 */
export function renderMosaic(spec: Pick<ImageSpec, 'width' | 'height' | 'seed'>): Mosaic {
  const { width, height } = spec;
  const digest = createHash('sha256').update(spec.seed).digest();
  const columns = 4 + (digest[0] % 5);
  const rows = 3 + (digest[1] % 4);
  const palette = expandPalette(digest, columns * rows);
  const rowBand = new Uint8Array(height);
  for (let y = 0; y < height; y++) rowBand[y] = Math.min(Math.floor((y * rows) / height), rows - 1);
  const bandRows: Buffer[] = [];
  for (let band = 0; band < rows; band++) {
    const row = Buffer.alloc(width * 3);
    for (let x = 0; x < width; x++) {
      const column = Math.min(Math.floor((x * columns) / width), columns - 1);
      const colour = palette[band * columns + column];
      // Brighter toward the right edge of each tile.
      const tileStart = Math.floor((column * width) / columns);
      const tileWidth = Math.floor(((column + 1) * width) / columns) - tileStart;
      const shade = 0.55 + (0.45 * (x - tileStart)) / Math.max(tileWidth - 1, 1);
      row[x * 3] = Math.round(colour[0] * shade);
      row[x * 3 + 1] = Math.round(colour[1] * shade);
      row[x * 3 + 2] = Math.round(colour[2] * shade);
    }
    bandRows.push(row);
  }
  return { width, height, bandRows, rowBand };
}

/**
 * PNG: rows inside a band repeat, so only the first row of a band carries
 * pixels and the others are "Up"-filtered zeros.
 */
export function generatePng(spec: ImageSpec): Buffer {
  const mosaic = renderMosaic(spec);
  const { width, height } = mosaic;
  const stride = 1 + width * 3;
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const offset = y * stride;
    if (y > 0 && mosaic.rowBand[y] === mosaic.rowBand[y - 1]) {
      raw[offset] = 2; // Up: same as the row above
      continue;
    }
    raw[offset] = 0;
    mosaic.bandRows[mosaic.rowBand[y]].copy(raw, offset + 1);
  }
  const png = encodePng(width, height, raw, [pngChunk('tEXt', Buffer.from(`Software\0${SOFTWARE}`, 'latin1'))]);
  return spec.padToBytes ? padPng(png, spec.padToBytes, filler) : png;
}

/** Full RGBA pixels, what the JPEG and WebP encoders take. */
export function mosaicRgba(mosaic: Mosaic): Uint8ClampedArray {
  const { width, height } = mosaic;
  const rgba = new Uint8ClampedArray(width * height * 4);
  const bandRgba = mosaic.bandRows.map((row) => {
    const out = new Uint8ClampedArray(width * 4);
    for (let x = 0; x < width; x++) {
      out[x * 4] = row[x * 3];
      out[x * 4 + 1] = row[x * 3 + 1];
      out[x * 4 + 2] = row[x * 3 + 2];
      out[x * 4 + 3] = 255;
    }
    return out;
  });
  for (let y = 0; y < height; y++) rgba.set(bandRgba[mosaic.rowBand[y]], y * width * 4);
  return rgba;
}

export const IMAGE_MIME_TYPES = ['image/png', 'image/jpeg', 'image/webp'] as const;
export type ImageMimeType = (typeof IMAGE_MIME_TYPES)[number];

/** What Vertex uses when the request gives no compressionQuality. */
export const DEFAULT_COMPRESSION_QUALITY = 75;

export interface EncodedImage {
  mimeType: ImageMimeType;
  data: Buffer;
}

/**
 * The placeholder in the requested format. Async because the WebP codec is
 * WebAssembly, compiled on first use.
 */
export async function generateImage(
  spec: ImageSpec & { mimeType?: ImageMimeType; quality?: number },
): Promise<EncodedImage> {
  const mimeType = spec.mimeType ?? 'image/png';
  if (mimeType === 'image/png') return { mimeType, data: generatePng(spec) };
  const mosaic = renderMosaic(spec);
  const quality = spec.quality ?? DEFAULT_COMPRESSION_QUALITY;
  if (mimeType === 'image/jpeg') {
    const jpeg = encodeJpeg(mosaic.width, mosaic.height, mosaicRgba(mosaic), quality, SOFTWARE);
    return { mimeType, data: spec.padToBytes ? padJpeg(jpeg, spec.padToBytes, filler) : jpeg };
  }
  const webp = await encodeWebp(mosaic.width, mosaic.height, mosaicRgba(mosaic), quality);
  return { mimeType, data: spec.padToBytes ? padWebp(webp, spec.padToBytes, filler) : webp };
}

/** Side in pixels of the `tiny` image (VERTEX_EMULATOR_IMAGE=tiny). */
const TINY_SIDE = 8;
const tinyImages = new Map<string, Promise<{ mimeType: ImageMimeType; base64: string }>>();

/**
 * The `tiny` placeholder: one small image per format (and padding), made on first use and kept
 * as base64, so a scale run of millions of requests pays no rendering or encoding per image. It
 * is the same whatever the prompt, size or quality asked for.
 */
export function tinyImage(
  mimeType: ImageMimeType = 'image/png',
  padToBytes = 0,
): Promise<{ mimeType: ImageMimeType; base64: string }> {
  const key = `${mimeType}:${padToBytes}`;
  let image = tinyImages.get(key);
  if (!image) {
    image = generateImage({
      width: TINY_SIDE,
      height: TINY_SIDE,
      seed: 'tiny',
      mimeType,
      padToBytes: padToBytes || undefined,
    }).then((encoded) => ({ mimeType: encoded.mimeType, base64: encoded.data.toString('base64') }));
    tinyImages.set(key, image);
  }
  return image;
}

function expandPalette(digest: Buffer, count: number): Array<[number, number, number]> {
  const colours: Array<[number, number, number]> = [];
  let block = digest;
  let i = 0;
  while (colours.length < count) {
    if (i + 3 > block.length) {
      block = createHash('sha256').update(block).digest();
      i = 0;
    }
    colours.push([block[i], block[i + 1], block[i + 2]]);
    i += 3;
  }
  return colours;
}

/** Incompressible filler, generated once and shared (it only has to be bytes). */
let fillerCache = Buffer.alloc(0);
function filler(size: number): Buffer {
  if (fillerCache.length < size) {
    const out = Buffer.alloc(Math.max(size, 1024 * 1024));
    let block = createHash('sha256').update('pad').digest();
    for (let offset = 0; offset < out.length; offset += block.length) {
      block.copy(out, offset);
      block = createHash('sha256').update(block).digest();
    }
    fillerCache = out;
  }
  return fillerCache.subarray(0, size);
}
