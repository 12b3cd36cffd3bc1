import { describe, expect, it, jest } from '@jest/globals';
import { transition } from '../../src/batches/batch-queries.ts';
import { windowLabel } from '../../src/batches/batch-service.ts';
import {
  BATCH_STATUSES,
  type BatchStatus,
  canTransition,
  FINISHED,
  isBatchStatus,
  isLive,
  TRANSITIONS,
} from '../../src/batches/batch-states.ts';
import { mulDecimalCeil, toScaled } from '../../src/billing/model-catalog.ts';
import { batchPrice } from '../../src/billing/pricing.ts';
import { jsonb, storable } from '../../src/db/pool.ts';
import { parseRange } from '../../src/files/byte-range.ts';
import { hasVisibleCharacter } from '../../src/vertex/request-rules.ts';

/** Small rules that many paths rely on, tested on their own: money, ranges, states, labels, text. */

const model = (unitPrices: Record<string, number>, batchRatio: number) => ({ unitPrices, batchRatio });

describe('batch price', () => {
  it('rounds up once for the whole batch, not once per image', () => {
    // 3 × 3333 × 0.5 = 4999.5 → 5000; per image it would be 3 × ceil(1666.5) = 5001.
    expect(batchPrice(model({ '1K': 3333 }, 0.5), { '1K': 3 })).toBe(5000);
    expect(batchPrice(model({ '1K': 3333 }, 0.5), { '1K': 1 })).toBe(1667);
  });

  it('is exact with ratios like 0.3333, 0.55 and 1', () => {
    expect(batchPrice(model({ '1K': 10000 }, 0.3333), { '1K': 3 })).toBe(9999);
    // 3 × 0.3333 = 0.9999 → 1 (rounded up, never down to 0).
    expect(batchPrice(model({ '1K': 1 }, 0.3333), { '1K': 3 })).toBe(1);
    // In floating point 100 × 0.55 = 55.00000000000001, which Math.ceil would make 56.
    expect(batchPrice(model({ '1K': 100 }, 0.55), { '1K': 1 })).toBe(55);
    expect(batchPrice(model({ '1K': 12500 }, 0.55), { '1K': 1 })).toBe(6875);
    expect(batchPrice(model({ '1K': 1234 }, 1), { '1K': 7 })).toBe(8638);
  });

  it('is exact for big batches', () => {
    // 200,000 images of a 4K tier priced 12,500 × multiplier 2, at ratio 0.5.
    const unit = mulDecimalCeil(12_500, '2');
    expect(unit).toBe(25_000);
    expect(batchPrice(model({ '4K': unit }, 0.5), { '4K': 200_000 })).toBe(2_500_000_000);
    expect(batchPrice(model({ '4K': unit }, 0.3333), { '4K': 200_000 })).toBe(1_666_500_000);
    expect(batchPrice(model({ '4K': unit }, 0.55), { '4K': 200_001 })).toBe(2_750_013_750);
  });

  it('adds mixed tiers before rounding', () => {
    const m = model({ '1K': 5000, '2K': 5000, '4K': 12500 }, 0.5);
    expect(batchPrice(m, { '1K': 3, '4K': 2 })).toBe(20_000);
    // (1 × 3333 + 1 × 3333) × 0.5 = 3333, where per tier it would be 2 × 1667.
    expect(batchPrice(model({ '1K': 3333, '2K': 3333 }, 0.5), { '1K': 1, '2K': 1 })).toBe(3333);
  });

  it('throws for a tier without a price', () => {
    expect(() => batchPrice(model({ '1K': 5000 }, 0.5), { '1K': 1, '8K': 1 })).toThrow('no price for size 8K');
  });

  it('is 0 for no images', () => {
    expect(batchPrice(model({ '1K': 5000 }, 0.5), {})).toBe(0);
    expect(batchPrice(model({ '1K': 5000 }, 0.5), { '1K': 0 })).toBe(0);
  });
});

describe('decimals', () => {
  it('toScaled reads a decimal as an integer over 10^4', () => {
    expect(toScaled('0.5')).toEqual([5000n, 10000n]);
    expect(toScaled('0.3333')).toEqual([3333n, 10000n]);
    expect(toScaled('2')).toEqual([20000n, 10000n]);
    expect(toScaled('1.25')).toEqual([12500n, 10000n]);
    expect(toScaled(1)).toEqual([10000n, 10000n]);
    expect(toScaled(0.1 + 0.2)).toEqual([3000n, 10000n]);
  });

  it('mulDecimalCeil multiplies exactly and rounds up', () => {
    expect(mulDecimalCeil(5000, '1.1')).toBe(5500);
    expect(mulDecimalCeil(3333, '0.5')).toBe(1667);
    expect(mulDecimalCeil(100, 0.55)).toBe(55);
    expect(mulDecimalCeil(3, '0.3333')).toBe(1);
    expect(mulDecimalCeil(0, '0.5')).toBe(0);
    expect(mulDecimalCeil(12_500, 1)).toBe(12_500);
  });
});

