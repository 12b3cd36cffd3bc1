import { EventEmitter } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Request, Response } from 'express';
import pg from 'pg';
import { listUserBatches } from '../../src/batches/batch-queries.ts';
import { CHANNELS, NotificationListener, NotifiedCache } from '../../src/db/notifications.ts';
import type { Db } from '../../src/db/pool.ts';
import { listUserFiles } from '../../src/files/file-queries.ts';
import { ReadCache, type ReadResult } from '../../src/http/read-cache.ts';
import { listUserImageJobs } from '../../src/images/image-job-queries.ts';
import { eventually, uploadBatch, waitForBatch } from '../support/batches.ts';
import { call, imageLine } from '../support/http.ts';
import { createTestDatabase, startTestService, type TestService } from '../support/service.ts';

/**
 * The read path stays one index seek per list form however long a user's history (see
 * sql/0005_read_path_indexes.sql), and the per-process caches that spare authentication and the
 * model catalog a query never outlive a change made in another process by more than 1 s.
 */

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  'Actual Rows': number;
  'Actual Loops': number;
  'Rows Removed by Filter'?: number;
  'Rows Removed by Index Recheck'?: number;
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/**
 * A Db that EXPLAIN ANALYZEs the query it is given (as sent, with its parameters) instead of
 * running it. A named (prepared) statement is explained with its generic plan, the one Postgres
 * settles on after a few runs: planned without the values, it must seek by index all the same.
 */
function explaining(client: pg.Client, plans: PlanNode[]): Db {
  return {
    query: (async (query: string | pg.QueryConfig, params?: unknown[]) => {
      const {
        text,
        values = [],
        name,
      } = typeof query === 'string' ? { text: query, values: params, name: undefined } : query;
      let plan: PlanNode;
      if (name) {
        const literals = values.map((v) => (typeof v === 'number' ? String(v) : client.escapeLiteral(String(v))));
        await client.query(`SET plan_cache_mode = force_generic_plan; PREPARE explained AS ${text}`);
        const { rows } = await client.query(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE explained(${literals.join(', ')})`);
        await client.query('DEALLOCATE explained; RESET plan_cache_mode');
        plan = rows[0]['QUERY PLAN'][0].Plan;
        expect(JSON.stringify(plan)).toContain('$1'); // generic: planned with the values as parameters
      } else {
        const { rows } = await client.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${text}`, values);
        plan = rows[0]['QUERY PLAN'][0].Plan;
      }
      plans.push(plan);
      return { rows: [] };
    }) as unknown as Db['query'],
  };
}

/** What a query did on `table`: its scan nodes, and how many rows they read (kept or filtered out). */
function onTable(plan: PlanNode, table: string) {
  const scans = nodes(plan).filter((n) => n['Relation Name'] === table);
  const read = scans.reduce(
    (sum, n) =>
      sum +
      n['Actual Rows'] * n['Actual Loops'] +
      (n['Rows Removed by Filter'] ?? 0) +
      (n['Rows Removed by Index Recheck'] ?? 0),
    0,
  );
  return { scans, read, indexes: scans.map((n) => n['Index Name'] ?? n['Node Type']) };
}

/** A batch's copy of its model, as every charged batch has: the width of a real row. */
const SNAPSHOT = {
  id: 'gemini-2.5-flash-image',
  publisherModel: 'publishers/google/models/gemini-2.5-flash-image',
  aspectRatios: ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'],
  imageSizes: ['1K'],
  defaultImageSize: '1K',
  maxPromptChars: 32000,
  maxReferenceImages: 3,
  unitPrices: { '1K': 5000, '2K': 5000, '4K': 12500 },
  batchRatio: 0.5,
  enabled: true,
};

