import { describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { migrate } from '../../src/db/migrate.ts';
import { createPool } from '../../src/db/pool.ts';
import { randomToken } from '../../src/ids.ts';
import { withDatabase } from '../support/global-setup.ts';

describe('migrations', () => {
  it('are applied once when two processes start at the same time', async () => {
    const adminUrl = process.env.IBG_TEST_ADMIN_URL!;
    const name = `ibg_mig_${randomToken(10).toLowerCase()}`;
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const a = createPool(withDatabase(adminUrl, name), 2);
    const b = createPool(withDatabase(adminUrl, name), 2);
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
