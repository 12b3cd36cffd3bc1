/**
 * Lossy WebP through @jsquash/webp (libwebp compiled to WebAssembly: npm cannot
 * build native addons here), plus padding that keeps the file decodable.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import encode, { init } from '@jsquash/webp/encode.js';

/** The "es2024" lib without "dom" has no WebAssembly typings: the two calls used here. */
declare const WebAssembly: {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => WasmModule;
};
interface WasmModule {
  readonly compiledWasm: unique symbol;
}

let ready: Promise<void> | undefined;

/**
 * The codec would fetch its .wasm by URL, which Node cannot do for files, so
 * it is compiled here from node_modules and handed over. The package's init
 * picks its SIMD build when the runtime validates SIMD (Node 24 always does);
 * the same test chooses which binary to compile, so glue and binary match.
 */
function loadEncoder(): Promise<void> {
  ready ??= (async () => {
    const dir = path.dirname(createRequire(import.meta.url).resolve('@jsquash/webp/package.json'));
    const simdBytes = await readFile(path.join(dir, 'codec/enc/webp_enc_simd.wasm'));
    const bytes = WebAssembly.validate(simdBytes)
      ? simdBytes
      : await readFile(path.join(dir, 'codec/enc/webp_enc.wasm'));
    // The published typings omit init's first parameter, the precompiled module.
    await (init as unknown as (module: WasmModule) => Promise<unknown>)(new WebAssembly.Module(bytes));
  })();
  ready.catch(() => (ready = undefined)); // a failed load may be retried
  return ready;
}

/**
 * `rgba` is width * height * 4 bytes; quality 0–100 as Vertex's
 * compressionQuality. Method 0 is libwebp's fastest: a 4K image in about a
 * third of a second instead of over a second at the default method 4, at the
 * cost of a larger file, which does not matter for a placeholder.
 */
export async function encodeWebp(
  width: number,
  height: number,
  rgba: Uint8ClampedArray,
  quality: number,
): Promise<Buffer> {
  await loadEncoder();
  // The codec reads only data, width and height of its ImageData argument.
  const out = await encode({ width, height, data: rgba } as never, { quality, method: 0 });
  return Buffer.from(out);
}

const RIFF_HEADER = 12; // "RIFF", size, "WEBP"

function chunk(fourCC: string, data: Buffer): Buffer {
  const padded = data.length + (data.length & 1); // chunks are padded to even sizes
  const out = Buffer.alloc(8 + padded);
  out.write(fourCC, 0, 'latin1');
  out.writeUInt32LE(data.length, 4);
  data.copy(out, 8);
  return out;
}

/**
 * Grows a WebP to `targetBytes` with an unknown chunk ("pdDg") at the end,
 * which readers must ignore. Unknown chunks belong to the extended format, so
 * a simple (VP8/VP8L only) file first gets the VP8X header chunk, with no
 * feature flags and the canvas size; the RIFF size is rewritten to match.
 */
export function padWebp(webp: Buffer, targetBytes: number, filler: (size: number) => Buffer): Buffer {
  if (webp.toString('latin1', 0, 4) !== 'RIFF' || webp.toString('latin1', 8, 12) !== 'WEBP')
    throw new Error('not a WebP file');
  const first = webp.toString('latin1', RIFF_HEADER, RIFF_HEADER + 4);
  const vp8x = first === 'VP8X' ? Buffer.alloc(0) : chunk('VP8X', vp8xPayload(webp, first));
  const missing = targetBytes - webp.length - vp8x.length - 8;
  if (missing < 0) return webp;
  const pad = chunk('pdDg', filler(missing - (missing & 1)));
  const out = Buffer.concat([webp.subarray(0, RIFF_HEADER), vp8x, webp.subarray(RIFF_HEADER), pad]);
  out.writeUInt32LE(out.length - 8, 4);
  return out;
}

/** VP8X payload: flags (none), 3 reserved bytes, canvas width - 1 and height - 1 as 24-bit little-endian. */
function vp8xPayload(webp: Buffer, imageChunk: string): Buffer {
  const { width, height } = webpDimensions(webp, imageChunk);
  const payload = Buffer.alloc(10);
  payload.writeUIntLE(width - 1, 4, 3);
  payload.writeUIntLE(height - 1, 7, 3);
  return payload;
}

/** Dimensions from the bitstream header of a simple-format file. */
function webpDimensions(webp: Buffer, imageChunk: string): { width: number; height: number } {
  const data = RIFF_HEADER + 8;
  if (imageChunk === 'VP8 ') {
    // Frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height.
    return { width: webp.readUInt16LE(data + 6) & 0x3fff, height: webp.readUInt16LE(data + 8) & 0x3fff };
  }
  if (imageChunk === 'VP8L') {
    // Signature 0x2f, then 14 bits width - 1 and 14 bits height - 1.
    const bits = webp.readUInt32LE(data + 1);
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  throw new Error(`unexpected WebP chunk ${JSON.stringify(imageChunk)}`);
}