describe('list queries at a few thousand rows per user', () => {
  const ROWS = 3000;
  let client: pg.Client;
  let halfway: { batch: string; file: string; job: string };

  beforeAll(async () => {
    client = new pg.Client({ connectionString: await createTestDatabase() });
    await client.connect();
    await client.query("INSERT INTO users (id, name) VALUES (1, 'long history'), (2, 'neighbour')");
    // User 1: many batches, none failed. User 2: as many, all failed, so that `failed` is common
    // in the table's statistics while user 1 has none (the case a table-wide estimate gets wrong).
    await client.query(
      `INSERT INTO files (id, user_id, purpose, filename, bytes, mime_type, object_key, created_at)
       SELECT 'file_' || u || '_' || g, u, 'image_batch', 'in.jsonl', 100, 'application/jsonl', 'k',
              now() - make_interval(secs => g * 60)
         FROM generate_series(1, $1::int) g, generate_series(1, 2) u`,
      [ROWS],
    );
    await client.query(
      `INSERT INTO batches (id, user_id, status, input_file_id, created_at, expires_at, metadata, model_snapshot)
       SELECT 'batch_' || u || '_' || g, u,
              CASE WHEN u = 2 THEN 'failed' WHEN g % 25 = 0 THEN 'expired' WHEN g % 10 = 0 THEN 'cancelled' ELSE 'completed' END,
              'file_' || u || '_' || g, now() - make_interval(secs => (g / 2) * 60), now(), '{"project": "x"}', $2::jsonb
         FROM generate_series(1, $1::int) g, generate_series(1, 2) u`,
      [ROWS, JSON.stringify(SNAPSHOT)],
    );
    await client.query(
      `INSERT INTO image_jobs (id, user_id, mode, source, operation, model, request, n, size_tier, unit_price,
                               response_format, status, pre_deducted, created_at, expires_at)
       SELECT 'img_' || u || '_' || g, u, 'async', 'openai', 'generation', 'gemini-2.5-flash-image', '{}', 1, '1K', 5000,
              'url', CASE WHEN u = 2 THEN 'failed' ELSE 'succeeded' END, 5000, now() - make_interval(secs => g), now()
         FROM generate_series(1, $1::int) g, generate_series(1, 2) u`,
      [ROWS],
    );
    await client.query('ANALYZE');
    const mid = async (sql: string) => (await client.query<{ id: string }>(sql, [ROWS / 2])).rows[0].id;
    halfway = {
      batch: await mid('SELECT id FROM batches WHERE user_id = 1 ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1'),
      file: await mid('SELECT id FROM files WHERE user_id = 1 ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1'),
      job: await mid('SELECT id FROM image_jobs WHERE user_id = 1 ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1'),
    };
  });

  afterAll(async () => {
    await client?.end();
  });

  /** The page query's plan: no Seq Scan, the intended index, and no more rows read than the page needs. */
  async function expectSeek(
    table: string,
    run: (db: Db) => Promise<unknown>,
    opts: { limit: number; indexes: string[]; cursor?: boolean },
  ) {
    const plans: PlanNode[] = [];
    await run(explaining(client, plans));
    const { scans, read, indexes } = onTable(plans[0], table);
    expect(scans.map((n) => n['Node Type'])).not.toContain('Seq Scan');
    const page = indexes.filter((i) => !i.endsWith('_pkey'));
    expect(page).toHaveLength(1);
    expect(opts.indexes).toContain(page[0]);
    // limit + 1 rows (whether more follow), a few filtered out at most, and the cursor's row.
    expect(read).toBeLessThanOrEqual(2 * (opts.limit + 1) + 1);
    if (opts.cursor) {
      const page = scans.find((n) => opts.indexes.includes(n['Index Name'] ?? ''))!;
      // The cursor is part of the seek, not a filter applied after it.
      expect(page['Index Cond']).toMatch(/ROW\(created_at, id\) [<>] ROW\(/);
      expect(indexes).toContain(`${table}_pkey`);
    }
    return read;
  }

  const batches = (opts: { limit: number; after?: string; status?: string }) => (db: Db) =>
    listUserBatches(db, 1, {
      limit: opts.limit + 1,
      after: opts.after ?? null,
      status: (opts.status ?? null) as never,
    });

  it('batches: first page, deep cursor, status filters', async () => {
    await expectSeek('batches', batches({ limit: 20 }), { limit: 20, indexes: ['batches_user_list'] });
    await expectSeek('batches', batches({ limit: 100, after: halfway.batch }), {
      limit: 100,
      indexes: ['batches_user_list'],
      cursor: true,
    });
    // None of user 1's batches failed, though half the table did: still one seek, no scan of the history.
    await expectSeek('batches', batches({ limit: 20, status: 'failed' }), {
      limit: 20,
      indexes: ['batches_user_status_list'],
    });
    await expectSeek('batches', batches({ limit: 20, status: 'expired' }), {
      limit: 20,
      indexes: ['batches_user_status_list'],
    });
    await expectSeek('batches', batches({ limit: 20, status: 'expired', after: halfway.batch }), {
      limit: 20,
      indexes: ['batches_user_status_list'],
      cursor: true,
    });
    // Most of the user's batches: either index reads about a page.
    await expectSeek('batches', batches({ limit: 20, status: 'completed' }), {
      limit: 20,
      indexes: ['batches_user_list', 'batches_user_status_list'],
    });
  });

  it('files: first page, both orders after a cursor, a purpose the user has none of', async () => {
    const files = (opts: { after?: string; purpose?: string; order?: 'asc' | 'desc' }) => (db: Db) =>
      listUserFiles(db, 1, {
        limit: 21,
        after: opts.after ?? null,
        purpose: (opts.purpose ?? null) as never,
        order: opts.order ?? 'desc',
      });
    await expectSeek('files', files({}), { limit: 20, indexes: ['files_user_list'] });
    for (const order of ['asc', 'desc'] as const) {
      await expectSeek('files', files({ after: halfway.file, order }), {
        limit: 20,
        indexes: ['files_user_list'],
        cursor: true,
      });
    }
    await expectSeek('files', files({ purpose: 'vision' }), { limit: 20, indexes: ['files_user_purpose_list'] });
  });

  it('image jobs: first page, cursor, a status the user has none of', async () => {
    const jobs = (opts: { after?: string; status?: string }) => (db: Db) =>
      listUserImageJobs(db, 1, { limit: 21, after: opts.after ?? null, status: (opts.status ?? null) as never });
    await expectSeek('image_jobs', jobs({}), { limit: 20, indexes: ['image_jobs_user_list'] });
    await expectSeek('image_jobs', jobs({ after: halfway.job }), {
      limit: 20,
      indexes: ['image_jobs_user_list'],
      cursor: true,
    });
    await expectSeek('image_jobs', jobs({ status: 'failed' }), { limit: 20, indexes: ['image_jobs_user_status_list'] });
  });
});

describe('the notified cache', () => {
  let databaseUrl: string;
  let admin: pg.Client;
  let listener: NotificationListener | null = null;

  beforeAll(async () => {
    databaseUrl = await createTestDatabase();
    admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
  });

  afterAll(async () => {
    await listener?.stop();
    await admin?.end();
  });

  it('drops a key when notified, long before its TTL, and starts empty after the listener reconnects', async () => {
    const errors: unknown[] = [];
    listener = new NotificationListener(databaseUrl, (err) => errors.push(err));
    await listener.start();
    expect(listener.listening).toBe(true);
    const cache = new NotifiedCache<number>({
      listener,
      channel: CHANNELS.apiKeyRevoked,
      clearOn: 'key',
      ttlMs: 60_000,
      maxEntries: 10,
    });
    let loads = 0;
    const get = (key: string) => cache.get(key, async () => ++loads);

    expect(await get('a')).toBe(1);
    expect(await get('a')).toBe(1);
    expect(await get('b')).toBe(2);
    expect(loads).toBe(2);

    // Another connection's notification: `a` is read again, `b` is still cached.
    await admin.query('SELECT pg_notify($1, $2)', [CHANNELS.apiKeyRevoked, 'a']);
    await eventually(async () => ((await get('a')) === 3 ? true : null), 2000);
    expect(await get('b')).toBe(2);
    // A notification sent by a transaction that rolls back is never delivered.
    await admin.query('BEGIN');
    await admin.query('SELECT pg_notify($1, $2)', [CHANNELS.apiKeyRevoked, 'b']);
    await admin.query('ROLLBACK');
    await admin.query('SELECT pg_notify($1, $2)', [CHANNELS.apiKeyRevoked, 'a']);
    await eventually(async () => ((await get('a')) === 4 ? true : null), 2000);
    expect(await get('b')).toBe(2);

    // The listener's connection is killed: until it is back nothing is served from the cache, and
    // once back the cache starts empty (whatever was notified meanwhile was not heard).
    const before = loads;
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ibg-notifications' AND datname = current_database()",
    );
    await eventually(async () => (listener!.listening ? null : true), 5000);
    expect(await get('b')).toBe(before + 1);
    await eventually(async () => (listener!.listening ? true : null), 10_000);
    expect(await get('b')).toBeGreaterThan(before + 1);
    const reread = loads;
    expect(await get('b')).toBe(reread);
    expect(errors.length).toBeGreaterThan(0);
  });
});

