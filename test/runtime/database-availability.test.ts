import http from 'node:http';
import net from 'node:net';
import { Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import express from 'express';
import pg from 'pg';
import { DatabaseAvailability, isDatabaseUnavailable } from '../../src/db/availability.ts';
import { createPool, DatabaseClient } from '../../src/db/pool.ts';
import { isTransient } from '../../src/errors/transient.ts';
import { errorHandler } from '../../src/http/middleware.ts';
import { setLogLevel } from '../../src/logger.ts';
import { call, expectEnvelope } from '../support/http.ts';
import { createTestDatabase } from '../support/service.ts';

type CodedError = Error & { code?: unknown };

/** What `promise` rejects with; a promise that resolves fails the test. */
async function rejection(promise: Promise<unknown>): Promise<CodedError> {
  try {
    await promise;
  } catch (err) {
    return err as CodedError;
  }
  throw new Error('expected a rejection');
}

/** A loopback port that nothing listens on (something did a moment ago). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** As the job queue records a failed job's error (serialize-error: own fields, message and stack). */
const serialized = (err: CodedError) => JSON.parse(JSON.stringify({ ...err, message: err.message, stack: err.stack }));

describe('what counts as a database outage', () => {
  let resetting: net.Server;
  let resetPort: number;
  let refusedPort: number;
  let databaseUrl: string;
  const resources: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    setLogLevel('silent');
    // Resets every connection as soon as the other side sends something (a startup message, a request).
    resetting = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', () => socket.resetAndDestroy());
    });
    await new Promise<void>((resolve) => resetting.listen(0, '127.0.0.1', resolve));
    resetPort = (resetting.address() as net.AddressInfo).port;
    refusedPort = await closedPort();
    databaseUrl = await createTestDatabase();
  });

  afterAll(async () => {
    for (const close of resources.reverse()) await close();
    await new Promise<void>((resolve) => resetting?.close(() => resolve()));
  });

  /** Cloud Storage through the official client, at the resetting server; no retries, so it fails at once. */
  const storage = () =>
    new Storage({
      projectId: 'test-project',
      apiEndpoint: `http://127.0.0.1:${resetPort}`,
      retryOptions: { autoRetry: false },
    });

  it('a refused or reset connection of the pool or of a database client is an outage', async () => {
    const pool = createPool(`postgres://gateway@127.0.0.1:${refusedPort}/gateway`, 1);
    resources.push(() => pool.end());
    const refused = await rejection(pool.query('SELECT 1'));
    expect(refused.code).toBe('ECONNREFUSED');
    expect(isDatabaseUnavailable(refused)).toBe(true);

    const client = new DatabaseClient({ host: '127.0.0.1', port: resetPort, user: 'gateway', database: 'gateway' });
    const reset = await rejection(client.connect());
    expect(reset.code).toBe('ECONNRESET');
    expect(isDatabaseUnavailable(reset)).toBe(true);
  });

  it('the same errnos out of another socket are not', async () => {
    const refused = await rejection(
      new Promise<void>((resolve, reject) =>
        net.connect(refusedPort, '127.0.0.1', () => resolve()).once('error', reject),
      ),
    );
    expect(refused.code).toBe('ECONNREFUSED');
    expect(isDatabaseUnavailable(refused)).toBe(false);

    const reset = await rejection(
      new Promise((resolve, reject) => {
        const socket = net.connect(resetPort, '127.0.0.1', () => socket.write('hello'));
        socket.once('error', reject).once('close', resolve);
      }),
    );
    expect(reset.code).toBe('ECONNRESET');
    expect(isDatabaseUnavailable(reset)).toBe(false);
  });

  it('Postgres ending a connection is an outage; a query that fails is not', async () => {
    const victim = new DatabaseClient({ connectionString: databaseUrl });
    victim.on('error', () => {}); // the lost connection is also reported here; the queries below say it
    await victim.connect();
    const killer = new pg.Client({ connectionString: databaseUrl });
    await killer.connect();
    resources.push(
      () => killer.end(),
      () => victim.end().catch(() => {}),
    );

    const syntax = await rejection(victim.query('SELEC 1'));
    expect([syntax.code, isDatabaseUnavailable(syntax)]).toEqual(['42601', false]);
    const division = await rejection(victim.query('SELECT 1 / 0'));
    expect([division.code, isDatabaseUnavailable(division)]).toEqual(['22012', false]);

    const pid = (await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const sleeping = rejection(victim.query('SELECT pg_sleep(30)'));
    // Once the sleep has started, so that its query is the one told.
    for (;;) {
      const { rows } = await killer.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%'", [
        pid,
      ]);
      if (rows.length) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await killer.query('SELECT pg_terminate_backend($1)', [pid]);
    const terminated = await sleeping;
    expect(terminated).toBeInstanceOf(pg.DatabaseError);
    expect(terminated.code).toBe('57P01'); // admin_shutdown
    expect(isDatabaseUnavailable(terminated)).toBe(true);
    // Also in the form a dead job's error is kept in.
    expect(isDatabaseUnavailable(serialized(terminated))).toBe(true);
    expect(isDatabaseUnavailable(serialized(syntax))).toBe(false);

    const after = await rejection(victim.query('SELECT 1'));
    expect(after.message).toMatch(/not queryable|Connection terminated/);
    expect(isDatabaseUnavailable(after)).toBe(true);
  });

  it('a Cloud Storage connection reset is not an outage (but is still worth a retry)', async () => {
    const file = storage().bucket('some-bucket').file('some/object');
    const metadata = await rejection(file.getMetadata());
    expect(metadata.code).toBe('ECONNRESET');
    const read = await rejection(
      new Promise((resolve, reject) => file.createReadStream().once('error', reject).once('end', resolve).resume()),
    );
    expect(read.code).toBe('ECONNRESET');
    for (const err of [metadata, read, serialized(metadata)]) {
      expect(isDatabaseUnavailable(err)).toBe(false);
      expect(isTransient(err)).toBe(true);
    }
    const availability = new DatabaseAvailability();
    expect(availability.report(metadata, 'test')).toBe(false);
    expect(availability.down).toBe(false);
  });

  it('the error handler answers 503 for the database, 500 for the object store', async () => {
    const pool = createPool(`postgres://gateway@127.0.0.1:${refusedPort}/gateway`, 1);
    resources.push(() => pool.end());
    const app = express();
    app.get('/database', async () => {
      await pool.query('SELECT 1');
    });
    app.get('/storage', async () => {
      await storage().bucket('some-bucket').file('some/object').getMetadata();
    });
    const availability = new DatabaseAvailability();
    app.use(errorHandler(availability));
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    resources.push(() => new Promise((resolve) => server.close(resolve)));
    const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;

    const fromStorage = await call(`${url}/storage`);
    expect([fromStorage.status, expectEnvelope(fromStorage).code]).toEqual([500, 'internal_error']);
    expect(availability.down).toBe(false);

    const fromDatabase = await call(`${url}/database`);
    expect([fromDatabase.status, expectEnvelope(fromDatabase).code]).toEqual([503, 'service_unavailable']);
    expect(fromDatabase.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(availability.down).toBe(true);
  });
});
