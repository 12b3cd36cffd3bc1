/**
 * CRC32C (Castagnoli) with slicing-by-8 tables: several times faster than a
 * byte-at-a-time table (the Storage client's own), which matters when GB-sized
 * objects are checked as they stream (the object store's uploads and reads, and
 * the emulator's). Cloud Storage sends it as base64 of the big-endian 32-bit value.
 */

const POLY = 0x82f63b78; // reflected Castagnoli polynomial

const TABLES: Int32Array[] = (() => {
  const tables = Array.from({ length: 8 }, () => new Int32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    tables[0][n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let t = 1; t < 8; t++) tables[t][n] = (tables[t - 1][n] >>> 8) ^ tables[0][tables[t - 1][n] & 0xff];
  }
  return tables;
})();

/** Reading the input as 32-bit words is twice as fast as byte by byte, on a little-endian machine. */
const WORDS = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** Below this, a word view of the input costs more than it saves. */
const WORDS_FROM = 64;

export class Crc32c {
  private crc = 0xffffffff | 0;

  update(data: Uint8Array): this {
    const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;
    let crc = this.crc;
    let i = 0;
    const len = data.length;
    if (WORDS && len >= WORDS_FROM) {
      // Bytes up to a 4-byte boundary, then 8 bytes (two aligned words) per step.
      for (; (data.byteOffset + i) & 3; i++) crc = (crc >>> 8) ^ t0[(crc ^ data[i]) & 0xff];
      const steps = (len - i) >>> 3;
      const words = new Int32Array(data.buffer, data.byteOffset + i, steps * 2);
      for (let k = 0; k < words.length; k += 2) {
        const lo = crc ^ words[k];
        const hi = words[k + 1];
        crc =
          t7[lo & 0xff] ^
          t6[(lo >>> 8) & 0xff] ^
          t5[(lo >>> 16) & 0xff] ^
          t4[lo >>> 24] ^
          t3[hi & 0xff] ^
          t2[(hi >>> 8) & 0xff] ^
          t1[(hi >>> 16) & 0xff] ^
          t0[hi >>> 24];
      }
      i += steps * 8;
    }
    for (; i < len; i++) crc = (crc >>> 8) ^ t0[(crc ^ data[i]) & 0xff];
    this.crc = crc;
    return this;
  }

  value(): number {
    return (this.crc ^ 0xffffffff) >>> 0;
  }

  /** base64 of the big-endian value, as in the JSON API's `crc32c` and `x-goog-hash`. */
  toBase64(): string {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(this.value());
    return out.toString('base64');
  }
}

/**
 * For `new Storage({ crc32cGenerator })`: the client then validates uploads
 * and downloads with this implementation instead of its slower built-in one.
 */
export function crc32cGenerator(): {
  update(data: Buffer): void;
  toString(): string;
  validate(value: string): boolean;
} {
  const crc = new Crc32c();
  return {
    update: (data) => void crc.update(data),
    toString: () => crc.toBase64(),
    validate: (value) => crc.toBase64() === value,
  };
}
