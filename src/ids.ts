import { randomFillSync } from 'node:crypto';

/** Random, URL-safe, prefixed ids: 24 base62 characters (~143 bits) after the prefix. */
const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Random bytes drawn a block at a time (each used once): a million-line batch makes a million ids. */
const pool = Buffer.alloc(4096);
let poolAt = pool.length;

export function randomToken(length = 24): string {
  let out = '';
  while (out.length < length) {
    if (poolAt === pool.length) {
      randomFillSync(pool);
      poolAt = 0;
    }
    const byte = pool[poolAt++];
    // 248 = 4 × 62: rejecting the top bytes keeps every character equally likely.
    if (byte < 248) out += alphabet[byte % 62];
  }
  return out;
}

export type IdPrefix = 'batch' | 'file' | 'shard' | 'batch_req' | 'wh' | 'evt' | 'whdel' | 'img' | 'req';

export const newId = (prefix: IdPrefix) => `${prefix}_${randomToken()}`;

/** Ids travel in URLs: reject anything that cannot be ours before touching the database. */
export function looksLikeId(prefix: IdPrefix, value: string): boolean {
  return value.startsWith(`${prefix}_`) && /^[A-Za-z0-9_]{1,100}$/.test(value);
}
