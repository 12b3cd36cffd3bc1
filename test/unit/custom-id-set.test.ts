import { describe, expect, it } from '@jest/globals';
import { CustomIdSet } from '../../src/pipeline/custom-id-set.ts';

describe('CustomIdSet', () => {
  it('answers false for an id it holds, true for a new one', () => {
    const set = new CustomIdSet();
    expect(set.add('a')).toBe(true);
    expect(set.add('a')).toBe(false);
    expect(set.add('A')).toBe(true);
    expect(set.add('a ')).toBe(true);
    expect(set.size).toBe(3);
  });

  it('tells apart ids kept as bytes and ids kept as a digest, whatever their characters', () => {
    const ids = [
      'x',
      '123456789012345', // 15 characters: kept as its bytes
      '1234567890123456', // 16: a digest
      'a'.repeat(256),
      'a'.repeat(255),
      'é', // not ASCII: a digest
      'e\u0301', // the same letter, decomposed: another id
      '\ud83d\ude00', // an emoji (a surrogate pair)
      '\ud83d', // a lone surrogate (a JSON escape can make one)
      '\ude00',
      '\ufffd', // what a lone surrogate would be as UTF-8
      '\u0000',
      '\u0000\u0000',
    ];
    const set = new CustomIdSet();
    for (const id of ids) expect(set.add(id)).toBe(true);
    for (const id of ids) expect(set.add(id)).toBe(false);
    expect(set.size).toBe(ids.length);
  });

  it('finds every duplicate among many ids while it grows', () => {
    const set = new CustomIdSet(16);
    const n = 200_000;
    const id = (i: number) => (i % 3 === 0 ? `request-${i}-${'x'.repeat(20)}` : `r${i}`);
    let added = 0;
    for (let i = 0; i < n; i++) if (set.add(id(i))) added++;
    expect(added).toBe(n);
    let duplicates = 0;
    for (let i = 0; i < n; i += 7) if (!set.add(id(i))) duplicates++;
    expect(duplicates).toBe(Math.ceil(n / 7));
    expect(set.size).toBe(n);
    // 16 bytes a slot, at most 3/4 full.
    expect(set.byteLength).toBeLessThanOrEqual(Math.ceil(n / 0.75) * 2 * 16);
  });
});
