import { describe, expect, test } from '@jest/globals';
import encode from '@jsquash/webp/encode.js';
import { encodeJpeg, padJpeg } from '../../src/emulator/jpeg.ts';
import { encodePng, padPng, pngChunk } from '../../src/emulator/png.ts';
import { encodeWebp, padWebp } from '../../src/emulator/webp.ts';
import { type HeaderState, ImageHeaderReader, type ImageType, MAX_IMAGE_SIDE } from '../../src/files/image-header.ts';

const BUFFER_LIMIT = 64;

/** Deterministic PRNG (mulberry32), so a failing chunking can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Chunking = 'whole' | 'bytes' | 'random';

function chunksOf(data: Buffer, chunking: Chunking, seed = 1): Buffer[] {
  if (chunking === 'whole') return [data];
  const next = random(seed);
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; ) {
    const size = chunking === 'bytes' ? 1 : 1 + Math.floor(next() * 40);
    chunks.push(data.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

/** Feeds until the reader decides (then calls end() only if it never did), tracking the buffer high-water mark. */
function read(data: Buffer, chunking: Chunking = 'whole', seed = 1) {
  const reader = new ImageHeaderReader();
  let state: HeaderState = { state: 'more' };
  let maxBuffered = 0;
  let decidedByPush = false;
  for (const chunk of chunksOf(data, chunking, seed)) {
    state = reader.push(chunk);
    maxBuffered = Math.max(maxBuffered, reader.bufferedBytes);
    if (state.state !== 'more') {
      decidedByPush = true;
      break;
    }
  }
  if (!decidedByPush) state = reader.end();
  return { reader, state, maxBuffered, decidedByPush };
}

function expectImage(data: Buffer, type: ImageType, width: number, height: number) {
  for (const chunking of ['whole', 'bytes', 'random'] as const) {
    for (const seed of chunking === 'random' ? [1, 2, 3, 4, 5] : [1]) {
      const { reader, state, maxBuffered, decidedByPush } = read(data, chunking, seed);
      expect({ chunking, seed, state }).toEqual({
        chunking,
        seed,
        state: { state: 'done', info: { type, width, height } },
      });
      expect(decidedByPush).toBe(true);
      expect(reader.type).toBe(type);
      expect(maxBuffered).toBeLessThanOrEqual(BUFFER_LIMIT);
    }
  }
}

function expectInvalid(data: Buffer, reason: string | RegExp, chunking: Chunking = 'whole') {
  const { state } = read(data, chunking);
  expect(state.state).toBe('invalid');
  if (state.state === 'invalid') expect(state.reason).toMatch(reason);
  return state;
}

const SIZES = [
  [1, 1],
  [3, 2],
  [64, 17],
] as const;

function rgba(width: number, height: number): Uint8ClampedArray {
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < pixels.length; i++) pixels[i] = i % 4 === 3 ? 255 : (i * 37) & 0xff; // opaque: no ALPH chunk
  return pixels;
}

function png(width: number, height: number): Buffer {
  return encodePng(width, height, Buffer.alloc(height * (1 + width * 3)));
}

/** Just the signature and IHDR, enough for the reader, with any width and height. */
function pngHeader(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([png(1, 1).subarray(0, 8), pngChunk('IHDR', ihdr)]);
}

function segment(marker: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt16BE(0xff00 | marker, 0);
  header.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([header, payload]);
}

function frameHeader(marker: number, width: number, height: number): Buffer {
  const payload = Buffer.from([8, 0, 0, 0, 0, 1, 1, 0x11, 0]);
  payload.writeUInt16BE(height, 1);
  payload.writeUInt16BE(width, 3);
  return segment(marker, payload);
}

const SOI = Buffer.from([0xff, 0xd8]);
const JFIF = segment(0xe0, Buffer.from('JFIF\0\x01\x01\0\0\x01\0\x01\0\0', 'latin1'));

function riff(fourCC: string, payload: Buffer): Buffer {
  const out = Buffer.alloc(20 + payload.length);
  out.write('RIFF', 0, 'latin1');
  out.writeUInt32LE(out.length - 8, 4);
  out.write('WEBP', 8, 'latin1');
  out.write(fourCC, 12, 'latin1');
  out.writeUInt32LE(payload.length, 16);
  payload.copy(out, 20);
  return out;
}