describe('parseRange', () => {
  it('sends the whole body without a header, for an empty file, for several ranges or a broken header', () => {
    expect(parseRange(undefined, 10)).toBeNull();
    expect(parseRange('', 10)).toBeNull();
    expect(parseRange('bytes=0-0', 0)).toBeNull();
    expect(parseRange('bytes=-0', 0)).toBeNull();
    expect(parseRange('bytes=0-1,3-4', 10)).toBeNull();
    for (const broken of ['bytes=', 'bytes=-', 'bytes=a-b', 'bytes=0--1', 'items=0-1', 'bytes 0-1', 'bytes=1.5-2']) {
      expect(parseRange(broken, 10)).toBeNull();
    }
  });

  it('reads a single range', () => {
    expect(parseRange('bytes=0-0', 10)).toEqual({ start: 0, end: 0 });
    expect(parseRange('bytes=2-4', 10)).toEqual({ start: 2, end: 4 });
    expect(parseRange('bytes=5-', 10)).toEqual({ start: 5, end: 9 });
    expect(parseRange(' bytes=1-2 ', 10)).toEqual({ start: 1, end: 2 });
  });

  it('reads a suffix range, the whole body when it is longer than the file', () => {
    expect(parseRange('bytes=-3', 10)).toEqual({ start: 7, end: 9 });
    expect(parseRange('bytes=-10', 10)).toEqual({ start: 0, end: 9 });
    expect(parseRange('bytes=-20', 10)).toEqual({ start: 0, end: 9 });
  });

  it('clamps an end beyond the size', () => {
    expect(parseRange('bytes=0-99', 10)).toEqual({ start: 0, end: 9 });
    expect(parseRange('bytes=9-1000', 10)).toEqual({ start: 9, end: 9 });
  });

  it('is unsatisfiable from a start at or beyond the size, or for an empty suffix', () => {
    expect(parseRange('bytes=10-', 10)).toBe('unsatisfiable');
    expect(parseRange('bytes=10-20', 10)).toBe('unsatisfiable');
    expect(parseRange('bytes=50-', 10)).toBe('unsatisfiable');
    expect(parseRange('bytes=-0', 10)).toBe('unsatisfiable');
  });

  it('ignores a range whose end is before its start', () => {
    expect(parseRange('bytes=5-2', 10)).toBeNull();
    expect(parseRange('bytes=20-2', 10)).toBeNull();
  });
});

describe('batch status rules', () => {
  const allowed = (from: BatchStatus) => [...TRANSITIONS[from]].sort();

  it('finished statuses have no way out', () => {
    expect([...FINISHED].sort()).toEqual(['cancelled', 'completed', 'expired', 'failed']);
    for (const done of FINISHED) {
      expect(TRANSITIONS[done]).toEqual([]);
      for (const to of BATCH_STATUSES) expect(canTransition(done, to)).toBe(false);
    }
  });

  it('validating starts, fails, is cancelled or expires, but is never completed or finalized directly', () => {
    expect(allowed('validating')).toEqual(['cancelled', 'expired', 'failed', 'in_progress']);
    expect(canTransition('validating', 'completed')).toBe(false);
    expect(canTransition('validating', 'finalizing')).toBe(false);
    expect(canTransition('validating', 'cancelling')).toBe(false);
  });

  it('in_progress, cancelling and finalizing go only where the table says', () => {
    expect(allowed('in_progress')).toEqual(['cancelling', 'failed', 'finalizing']);
    expect(canTransition('in_progress', 'completed')).toBe(false);
    expect(canTransition('in_progress', 'cancelled')).toBe(false);
    expect(allowed('cancelling')).toEqual(['failed', 'finalizing']);
    expect(canTransition('cancelling', 'cancelled')).toBe(false);
    expect(allowed('finalizing')).toEqual(['cancelled', 'completed', 'expired', 'failed']);
    expect(canTransition('finalizing', 'in_progress')).toBe(false);
  });

  it('no status moves to itself or back to validating', () => {
    for (const s of BATCH_STATUSES) {
      expect(canTransition(s, s)).toBe(false);
      expect(canTransition(s, 'validating')).toBe(false);
    }
  });

  it('every status is reachable from validating', () => {
    const seen = new Set<BatchStatus>(['validating']);
    const todo: BatchStatus[] = ['validating'];
    while (todo.length) {
      for (const next of TRANSITIONS[todo.pop()!]) {
        if (!seen.has(next)) {
          seen.add(next);
          todo.push(next);
        }
      }
    }
    expect([...seen].sort()).toEqual([...BATCH_STATUSES].sort());
  });

  it('isBatchStatus and isLive', () => {
    for (const s of BATCH_STATUSES) expect(isBatchStatus(s)).toBe(true);
    for (const s of ['', 'done', 'IN_PROGRESS', 'in progress', 'cancel']) expect(isBatchStatus(s)).toBe(false);
    expect(isLive({ status: 'in_progress', outcome: null })).toBe(true);
    expect(isLive({ status: 'in_progress', outcome: 'expired' })).toBe(false);
    expect(isLive({ status: 'in_progress', outcome: 'cancelled' })).toBe(false);
    expect(isLive({ status: 'validating', outcome: null })).toBe(false);
    expect(isLive({ status: 'finalizing', outcome: null })).toBe(false);
  });

  it('transition() refuses an illegal move before touching the database', async () => {
    const query = jest.fn(async () => ({ rows: [] as any[] }));
    const db = { query } as any;
    await expect(transition(db, 'batch_x', ['completed'], 'in_progress')).rejects.toThrow(
      'a batch cannot go from completed to in_progress',
    );
    await expect(transition(db, 'batch_x', ['in_progress', 'cancelled'], 'failed')).rejects.toThrow(
      'a batch cannot go from cancelled to failed',
    );
    await expect(transition(db, 'batch_x', ['validating'], 'completed')).rejects.toThrow(/validating to completed/);
    expect(query).not.toHaveBeenCalled();

    // The same fake sees a legal move, so the refusals above were not for another reason.
    await expect(transition(db, 'batch_x', ['in_progress', 'cancelling'], 'finalizing')).resolves.toBeNull();
    expect(query).toHaveBeenCalledTimes(1);
    expect((query.mock.calls[0] as unknown[])[1]).toEqual(['batch_x', ['in_progress', 'cancelling'], 'finalizing']);
  });
});

