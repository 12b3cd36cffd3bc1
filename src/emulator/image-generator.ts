/**
 * Placeholder images: deterministic, decodable PNGs whose size follows the
 * request's imageConfig and whose look follows the prompt (and the reference
 * image when there is one). There is no model: these only stand in for one.
 */
import { createHash } from 'node:crypto';
import { encodePng, padPng, pngChunk } from './png.ts';

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

export function imageDimensions(aspectRatio: string | undefined, imageSize: string | undefined): { width: number; height: number } {
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

/**
 * A mosaic of tiles coloured from a hash of the seed, each tile a horizontal
 * gradient. Rows inside a band of tiles repeat, so only the first row of a
 * band carries pixels and the others are "Up"-filtered zeros.
 */
export function generatePng(spec: ImageSpec): Buffer {
  const { width, height } = spec;
  const digest = createHash('sha256').update(spec.seed).digest();
  const columns = 4 + (digest[0] % 5);
  const rows = 3 + (digest[1] % 4);
  const stride = 1 + width * 3;
  const raw = Buffer.alloc(stride * height);
  const palette = expandPalette(digest, columns * rows);
  let band = -1;
  for (let y = 0; y < height; y++) {
    const rowBand = Math.min(Math.floor((y * rows) / height), rows - 1);
    const offset = y * stride;
    if (rowBand === band) {
      raw[offset] = 2; // Up: same as the row above
      continue;
    }
    band = rowBand;
    raw[offset] = 0;
    for (let x = 0; x < width; x++) {
      const column = Math.min(Math.floor((x * columns) / width), columns - 1);
      const colour = palette[rowBand * columns + column];
      // Brighter toward the right edge of each tile.
      const tileStart = Math.floor((column * width) / columns);
      const tileWidth = Math.floor(((column + 1) * width) / columns) - tileStart;
      const shade = 0.55 + (0.45 * (x - tileStart)) / Math.max(tileWidth - 1, 1);
      const p = offset + 1 + x * 3;
      raw[p] = Math.round(colour[0] * shade);
      raw[p + 1] = Math.round(colour[1] * shade);
      raw[p + 2] = Math.round(colour[2] * shade);
    }
  }
  const text = pngChunk('tEXt', Buffer.from(`Software\0image-batch-gateway emulator (placeholder, no model)`, 'latin1'));
  const png = encodePng(width, height, raw, [text]);
  return spec.padToBytes ? padPng(png, spec.padToBytes, filler) : png;
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