function vp8x(width: number, height: number): Buffer {
  const payload = Buffer.alloc(10);
  payload.writeUIntLE(width - 1, 4, 3);
  payload.writeUIntLE(height - 1, 7, 3);
  return riff('VP8X', payload);
}

const filler = (size: number) => Buffer.alloc(size, 0xa5);

describe('real images from the project encoders', () => {
  test.each(SIZES)('PNG %ix%i', (width, height) => {
    expectImage(png(width, height), 'image/png', width, height);
    expectImage(padPng(png(width, height), 50_000, filler), 'image/png', width, height);
  });

  test.each(SIZES)('JPEG %ix%i', (width, height) => {
    const jpeg = encodeJpeg(width, height, rgba(width, height), 80, 'made by a test');
    expectImage(jpeg, 'image/jpeg', width, height);
    // APP15 filler segments of up to 64 KB each before the frame header.
    expectImage(padJpeg(jpeg, 300_000, filler), 'image/jpeg', width, height);
  });

  test.each(SIZES)('WebP lossy (VP8), lossless (VP8L) and extended (VP8X) %ix%i', async (width, height) => {
    const lossy = await encodeWebp(width, height, rgba(width, height), 75); // also initialises the codec
    expect(lossy.toString('latin1', 12, 16)).toBe('VP8 ');
    expectImage(lossy, 'image/webp', width, height);

    const lossless = Buffer.from(await encode({ width, height, data: rgba(width, height) } as never, { lossless: 1 }));
    expect(lossless.toString('latin1', 12, 16)).toBe('VP8L');
    expectImage(lossless, 'image/webp', width, height);

    const extended = padWebp(lossy, 20_000, filler);
    expect(extended.toString('latin1', 12, 16)).toBe('VP8X');
    expectImage(extended, 'image/webp', width, height);
  });

  test('a multi-megabyte image in one chunk', () => {
    const big = padPng(png(64, 17), 3_000_000, filler);
    expect(read(big).state).toEqual({ state: 'done', info: { type: 'image/png', width: 64, height: 17 } });
  });
});

describe('type recognition', () => {
  test('type is known as soon as the magic bytes are in, and pushes after the decision are ignored', () => {
    const reader = new ImageHeaderReader();
    const jpeg = encodeJpeg(3, 2, rgba(3, 2), 80);
    expect(reader.push(jpeg.subarray(0, 2))).toEqual({ state: 'more' });
    expect(reader.type).toBeNull();
    expect(reader.push(jpeg.subarray(2, 3))).toEqual({ state: 'more' });
    expect(reader.type).toBe('image/jpeg');
    const done = reader.push(jpeg.subarray(3));
    expect(done).toEqual({ state: 'done', info: { type: 'image/jpeg', width: 3, height: 2 } });
    expect(reader.push(Buffer.from('garbage'))).toEqual(done);
    expect(reader.end()).toEqual(done);
    expect(reader.bufferedBytes).toBe(0);
  });

  test('a text file is refused from its first byte', () => {
    const reader = new ImageHeaderReader();
    expect(reader.push(Buffer.from('hello, this is a text file\n'))).toEqual({
      state: 'invalid',
      reason: 'not a PNG, JPEG or WebP image',
    });
    expect(reader.type).toBeNull();
    expect(reader.push(png(3, 2)).state).toBe('invalid'); // stays refused
  });

  test('random bytes are refused before 12 bytes are in', () => {
    const next = random(42);
    for (let n = 0; n < 20; n++) {
      const bytes = Buffer.from(Array.from({ length: 4096 }, () => Math.floor(next() * 256)));
      const reader = new ImageHeaderReader();
      let state: HeaderState = { state: 'more' };
      for (let i = 0; i < 12 && state.state === 'more'; i++) state = reader.push(bytes.subarray(i, i + 1));
      expect(state).toEqual({ state: 'invalid', reason: 'not a PNG, JPEG or WebP image' });
    }
  });

  test('a RIFF file that is not WebP', () => {
    const wav = Buffer.concat([Buffer.from('RIFF\x24\0\0\0WAVEfmt ', 'latin1'), Buffer.alloc(32)]);
    expectInvalid(wav, 'not a PNG, JPEG or WebP image', 'bytes');
  });

  test('empty and too-short uploads are refused at end()', () => {
    expectInvalid(Buffer.alloc(0), 'not a PNG, JPEG or WebP image');
    expectInvalid(Buffer.from('RIFF'), 'not a PNG, JPEG or WebP image');
    expectInvalid(Buffer.from([0x89, 0x50]), 'not a PNG, JPEG or WebP image');
  });
});

