import { describe, expect, it } from '@jest/globals';
import { migrate } from '../../src/db/migrate.ts';
import { createPool } from '../../src/db/pool.ts';
import { createTestDatabase } from '../support/service.ts';

describe('migrations', () => {
  it('are applied once when two processes start at the same time', async () => {
    const url = await createTestDatabase({ migrated: false });
    const a = createPool(url, 2);
    const b = createPool(url, 2);
    try {
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      expect([...ra, ...rb].sort()).toEqual(ra.length ? ra : rb);
      expect(ra.length === 0 || rb.length === 0).toBe(true);
      const { rows } = await a.query('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).toEqual(['0001']);
      const { rows: models } = await a.query('SELECT id FROM models ORDER BY id');
      expect(models.map((m) => m.id)).toContain('gemini-2.5-flash-image');
      expect(await migrate(a)).toEqual([]);
    } finally {
      await a.end();
      await b.end();
    }
  });
});
