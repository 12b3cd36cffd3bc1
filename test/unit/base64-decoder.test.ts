import { randomBytes } from 'node:crypto';
import { describe, expect, it } from '@jest/globals';
import { decodeJsonBase64, InvalidBase64Error, JsonBase64Decoder } from '../../src/pipeline/base64-decoder.ts';

/** `text` cut into pieces of `size` bytes (the last one shorter). */
function cut(text: string, size: number): Buffer[] {
  const bytes = Buffer.from(text);
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size));
  return pieces;
}

/** `text` cut at the given offsets. */
function cutAt(text: string, offsets: number[]): Buffer[] {
  const bytes = Buffer.from(text);
  const bounds = [0, ...offsets, bytes.length];
  return bounds.slice(1).map((end, i) => bytes.subarray(bounds[i], end));
}

const decode = (pieces: Buffer[]) => Buffer.concat(decodeJsonBase64(pieces));

describe('decodeJsonBase64', () => {
  it('decodes pieces of any length, with and without padding, to the original bytes', () => {
    for (let len = 0; len <= 40; len++) {
      const raw = randomBytes(len);
      const padded = raw.toString('base64');
      for (const text of [padded, padded.replace(/=+$/, '')]) {
        for (const size of [1, 2, 3, 4, 5, 7, 13, 64]) expect(decode(cut(text, size))).toEqual(raw);
      }
    }
  });

  it('decodes every way of cutting a text in three', () => {
    const raw = randomBytes(20); // 28 characters, one '='
    const text = raw.toString('base64');
    expect(text.endsWith('=')).toBe(true);
    for (let a = 0; a <= text.length; a++) {
      for (let b = a; b <= text.length; b++) expect(decode(cutAt(text, [a, b]))).toEqual(raw);
    }
  });

  it('keeps big pieces in native decoding: a 1 MB image in 64 KiB pieces', () => {
    const raw = randomBytes(999_999); // no padding: every piece takes the fast path
    const out = decodeJsonBase64(cut(raw.toString('base64'), 65_536));
    expect(out.length).toBe(21); // one decoded piece per input piece, never one joined string
    expect(Buffer.concat(out)).toEqual(raw);
  });

  it('fills one buffer when told the length, with the same bytes and the same refusals', () => {
    for (const len of [0, 1, 2, 3, 100, 65_537]) {
      const raw = randomBytes(len);
      for (const text of [raw.toString('base64'), raw.toString('base64').replace(/=+$/, '').replaceAll('/', '\\/')]) {
        for (const size of [1, 5, 4096]) {
          const out = decodeJsonBase64(cut(text, size), Buffer.byteLength(text));
          expect(out).toHaveLength(1);
          expect(out[0].equals(raw)).toBe(true);
        }
      }
    }
    const bad = `${randomBytes(30).toString('base64').slice(0, 20)}!AAA`;
    expect(() => decodeJsonBase64(cut(bad, 3), bad.length)).toThrow(InvalidBase64Error);
  });

  it('undoes JSON escapes, also when a piece ends inside one', () => {
    // Base64 full of '/' (bytes 0xff encode to "////"), escaped as some JSON encoders do.
    const raw = Buffer.concat([Buffer.alloc(30, 0xff), randomBytes(30), Buffer.from([0xfb, 0xef, 0xbe])]);
    const plain = raw.toString('base64');
    expect(plain).toContain('/');
    for (const escaped of [
      plain.replaceAll('/', '\\/'),
      plain.replaceAll('/', '\\u002F'),
      plain.replaceAll('+', '\\u002b'),
    ]) {
      for (let at = 0; at <= escaped.length; at++) expect(decode(cutAt(escaped, [at]))).toEqual(raw);
      for (const size of [1, 2, 3, 5, 6]) expect(decode(cut(escaped, size))).toEqual(raw);
    }
  });

  it('skips white space (MIME-style line breaks, escaped or not)', () => {
    const raw = randomBytes(100);
    const b64 = raw.toString('base64');
    const wrapped = b64.match(/.{1,19}/g)!.join('\\r\\n');
    expect(decode(cut(wrapped, 7))).toEqual(raw);
    expect(decode(cut(b64.match(/.{1,10}/g)!.join(' '), 3))).toEqual(raw);
    expect(decode(cut(`${b64.slice(0, -2)} ${b64.slice(-2)}`, 1000))).toEqual(raw);
  });

  it('takes the careful path only from where a big piece stops being plain base64', () => {
    const raw = randomBytes(75_000); // 100,000 characters: several slices of one piece
    const b64 = raw.toString('base64');
    const spaced = `${b64.slice(0, 40_001)} ${b64.slice(40_001, 90_000)}\n${b64.slice(90_000)}`;
    for (const target of [undefined, spaced.length]) {
      expect(Buffer.concat(decodeJsonBase64([Buffer.from(spaced)], target)).equals(raw)).toBe(true);
      const wrong = `${b64.slice(0, 40_001)}*${b64.slice(40_002)}`;
      expect(() => decodeJsonBase64([Buffer.from(wrong)], target)).toThrow(InvalidBase64Error);
    }
  });

  it('refuses what is not base64, wherever it is', () => {
    const b64 = randomBytes(30).toString('base64'); // 40 characters, no padding
    const bad = [
      `${b64.slice(0, 10)}!${b64.slice(10)}`, // a character outside the alphabet
      `${b64.slice(0, 10)}-${b64.slice(10, 39)}`, // base64url is another alphabet
      `${b64.slice(0, 10)}_${b64.slice(10, 39)}`,
      `${b64.slice(0, 20)}\\"${b64.slice(20, 39)}`, // an escaped quote
      `${b64.slice(0, 20)}\\u00e9${b64.slice(20, 39)}`, // an escaped letter beyond ASCII
      `${b64.slice(0, 20)}é${b64.slice(20, 39)}`, // UTF-8 bytes
      `${b64.slice(0, 20)}\\x41${b64.slice(20)}`, // not a JSON escape
      `${b64.slice(0, 20)}\\u00G1${b64.slice(20)}`,
      `${b64.slice(0, 38)}!`, // at the very end, within the last (partial) quad
      `${b64.slice(0, 38)}==QQ==`, // data after the padding
      `${b64.slice(0, 37)}`, // one character too few: a lone character ends it
      `${b64.slice(0, 36)}Q===`, // too much padding
      `${b64.slice(0, 38)}=`, // padding that does not complete the quad
      '====',
      `${b64}\\`, // ends inside an escape
      `${b64}\\u00`,
    ];
    for (const text of bad) {
      for (const size of [1, 3, 4, 8, 1000]) {
        expect(() => decode(cut(text, size))).toThrow(InvalidBase64Error);
      }
    }
  });

  it('gives the bytes as pieces come: never more than the whole quads so far', () => {
    const raw = randomBytes(9); // 12 characters
    const text = raw.toString('base64');
    const d = new JsonBase64Decoder();
    expect(d.push(Buffer.from(text.slice(0, 5)))).toEqual(raw.subarray(0, 3));
    expect(d.push(Buffer.from(text.slice(5, 7)))).toEqual(Buffer.alloc(0));
    expect(d.push(Buffer.from(text.slice(7, 12)))).toEqual(raw.subarray(3, 9));
    expect(d.end()).toEqual(Buffer.alloc(0));
  });
});