describe('the read cache', () => {
  let databaseUrl: string;
  let admin: pg.Client;
  let listener: NotificationListener;

  beforeAll(async () => {
    databaseUrl = await createTestDatabase();
    admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    listener = new NotificationListener(databaseUrl, () => {});
    await listener.start();
  });

  afterAll(async () => {
    await listener?.stop();
    await admin?.end();
  });

  /** A cache on the real listener, what it sent, what it counted, and how often each key was loaded. */
  function harness(maxBytes = 1 << 20) {
    const results: ReadResult[] = [];
    const cache = new ReadCache({ listener, maxBytes, counted: (r) => results.push(r) });
    const loads = new Map<string, number>();
    const answer = async (user: number, key: string, load?: () => Promise<unknown>) => {
      let sent = '';
      const res = {
        set: () => res,
        send: (body: string) => {
          sent = body;
        },
      } as unknown as Response;
      await cache.answer(res, user, key, async () => {
        loads.set(`${user} ${key}`, (loads.get(`${user} ${key}`) ?? 0) + 1);
        return load ? load() : { user, key, n: loads.get(`${user} ${key}`) };
      });
      return JSON.parse(sent);
    };
    return { cache, results, loads, answer };
  }
  const changed = (users: string) => admin.query('SELECT pg_notify($1, $2)', [CHANNELS.batchesChanged, users]);

  it("keeps an answer until its user's batches change, and only that user's", async () => {
    const { answer, results } = harness();
    expect((await answer(1, 'a')).n).toBe(1);
    expect((await answer(1, 'a')).n).toBe(1);
    expect((await answer(2, 'a')).n).toBe(1);
    await changed('7,1');
    await eventually(async () => ((await answer(1, 'a')).n === 2 ? true : null), 2000);
    expect((await answer(2, 'a')).n).toBe(1);
    // '*': every user's answers.
    await changed('*');
    await eventually(async () => ((await answer(2, 'a')).n === 2 ? true : null), 2000);
    expect(results).toContain('hit');
    expect(results).toContain('miss');
  });

  it('does not keep a load that a change overtook, and shares a load between concurrent reads', async () => {
    const { answer, loads } = harness();
    let release = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow = answer(3, 'k', async () => {
      await gate;
      return { v: 'read before the change' };
    });
    const joined = answer(3, 'k');
    await changed('3');
    // The notice is heard while the load is still running.
    await new Promise((r) => setTimeout(r, 200));
    release();
    expect(await slow).toEqual({ v: 'read before the change' });
    expect(await joined).toEqual({ v: 'read before the change' });
    expect(loads.get('3 k')).toBe(1);
    // Not kept: the next read loads again.
    expect(await answer(3, 'k')).toEqual({ user: 3, key: 'k', n: 2 });
    expect(await answer(3, 'k')).toEqual({ user: 3, key: 'k', n: 2 });
  });

  it("keeps a user's answers out while a change of theirs runs here, and drops them when it ends", async () => {
    const { cache, answer, results } = harness();
    expect((await answer(4, 'k')).n).toBe(1);
    const request = (user: number) => ({ userId: user }) as unknown as Request;
    const res = Object.assign(new EventEmitter(), { destroyed: false }) as unknown as Response;
    let nexted = false;
    cache.writing(request(4), res, () => {
      nexted = true;
    });
    expect(nexted).toBe(true);
    expect((await answer(4, 'k')).n).toBe(2);
    expect((await answer(4, 'k')).n).toBe(3);
    expect(results.slice(-2)).toEqual(['bypass', 'bypass']);
    res.emit('close');
    expect((await answer(4, 'k')).n).toBe(4);
    expect((await answer(4, 'k')).n).toBe(4);
    // A request whose client left before it got here changes nothing and holds nothing.
    const gone = Object.assign(new EventEmitter(), { destroyed: true }) as unknown as Response;
    cache.writing(request(4), gone, () => {});
    expect((await answer(4, 'k')).n).toBe(4);
  });

  it('holds at most maxBytes, dropping the oldest answers first', async () => {
    // Each answer costs ~350 bytes with its key and overhead: 16 KiB holds about 46 of them.
    const { answer } = harness(16 * 1024);
    const padded = (i: number) => async () => ({ i, pad: 'x'.repeat(150) });
    for (let i = 0; i < 80; i++) await answer(5, `k${i}`, padded(i));
    const reloaded = async () => ({ reloaded: true });
    for (const i of [79, 60, 40]) expect((await answer(5, `k${i}`, reloaded)).i).toBe(i);
    for (const i of [0, 20]) expect(await answer(5, `k${i}`, reloaded)).toEqual({ reloaded: true });
  });
});

