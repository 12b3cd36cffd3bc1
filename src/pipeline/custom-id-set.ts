import { hash } from 'node:crypto';

/** Slot layout: 16 bytes, as 4 words. Word 0 of a used slot is never 0 (its first byte never is). */
const WORDS = 4;
const MAX_LOAD = 0.75;
/** Longest custom_id kept as its own bytes (ASCII); longer ones are kept as a digest. */
const VERBATIM_MAX = 15;
/** First byte of a digest key: no verbatim key starts with it (those start with their length, 1–15). */
const DIGEST = 0x80;
/** Of a custom_id that is not well-formed UTF-16 (a lone surrogate, from a JSON escape). */
const DIGEST_UTF16 = 0x81;

/**
 * The custom_ids of a batch, to find duplicates while validation streams the file: 16 bytes per
 * id in one flat table instead of a JS string and a Set entry each (about 100 bytes), so a
 * million-line batch takes 32 MB and no garbage. An ASCII id of up to 15 characters is kept as
 * its own bytes (exact); a longer one as 120 bits of its SHA-256 — two different ids then collide
 * with a chance of about n² / 2^121 (1 in 10^24 for a million lines), far below a disk's error
 * rate, so in practice the set is exact.
 */
export class CustomIdSet {
  private slots: Uint32Array;
  private mask: number;
  private count = 0;
  private readonly key = new Uint32Array(WORDS);
  private readonly keyBytes = new Uint8Array(this.key.buffer);

  constructor(initialCapacity = 1024) {
    let capacity = 16;
    while (capacity < initialCapacity) capacity *= 2;
    this.slots = new Uint32Array(capacity * WORDS);
    this.mask = capacity - 1;
  }

  get size(): number {
    return this.count;
  }

  /** Bytes of the table (what the set costs in memory). */
  get byteLength(): number {
    return this.slots.byteLength;
  }

  /** Adds `id`; false when it is in the set already. */
  add(id: string): boolean {
    this.makeKey(id);
    if (this.count + 1 > (this.mask + 1) * MAX_LOAD) this.grow();
    const [k0, k1, k2, k3] = this.key;
    const slots = this.slots;
    for (let i = slotOf(k0, k1, k2, k3, this.mask); ; i = (i + 1) & this.mask) {
      const o = i * WORDS;
      const s0 = slots[o];
      if (s0 === 0) {
        slots[o] = k0;
        slots[o + 1] = k1;
        slots[o + 2] = k2;
        slots[o + 3] = k3;
        this.count++;
        return true;
      }
      if (s0 === k0 && slots[o + 1] === k1 && slots[o + 2] === k2 && slots[o + 3] === k3) return false;
    }
  }

  private makeKey(id: string): void {
    const bytes = this.keyBytes;
    if (id.length <= VERBATIM_MAX && isAscii(id)) {
      this.key.fill(0);
      bytes[0] = id.length;
      for (let i = 0; i < id.length; i++) bytes[i + 1] = id.charCodeAt(i);
      return;
    }
    // UTF-8 is one-to-one only for well-formed strings: a lone surrogate is hashed as UTF-16.
    const wellFormed = id.isWellFormed();
    const digest = hash('sha256', wellFormed ? id : Buffer.from(id, 'utf16le'), 'buffer');
    bytes[0] = wellFormed ? DIGEST : DIGEST_UTF16;
    bytes.set(digest.subarray(0, VERBATIM_MAX), 1);
  }

  private grow(): void {
    const old = this.slots;
    const capacity = (this.mask + 1) * 2;
    const slots = new Uint32Array(capacity * WORDS);
    const mask = capacity - 1;
    for (let o = 0; o < old.length; o += WORDS) {
      const k0 = old[o];
      if (k0 === 0) continue;
      const k1 = old[o + 1];
      const k2 = old[o + 2];
      const k3 = old[o + 3];
      let i = slotOf(k0, k1, k2, k3, mask);
      while (slots[i * WORDS] !== 0) i = (i + 1) & mask;
      const n = i * WORDS;
      slots[n] = k0;
      slots[n + 1] = k1;
      slots[n + 2] = k2;
      slots[n + 3] = k3;
    }
    this.slots = slots;
    this.mask = mask;
  }
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** Where a key's probe starts: its words mixed (murmur3's finalizer), so similar ids spread. */
function slotOf(k0: number, k1: number, k2: number, k3: number, mask: number): number {
  let h = Math.imul(k0, 0xcc9e2d51) ^ k1;
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) ^ k2;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) ^ k3;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h & mask;
}