describe('PNG', () => {
  test('a PNG signature followed by garbage', () => {
    const data = Buffer.concat([png(3, 2).subarray(0, 8), Buffer.from('this is not a PNG chunk at all')]);
    for (const chunking of ['whole', 'bytes'] as const) {
      const { reader } = read(data, chunking);
      expect(reader.type).toBe('image/png');
      expectInvalid(data, /corrupt PNG/, chunking);
    }
  });

  test('IHDR with the wrong length', () => {
    const header = pngHeader(3, 2);
    header.writeUInt32BE(12, 8);
    expectInvalid(header, /IHDR/);
  });

  test('truncated header', () => {
    expectInvalid(png(3, 2).subarray(0, 8), /^truncated PNG/);
    expectInvalid(png(3, 2).subarray(0, 23), /^truncated PNG/, 'bytes');
  });

  test('sides of 0 and 16385 are refused, 1 and 16384 accepted', () => {
    expect(read(pngHeader(MAX_IMAGE_SIDE, 1)).state).toEqual({
      state: 'done',
      info: { type: 'image/png', width: 16384, height: 1 },
    });
    expect(expectInvalid(pngHeader(0, 5), /0x5/)).toEqual({
      state: 'invalid',
      reason: 'image is 0x5 pixels; width and height must each be 1 to 16384',
    });
    expectInvalid(pngHeader(5, 16385), /5x16385 .*1 to 16384/);
    expectInvalid(pngHeader(0xffffffff, 1), /4294967295x1/);
  });
});

describe('JPEG', () => {
  test('100 KB of APP1 before the frame header is skipped with bounded memory', () => {
    // A segment holds at most 65533 bytes, so 100 KB of EXIF-like data takes two APP1 segments.
    const exif = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), Buffer.alloc(50_000, 0xff)]);
    const data = Buffer.concat([SOI, segment(0xe1, exif), segment(0xe1, exif), frameHeader(0xc0, 640, 480)]);
    expect(data.length).toBeGreaterThan(100_000);
    for (const chunking of ['whole', 'bytes', 'random'] as const) {
      const { state, maxBuffered } = read(data, chunking);
      expect(state).toEqual({ state: 'done', info: { type: 'image/jpeg', width: 640, height: 480 } });
      expect(maxBuffered).toBeLessThanOrEqual(BUFFER_LIMIT);
    }
    // Mid-segment the reader holds nothing at all.
    const reader = new ImageHeaderReader();
    reader.push(data.subarray(0, 60_000));
    expect(reader.bufferedBytes).toBe(0);
  });

  test('a real JPEG with a 100 KB APP1 spliced in after JFIF', () => {
    const jpeg = encodeJpeg(64, 17, rgba(64, 17), 80);
    const app1 = segment(0xe1, Buffer.alloc(65_000, 7));
    const data = Buffer.concat([jpeg.subarray(0, 2 + JFIF.length), app1, app1, jpeg.subarray(2 + JFIF.length)]);
    expectImage(data, 'image/jpeg', 64, 17);
  });

  test('progressive (SOF2) frame header, fill bytes and standalone markers', () => {
    const data = Buffer.concat([
      SOI,
      JFIF,
      Buffer.from([0xff, 0xff, 0xff]), // fill bytes before a marker
      segment(0xdb, Buffer.alloc(65, 1)), // DQT
      Buffer.from([0xff, 0xd3, 0xff, 0x01]), // RST3, TEM: no length
      segment(0xfe, Buffer.alloc(0)), // empty COM: length 2
      frameHeader(0xc2, 300, 42),
    ]);
    expectImage(data, 'image/jpeg', 300, 42);
  });

  const sofMarkers = [0xc1, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf];
  test.each(sofMarkers.map((marker) => [marker.toString(16).toUpperCase(), marker] as const))(
    'SOF marker %s',
    (_, marker) => {
      expectImage(Buffer.concat([SOI, frameHeader(marker, 7, 9)]), 'image/jpeg', 7, 9);
    },
  );

  test('DHT, JPG and DAC markers are not frame headers', () => {
    for (const marker of [0xc4, 0xc8, 0xcc]) {
      const data = Buffer.concat([SOI, segment(marker, Buffer.from([8, 0, 1, 0, 1])), frameHeader(0xc0, 11, 13)]);
      expectImage(data, 'image/jpeg', 11, 13);
    }
  });

  test('scan or end of image before any frame header', () => {
    expectInvalid(Buffer.concat([SOI, JFIF, segment(0xda, Buffer.alloc(10))]), /no frame header/);
    expectInvalid(Buffer.concat([SOI, JFIF, Buffer.from([0xff, 0xd9])]), /no frame header/, 'bytes');
  });

  test('a marker not preceded by 0xFF, and segment lengths below 2', () => {
    expectInvalid(Buffer.concat([SOI, JFIF, Buffer.from([0xc0, 0x00, 0x11])]), /does not start with a marker/);
    expectInvalid(Buffer.concat([SOI, Buffer.from([0xff, 0xe1, 0x00, 0x01])]), /segment length below 2/, 'bytes');
    expectInvalid(Buffer.concat([SOI, Buffer.from([0xff, 0xe1, 0x00, 0x00])]), /segment length below 2/);
    expectInvalid(Buffer.concat([SOI, Buffer.from([0xff, 0xc0, 0x00, 0x05, 8, 0, 1])]), /frame header too short/);
  });

  test('sides of 0 and 16385 are refused', () => {
    expectInvalid(Buffer.concat([SOI, frameHeader(0xc0, 0, 10)]), 'image is 0x10 pixels');
    expectInvalid(Buffer.concat([SOI, frameHeader(0xc2, 10, 16385)]), 'image is 10x16385 pixels');
    expectImage(Buffer.concat([SOI, frameHeader(0xc0, 16384, 16384)]), 'image/jpeg', 16384, 16384);
  });

  test('truncated before or inside the frame header', () => {
    const jpeg = encodeJpeg(3, 2, rgba(3, 2), 80);
    expectInvalid(jpeg.subarray(0, 3), /^truncated JPEG/);
    expectInvalid(jpeg.subarray(0, 50), /^truncated JPEG/, 'bytes');
    const frame = Buffer.concat([SOI, frameHeader(0xc0, 3, 2)]);
    expectInvalid(frame.subarray(0, frame.length - 6), /^truncated JPEG/, 'bytes');
  });
});