describe('two processes on one database', () => {
  let a: TestService;
  let b: TestService;

  beforeAll(async () => {
    a = await startTestService();
    b = await startTestService({ DATABASE_URL: a.databaseUrl, ROLE: 'api' });
  });

  afterAll(async () => {
    await b?.stop();
    await a?.stop();
  });

  it('a key revoked on one is refused by the other within 1 s', async () => {
    const user = await a.createUser();
    const list = (svc: TestService) => call(`${svc.url}/v1/image-batches?limit=1`, { key: user.apiKey });
    // Both have the key cached (each answered with it).
    for (const svc of [a, b, a, b]) expect((await list(svc)).status).toBe(200);

    const { body } = await a.admin('GET', `/admin/users/${user.id}`);
    const keyId = body.api_keys[0].id;
    const revoked = await a.admin('DELETE', `/admin/users/${user.id}/keys/${keyId}`);
    expect(revoked.status).toBe(200);
    const at = Date.now();
    // The process that revoked it refuses it at once; the other within a second.
    expect((await list(a)).status).toBe(401);
    await eventually(async () => ((await list(b)).status === 401 ? true : null), 1000);
    expect(Date.now() - at).toBeLessThan(1000);
    expect((await list(b)).body.error.code).toBe('invalid_api_key');
    // Another key of the same user still works on both.
    const fresh = (await a.admin('POST', `/admin/users/${user.id}/keys`)).body.api_key;
    for (const svc of [a, b]) expect((await call(`${svc.url}/v1/models`, { key: fresh })).status).toBe(200);
  });

  it('a model edit on one is what the other prices with within 1 s', async () => {
    const user = await a.createUser();
    const price = async (svc: TestService) => {
      const models = await call(`${svc.url}/v1/models`, { key: user.apiKey });
      return JSON.stringify(models.body.data.find((m: { id: string }) => m.id === 'gemini-2.5-flash-image'));
    };
    const before = await price(b);
    expect(await price(b)).toBe(before);
    const edited = await a.admin('PUT', '/admin/models/gemini-2.5-flash-image', { price_multiplier: 3 });
    expect(edited.status).toBe(200);
    const at = Date.now();
    expect(await price(a)).not.toBe(before);
    const after = await eventually(async () => {
      const now = await price(b);
      return now !== before ? now : null;
    }, 1000);
    expect(Date.now() - at).toBeLessThan(1000);
    expect(after).toBe(await price(a));
  });

  it('a batch and its pages are answered from memory until they change, on either process: at once on the one that changed it, within 1 s on the other', async () => {
    const user = await a.createUser(1_000_000);
    const up = await uploadBatch(a, user.apiKey, [imageLine('r1')]);
    expect(up.status).toBe(200);
    const id = up.body.id as string;
    await waitForBatch(a, user.apiKey, id);
    const get = async (svc: TestService) => (await call(`${svc.url}/v1/batches/${id}`, { key: user.apiKey })).body;
    const page = async (svc: TestService) =>
      (await call(`${svc.url}/v1/image-batches?limit=5`, { key: user.apiKey })).body.data;
    const note = async (svc: TestService) => [(await get(svc)).metadata?.note, (await page(svc))[0]?.metadata?.note];
    for (const svc of [a, b]) expect(await note(svc)).toEqual([undefined, undefined]);

    const db = new pg.Client({ connectionString: a.databaseUrl });
    await db.connect();
    /** A change with the triggers off for this session: nobody hears of it. */
    const unannounced = async (sql: string, values: unknown[]) => {
      await db.query("SET session_replication_role = 'replica'");
      await db.query(sql, values);
      await db.query('RESET session_replication_role');
    };
    try {
      // A change that announces nothing (triggers off for this session) is not seen: the answers come from memory.
      await unannounced(`UPDATE batches SET metadata = '{"note":"unannounced"}' WHERE id = $1`, [id]);
      for (const svc of [a, b]) expect(await note(svc)).toEqual([undefined, undefined]);
      const hits = await call(`${b.url}/metrics`);
      expect(Number(/^ibg_read_cache_reads_total\{result="hit"\} (\d+)$/m.exec(hits.text)?.[1])).toBeGreaterThanOrEqual(
        2,
      );

      // Any committed change of the user's batches, by any writer, is: within 1 s on both.
      await db.query(`UPDATE batches SET metadata = '{"note":"announced"}' WHERE id = $1`, [id]);
      const at = Date.now();
      for (const svc of [a, b]) {
        await eventually(async () => ((await note(svc)).join() === 'announced,announced' ? true : null), 1000);
      }
      expect(Date.now() - at).toBeLessThan(1000);
      // A rolled-back change announces nothing and changes nothing.
      await db.query('BEGIN');
      await db.query(`UPDATE batches SET metadata = '{"note":"rolled back"}' WHERE id = $1`, [id]);
      await db.query('ROLLBACK');
      for (const svc of [a, b]) expect(await note(svc)).toEqual(['announced', 'announced']);

      // A client's own change is what the process that made it answers next, without waiting for the notice.
      for (const svc of [a, b]) expect((await get(svc)).id).toBe(id);
      expect((await call(`${b.url}/v1/batches/${id}`, { method: 'DELETE', key: user.apiKey })).status).toBe(200);
      expect((await call(`${b.url}/v1/batches/${id}`, { key: user.apiKey })).status).toBe(404);
      expect(await page(b)).toEqual([]);
      await eventually(
        async () => ((await call(`${a.url}/v1/batches/${id}`, { key: user.apiKey })).status === 404 ? true : null),
        1000,
      );
      expect(await page(a)).toEqual([]);

      // While the listener is down nothing is answered from memory (a notice could be missed).
      const other = await uploadBatch(a, user.apiKey, [imageLine('r1')]);
      const otherId = other.body.id as string;
      await waitForBatch(a, user.apiKey, otherId);
      const otherNote = async () =>
        (await call(`${b.url}/v1/image-batches/${otherId}`, { key: user.apiKey })).body.metadata?.note;
      expect(await otherNote()).toBeUndefined();
      expect(await otherNote()).toBeUndefined();
      // b stops listening for good (as while its connection is being remade, but without the reconnection).
      await b.runtime.services.notifications!.stop();
      expect(b.runtime.services.notifications!.listening).toBe(false);
      await unannounced(`UPDATE batches SET metadata = '{"note":"while deaf"}' WHERE id = $1`, [otherId]);
      expect(await otherNote()).toBe('while deaf');
    } finally {
      await db.end();
    }
  });
});
