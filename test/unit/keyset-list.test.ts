import { describe, expect, it } from '@jest/globals';
import { keysetList } from '../../src/db/keyset-list.ts';

describe('keysetList', () => {
  const base = { name: 'list-x', table: 'x', columns: 'id', live: 'deleted_at IS NULL', userId: 7, limit: 21 };

  it('names each form apart, so each is a prepared statement of its own with its own plan', () => {
    const names = [
      keysetList({ ...base, filter: null, after: null }),
      keysetList({ ...base, filter: null, after: 'x_1' }),
      keysetList({ ...base, filter: null, after: 'x_1', order: 'asc' }),
      keysetList({ ...base, filter: { column: 'status', value: 'failed' }, after: null }),
      keysetList({ ...base, filter: { column: 'status', value: 'expired' }, after: null }),
      keysetList({ ...base, filter: { column: 'status', value: 'expired' }, after: 'x_1' }),
    ].map((q) => q.name);
    expect(new Set(names).size).toBe(names.length);
    // The same form twice is the same statement, text and all.
    expect(keysetList({ ...base, filter: null, after: 'x_2' })).toEqual({
      ...keysetList({ ...base, filter: null, after: 'x_1' }),
      values: [7, 21, 'x_2'],
    });
  });

  it('writes the filter value into the statement and the cursor into its parameters', () => {
    const q = keysetList({ ...base, filter: { column: 'status', value: 'failed' }, after: 'x_1', order: 'asc' });
    expect(q.text).toContain("status = 'failed'");
    expect(q.text).toContain(
      '(created_at, id) > (SELECT created_at, id FROM x WHERE id = $3 AND user_id = $1 AND deleted_at IS NULL)',
    );
    expect(q.text).toMatch(/ORDER BY created_at ASC, id ASC LIMIT \$2$/);
    expect(q.values).toEqual([7, 21, 'x_1']);
  });

  it('refuses a filter value that is not a plain enum word', () => {
    for (const value of ["failed' OR '1'='1", 'Failed', '', 'a'.repeat(41)]) {
      expect(() => keysetList({ ...base, filter: { column: 'status', value }, after: null })).toThrow(
        /not a status value/,
      );
    }
  });
});