describe('WebP', () => {
  test('hand-crafted VP8X header', () => {
    expectImage(vp8x(1, 1), 'image/webp', 1, 1);
    expectImage(vp8x(4000, 16384), 'image/webp', 4000, 16384);
    expectInvalid(vp8x(16385, 3), 'image is 16385x3 pixels; width and height must each be 1 to 16384');
    expectInvalid(vp8x(0x1000000, 1), /16777216x1/);
  });

  test('VP8 width of 0 and a non-key frame', () => {
    const payload = Buffer.from([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 5, 0]);
    expectInvalid(riff('VP8 ', payload), 'image is 0x5 pixels');
    payload.writeUInt16LE(0xc000 | 20, 6); // scaling bits set: not part of the width
    expectImage(riff('VP8 ', payload), 'image/webp', 20, 5);
    payload[0] |= 1;
    expectInvalid(riff('VP8 ', payload), /key frame/);
    expectInvalid(riff('VP8 ', Buffer.from([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2b, 1, 0, 1, 0])), /start code/);
  });

  test('bad VP8L signature', () => {
    expectInvalid(riff('VP8L', Buffer.from([0x2e, 0, 0, 0, 0])), /VP8L signature/);
  });

  test('any other first chunk', () => {
    expectInvalid(riff('ALPH', Buffer.alloc(10)), /VP8, VP8L or VP8X/);
    expectInvalid(riff('vp8 ', Buffer.alloc(10)), /VP8, VP8L or VP8X/, 'bytes');
  });

  test('a first chunk too short for its header', () => {
    const data = vp8x(3, 2);
    data.writeUInt32LE(4, 16);
    expectInvalid(data, /too short/);
  });

  test('truncated header', () => {
    expectInvalid(vp8x(3, 2).subarray(0, 12), /^truncated WebP/);
    expectInvalid(vp8x(3, 2).subarray(0, 29), /^truncated WebP/, 'bytes');
  });
});