describe('windowLabel', () => {
  it('writes whole hours, else whole minutes, else seconds', () => {
    expect(windowLabel(24 * 3_600_000)).toBe('24h');
    expect(windowLabel(90 * 60_000)).toBe('90m');
    expect(windowLabel(45_000)).toBe('45s');
    expect(windowLabel(60 * 60_000)).toBe('1h');
    expect(windowLabel(1500)).toBe('2s');
  });
});

describe('hasVisibleCharacter', () => {
  it('is false for text that renders as nothing', () => {
    for (const blank of ['', ' ', '   \t\n', '\u200B', '\u2060', '\uFEFF', '\u00A0', '\u3000', '\u2800', '\u3164']) {
      expect([blank, hasVisibleCharacter(blank)]).toEqual([blank, false]);
    }
    expect(hasVisibleCharacter(' \u200B\u2060\uFEFF\u00A0\u3000\u2800\u3164 ')).toBe(false);
  });

  it('is true for text with something to see', () => {
    for (const text of ['a', '猫', '🐱', 'a\u200B', '\u200Ba', ' . ']) {
      expect([text, hasVisibleCharacter(text)]).toEqual([text, true]);
    }
  });
});

describe('storable and jsonb', () => {
  it('replaces NUL in strings with U+FFFD', () => {
    expect(storable('a\u0000b\u0000')).toBe('a\uFFFDb\uFFFD');
    expect(storable('plain')).toBe('plain');
    expect(storable('')).toBe('');
  });

  it('makes arrays storable element by element', () => {
    expect(storable(['a\u0000', 'b', 1, null, ['c\u0000']])).toEqual(['a\uFFFD', 'b', 1, null, ['c\uFFFD']]);
  });

  it('turns a plain object into JSON text with NUL in keys and values replaced', () => {
    const text = storable({ 'k\u0000ey': 'v\u0000', nested: { list: ['\u0000'] } });
    expect(typeof text).toBe('string');
    expect(text).toBe('{"k\\ufffdey":"v\\ufffd","nested":{"list":["\\ufffd"]}}');
    expect(JSON.parse(text as string)).toEqual({ 'k\uFFFDey': 'v\uFFFD', nested: { list: ['\uFFFD'] } });
  });

  it('leaves an escaped backslash followed by u0000 alone', () => {
    const value = { v: '\\u0000', '\\u0000': 1 };
    const text = storable(value) as string;
    expect(text).toBe(JSON.stringify(value));
    expect(text).toContain('\\\\u0000');
    expect(JSON.parse(text)).toEqual(value);
    // A backslash followed by a real NUL: the backslash stays, the NUL goes.
    expect(JSON.parse(storable({ v: '\\\u0000' }) as string)).toEqual({ v: '\\\uFFFD' });
    expect(JSON.parse(storable({ v: '\\\\\u0000' }) as string)).toEqual({ v: '\\\\\uFFFD' });
  });

  it('passes Dates, Buffers, numbers, null and values with toPostgres through', () => {
    const date = new Date();
    const buffer = Buffer.from([0, 1, 2]);
    const custom = { toPostgres: () => 'x\u0000' };
    expect(storable(date)).toBe(date);
    expect(storable(buffer)).toBe(buffer);
    expect(storable(custom)).toBe(custom);
    expect(storable(42)).toBe(42);
    expect(storable(null)).toBeNull();
    expect(storable(undefined)).toBeUndefined();
    expect(storable(true)).toBe(true);
  });

  it('jsonb() gives sanitized JSON text, also for arrays', () => {
    expect(jsonb(['a\u0000', { 'b\u0000': '\\u0000' }]).toPostgres()).toBe('["a\\ufffd",{"b\\ufffd":"\\\\u0000"}]');
    expect(jsonb({ a: 1 }).toPostgres()).toBe('{"a":1}');
    expect(jsonb('s\u0000').toPostgres()).toBe('"s\\ufffd"');
  });
});
