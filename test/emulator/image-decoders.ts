/**
 * Independent decoders for the emulator's images: jpeg-js's decoder and
 * libwebp's (WebAssembly, @jsquash/webp), so a test fails if the bytes are not
 * what their mimeType says.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import decodeWebpWasm, { init as initWebpDecoder } from '@jsquash/webp/decode.js';
import jpegJs from 'jpeg-js';
import { PNG } from 'pngjs';

/** The "es2024" lib without "dom" has no WebAssembly typings. */
declare const WebAssembly: { Module: new (bytes: Uint8Array) => object };

export interface DecodedImage {
  width: number;
  height: number;
  /** RGBA, 4 bytes a pixel. */
  data: Uint8Array;
}

let webpReady: Promise<void> | undefined;

/** Node cannot fetch the codec's .wasm by URL: compile it from node_modules and hand it over. */
function loadWebpDecoder(): Promise<void> {
  webpReady ??= (async () => {
    const dir = path.dirname(createRequire(import.meta.url).resolve('@jsquash/webp/package.json'));
    const module = new WebAssembly.Module(await readFile(path.join(dir, 'codec/dec/webp_dec.wasm')));
    await (initWebpDecoder as unknown as (m: object) => Promise<void>)(module);
  })();
  return webpReady;
}

export async function decodeImage(mimeType: string, bytes: Buffer): Promise<DecodedImage> {
  if (mimeType === 'image/png') {
    const png = PNG.sync.read(bytes);
    return { width: png.width, height: png.height, data: png.data };
  }
  if (mimeType === 'image/jpeg') {
    const jpeg = jpegJs.decode(bytes, { useTArray: true, formatAsRGBA: true });
    return { width: jpeg.width, height: jpeg.height, data: jpeg.data };
  }
  if (mimeType === 'image/webp') {
    await loadWebpDecoder();
    // libwebp reads from its own copy, so hand it exactly the file's bytes.
    const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer;
    const webp = (await decodeWebpWasm(copy)) as unknown as { width: number; height: number; data: Uint8ClampedArray };
    return {
      width: webp.width,
      height: webp.height,
      data: new Uint8Array(webp.data.buffer, webp.data.byteOffset, webp.data.length),
    };
  }
  throw new Error(`no decoder for ${mimeType}`);
}

/** Mean absolute difference per channel (RGB) between two decoded images of the same size. */
export function meanDifference(a: DecodedImage, b: DecodedImage): number {
  let sum = 0;
  for (let i = 0; i < a.data.length; i += 4) {
    sum +=
      Math.abs(a.data[i] - b.data[i]) +
      Math.abs(a.data[i + 1] - b.data[i + 1]) +
      Math.abs(a.data[i + 2] - b.data[i + 2]);
  }
  return sum / ((a.data.length / 4) * 3);
}
