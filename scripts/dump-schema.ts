/**
 * Writes sql/schema.sql: the schema the migrations produce.
 *
 *   npm run db:schema
 *
 * Starts an embedded Postgres in a temporary directory, migrates a fresh database, dumps its
 * public schema (src/db/schema-dump.ts), then stops the server and removes the directory.
 * Run it after adding a migration and commit the result; test/runtime/schema.test.ts fails
 * while the file and the migrations disagree.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ensureDatabase, startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { createPool } from '../src/db/pool.ts';
import { dumpSchema, SCHEMA_FILE } from '../src/db/schema-dump.ts';
import { setLogLevel } from '../src/logger.ts';

setLogLevel('warn');
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ibg-schema-'));
try {
  const server = await startEmbeddedPostgres(path.join(dir, 'pg'));
  try {
    await ensureDatabase(server.connectionString(), 'schema');
    const pool = createPool(server.connectionString('schema'), 1);
    try {
      await migrate(pool);
      const schema = await dumpSchema(pool);
      const previous = await fs.readFile(SCHEMA_FILE, 'utf8').catch(() => null);
      await fs.writeFile(SCHEMA_FILE, schema);
      const what = previous === schema ? 'unchanged' : previous === null ? 'created' : 'updated';
      process.stdout.write(`${path.relative(process.cwd(), SCHEMA_FILE)} ${what}\n`);
    } finally {
      await pool.end();
    }
  } finally {
    await server.stop();
  }
} finally {
  await fs.rm(dir, { recursive: true, force: true });
}
