import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { PNG } from 'pngjs';
import { encodePng } from '../../src/emulator/png.ts';
import { eventually, ledger } from '../support/batches.ts';
import { type Answer, call, expectEnvelope, form, PNG_1x1 } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * Async image jobs (`?async=true`, `/v1/jobs`) and the task API over HTTP: the real service, its
 * Postgres, and the official Google client against the Vertex emulator's online prediction.
 */
let svc: TestService;
let db: pg.Pool;
let images: http.Server;
let imagesUrl: string;
const users: Array<{ id: number; apiKey: string }> = [];

const MODEL = 'gemini-2.5-flash-image';
const PRICE = 5000; // 1K, multiplier 1
const SLOW_MS = 2000;
const DAY_S = 86_400;
const OPEN = ['queued', 'running'];
const TEXT = Buffer.from('this is not an image\n');

beforeAll(async () => {
  svc = await startTestService({
    VERTEX_EMULATOR_ONLINE_MS: '50',
    VERTEX_EMULATOR_SLOW_MS: String(SLOW_MS),
    SWEEP_INTERVAL_MS: '500',
    FETCH_ALLOW_PRIVATE_URLS: 'true',
    FETCH_TIMEOUT_MS: '1s',
  });
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
  // Reference images a task gives by URL: a PNG, a 404 and something that is not an image.
  images = http.createServer((req, res) => {
    if (req.url === '/x.png') res.writeHead(200, { 'content-type': 'image/png' }).end(PNG_1x1);
    else if (req.url === '/text.png') res.writeHead(200, { 'content-type': 'image/png' }).end(TEXT);
    else if (req.url === '/hang.png') res.writeHead(200, { 'content-type': 'image/png' }).write(PNG_1x1.subarray(0, 8));
    else res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  });
  await new Promise<void>((resolve) => images.listen(0, '127.0.0.1', resolve));
  imagesUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}`;
});
afterAll(async () => {
  images?.closeAllConnections();
  await new Promise((resolve) => images?.close(resolve));
  await db?.end();
  await svc?.stop();
});

async function newUser(quota = 100_000) {
  const user = await svc.createUser(quota);
  users.push(user);
  return user;
}

const generate = (key: string, json: unknown, query = '?async=true') =>
  call(`${svc.url}/v1/images/generations${query}`, { method: 'POST', key, json });
const getJob = (key: string, id: string, suffix = '') => call(`${svc.url}/v1/jobs/${id}${suffix}`, { key });
const cancel = (key: string, id: string) => call(`${svc.url}/v1/jobs/${id}/cancel`, { method: 'POST', key });

/** Polls the job as a client would until `done` says so. */
async function waitJob(key: string, id: string, done: (j: any) => boolean, timeoutMs = 20_000): Promise<any> {
  let last: any;
  try {
    return await eventually(async () => {
      last = (await getJob(key, id)).body;
      return done(last) ? last : null;
    }, timeoutMs);
  } catch {
    throw new Error(`job ${id} did not reach the expected state; last: ${JSON.stringify(last)}`);
  }
}
const finished = (j: any) => !OPEN.includes(j.status);

/** The billing rows of one job, oldest first. */
async function jobLogs(id: string): Promise<Array<{ type: string; quota_delta: number; user_id: number }>> {
  return (await svc.admin('GET', `/admin/logs?image_job_id=${id}&limit=1000`)).body.data;
}

/** A signed link, fetched without any credential. */
async function fetchLink(url: string): Promise<{ status: number; type: string | null; data: Buffer }> {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type'), data: Buffer.from(await res.arrayBuffer()) };
}

function pngSize(data: Buffer): { width: number; height: number } {
  const png = PNG.sync.read(data);
  return { width: png.width, height: png.height };
}

const expiresOf = (link: string) => Number(new URL(link).searchParams.get('expires'));

describe('async generations (?async=true)', () => {
  it('answers 202 at once, charged, and the job ends succeeded with its images', async () => {
    const user = await newUser();
    const before = Math.floor(Date.now() / 1000);
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'a red cube', n: 2 });
    expect(a.status).toBe(202);
    expect(a.body).toMatchObject({
      object: 'image_job',
      status: 'queued',
      mode: 'async',
      operation: 'generation',
      model: MODEL,
      n: 2,
      image_count: 0,
      unsigned_urls: [],
      content_url: null,
      completed_at: null,
      error: null,
      polling_url: `${svc.url}/v1/jobs/${a.body.id}`,
      usage: { cost_credits: 2 * PRICE },
    });
    expect(a.body.id).toMatch(/^img_[A-Za-z0-9]+$/);
    expect(a.body.created_at).toBeGreaterThanOrEqual(before - 1);
    // IMAGE_JOB_TTL's default: one hour after creation.
    expect(a.body.expires_at - a.body.created_at).toBeGreaterThanOrEqual(3599);
    expect(a.body.expires_at - a.body.created_at).toBeLessThanOrEqual(3601);
    const id = a.body.id;

    // Persisted and charged before the answer.
    const { rows } = await db.query('SELECT status, pre_deducted::int AS p FROM image_jobs WHERE id = $1', [id]);
    expect(rows).toHaveLength(1);
    expect(rows[0].p).toBe(2 * PRICE);
    const charged = await ledger(svc, user.id);
    expect(charged.quota).toBe(100_000 - 2 * PRICE);
    expect((await jobLogs(id)).map((l) => [l.type, l.quota_delta])).toEqual([['pre_deduction', -2 * PRICE]]);

    const done = await waitJob(user.apiKey, id, finished);
    expect(done).toMatchObject({
      id,
      status: 'succeeded',
      image_count: 2,
      content_url: `${svc.url}/v1/jobs/${id}/content`,
      usage: { cost_credits: 2 * PRICE },
      billing: { pre_deducted: 2 * PRICE, settled: 2 * PRICE, refunded: 0 },
      error: null,
    });
    expect(done.completed_at).toBeGreaterThanOrEqual(done.created_at);
    expect(done.started_at).toBeGreaterThanOrEqual(done.created_at);
    expect(done.usage.completion_tokens).toBeGreaterThan(0);
    expect(done.unsigned_urls).toHaveLength(2);
    expect(new Set(done.unsigned_urls).size).toBe(2);
    const now = Date.now() / 1000;
    for (const link of done.unsigned_urls as string[]) {
      expect(Math.abs(expiresOf(link) - (now + 7 * DAY_S))).toBeLessThan(120);
      const img = await fetchLink(link);
      expect(img.status).toBe(200);
      expect(img.type).toBe('image/png');
      expect(pngSize(img.data)).toEqual({ width: 1024, height: 1024 });
    }
    // The quota charged is what usage says; nothing was refunded.
    const l = await ledger(svc, user.id);
    expect(100_000 - l.quota).toBe(done.usage.cost_credits);
    expect((await jobLogs(id)).map((x) => x.type)).toEqual(['pre_deduction']);

    // content: a 302 to a fresh signed link, per index.
    for (const index of ['', '?index=0', '?index=1']) {
      const res = await fetch(`${svc.url}/v1/jobs/${id}/content${index}`, {
        headers: { authorization: `Bearer ${user.apiKey}` },
        redirect: 'manual',
      });
      expect(res.status).toBe(302);
      expect(res.headers.get('cache-control')).toBe('no-store');
      const img = await fetchLink(res.headers.get('location')!);
      expect(img.status).toBe(200);
      expect(img.type).toBe('image/png');
      expect(pngSize(img.data).width).toBe(1024);
    }
    for (const bad of ['2', '-1', 'x', '1.5', '9999']) {
      const r = await getJob(user.apiKey, id, `/content?index=${bad}`);
      expect(r.status).toBe(400);
      expect(expectEnvelope(r)).toMatchObject({ code: 'invalid_index', param: 'index' });
    }
  });

  it('runs an edit with an uploaded image (multipart) as an async job', async () => {
    const user = await newUser();
    const a = await call(`${svc.url}/v1/images/edits?async=true`, {
      method: 'POST',
      key: user.apiKey,
      body: form([
        ['model', MODEL],
        ['prompt', 'make it blue'],
        ['size', '1536x1024'],
        ['image', { data: PNG_1x1, filename: 'ref.png', type: 'image/png' }],
      ]),
    });
    expect(a.status).toBe(202);
    expect(a.body).toMatchObject({ object: 'image_job', status: 'queued', operation: 'edit', n: 1 });
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - PRICE);
    const done = await waitJob(user.apiKey, a.body.id, finished);
    expect(done).toMatchObject({ status: 'succeeded', operation: 'edit', image_count: 1, error: null });
    const img = await fetchLink(done.unsigned_urls[0]);
    expect(img.type).toBe('image/png');
    expect(pngSize(img.data)).toEqual({ width: 1248, height: 832 });
    expect(done.usage.prompt_tokens).toBeGreaterThan(0);
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - PRICE);
  });

  it('ends failed with the error and a full refund when Vertex fails, content_blocked when blocked', async () => {
    const user = await newUser();
    const failed = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:fail]', n: 2 });
    const blocked = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:block]' });
    expect([failed.status, blocked.status]).toEqual([202, 202]);
    // Reserved at submission, as the answers say (the ledger may already show the first refund:
    // a failing job can end before the second submission is answered).
    expect([failed.body.billing.pre_deducted, blocked.body.billing.pre_deducted]).toEqual([2 * PRICE, PRICE]);

    const f = await waitJob(user.apiKey, failed.body.id, finished);
    expect(f).toMatchObject({
      status: 'failed',
      image_count: 0,
      unsigned_urls: [],
      content_url: null,
      usage: { cost_credits: 0 },
      billing: { pre_deducted: 2 * PRICE, settled: 0, refunded: 2 * PRICE },
      error: { code: 'upstream_error' },
    });
    expect(f.error.message).toMatch(/Vertex AI did not make the images/);
    expect(f.completed_at).not.toBeNull();
    const b = await waitJob(user.apiKey, blocked.body.id, finished);
    expect(b).toMatchObject({ status: 'failed', error: { code: 'content_blocked' }, usage: { cost_credits: 0 } });
    expect(b.error.message).toMatch(/blocked/);

    const noContent = await getJob(user.apiKey, failed.body.id, '/content');
    expect(noContent.status).toBe(400);
    expect(expectEnvelope(noContent).code).toBe('invalid_index');
    for (const job of [failed.body.id, blocked.body.id]) {
      expect((await jobLogs(job)).map((l) => l.type)).toEqual(['pre_deduction', 'difference']);
    }
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000);
    expect(l.sum).toBe(l.quota);
  });
});

describe('cancel', () => {
  it('cancels a slow job: nothing made, everything refunded; twice answers the same', async () => {
    const user = await newUser();
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:slow]', n: 2 });
    expect(a.status).toBe(202);
    await waitJob(user.apiKey, a.body.id, (j) => j.status === 'running');
    const c = await cancel(user.apiKey, a.body.id);
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({
      id: a.body.id,
      status: 'cancelled',
      image_count: 0,
      usage: { cost_credits: 0 },
      billing: { pre_deducted: 2 * PRICE, settled: 0, refunded: 2 * PRICE },
      error: null,
    });
    expect(c.body.completed_at).not.toBeNull();
    const again = await cancel(user.apiKey, a.body.id);
    expect(again.status).toBe(200);
    expect(again.body).toEqual(c.body);
    expect((await ledger(svc, user.id)).quota).toBe(100_000);

    // The calls still out at Vertex land after the cancel: they are dropped, not recorded or charged.
    await new Promise((r) => setTimeout(r, SLOW_MS + 500));
    const later = (await getJob(user.apiKey, a.body.id)).body;
    expect(later).toMatchObject({ status: 'cancelled', image_count: 0, unsigned_urls: [] });
    expect((await jobLogs(a.body.id)).map((l) => l.type)).toEqual(['pre_deduction', 'difference']);
    expect((await ledger(svc, user.id)).quota).toBe(100_000);
  });

  it('keeps the images made before a cancel charged and refunds the rest', async () => {
    const user = await newUser();
    // Four calls run at once: images 0-3 land after one slow call, image 4 a slow call later.
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:slow]', n: 5 });
    expect(a.status).toBe(202);
    const partial = await waitJob(user.apiKey, a.body.id, (j) => j.image_count >= 4 || finished(j));
    expect(partial).toMatchObject({ status: 'running', image_count: 4 });
    const c = await cancel(user.apiKey, a.body.id);
    expect(c.body).toMatchObject({
      status: 'cancelled',
      image_count: 4,
      usage: { cost_credits: 4 * PRICE },
      billing: { pre_deducted: 5 * PRICE, settled: 4 * PRICE, refunded: PRICE },
    });
    expect(c.body.unsigned_urls).toHaveLength(4);
    const img = await fetchLink(c.body.unsigned_urls[3]);
    expect(img.type).toBe('image/png');
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - 4 * PRICE);
    await new Promise((r) => setTimeout(r, SLOW_MS + 500));
    expect((await getJob(user.apiKey, a.body.id)).body).toMatchObject({ status: 'cancelled', image_count: 4 });
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - 4 * PRICE);
    // The late fifth image was not kept in storage either.
    const stored = await svc.runtime.services.store.list(`tenants/${user.id}/jobs/${a.body.id}/images/`);
    expect(stored.map((o) => o.key.split('/').at(-1)).sort()).toEqual(['0.png', '1.png', '2.png', '3.png']);
  });

  it('refuses to cancel a finished job or a sync request (409)', async () => {
    const user = await newUser();
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'a cube' });
    const done = await waitJob(user.apiKey, a.body.id, finished);
    expect(done.status).toBe('succeeded');
    const c = await cancel(user.apiKey, a.body.id);
    expect(c.status).toBe(409);
    expect(expectEnvelope(c)).toMatchObject({ code: 'job_not_cancellable', param: 'job_id' });
    expect((await getJob(user.apiKey, a.body.id)).body.status).toBe('succeeded');

    const sync = await generate(user.apiKey, { model: MODEL, prompt: 'a cube' }, '');
    expect(sync.status).toBe(200);
    const syncId = sync.headers.get('x-image-job-id')!;
    expect(syncId).toMatch(/^img_/);
    const record = await getJob(user.apiKey, syncId);
    // A b64_json sync request keeps no images: what it made is counted, nothing links to it.
    expect(record.body).toMatchObject({ mode: 'sync', status: 'succeeded', image_count: 1, unsigned_urls: [] });
    const s = await cancel(user.apiKey, syncId);
    expect(s.status).toBe(409);
    expect(expectEnvelope(s).code).toBe('job_not_cancellable');
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - 2 * PRICE);
  });
});

describe('GET /v1/jobs', () => {
  it('lists newest first with limit, after and status; other tenants see nothing of it', async () => {
    const user = await newUser();
    const ids: string[] = [];
    for (const prompt of ['one', 'two', 'three [emulate:fail]']) {
      const a = await generate(user.apiKey, { model: MODEL, prompt });
      expect(a.status).toBe(202);
      ids.push(a.body.id);
    }
    for (const id of ids) await waitJob(user.apiKey, id, finished);
    const newestFirst = [...ids].reverse();

    const all = await call(`${svc.url}/v1/jobs`, { key: user.apiKey });
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ object: 'list', has_more: false, first_id: ids[2], last_id: ids[0] });
    expect(all.body.data.map((j: any) => j.id)).toEqual(newestFirst);
    expect(all.body.data[0]).toMatchObject({ object: 'image_job', status: 'failed' });

    const first = await call(`${svc.url}/v1/jobs?limit=2`, { key: user.apiKey });
    expect(first.body.data.map((j: any) => j.id)).toEqual(newestFirst.slice(0, 2));
    expect(first.body.has_more).toBe(true);
    const next = await call(`${svc.url}/v1/jobs?limit=2&after=${first.body.last_id}`, { key: user.apiKey });
    expect(next.body.data.map((j: any) => j.id)).toEqual(newestFirst.slice(2));
    expect(next.body.has_more).toBe(false);

    const ok = await call(`${svc.url}/v1/jobs?status=succeeded`, { key: user.apiKey });
    expect(ok.body.data.map((j: any) => j.id)).toEqual([ids[1], ids[0]]);
    const failed = await call(`${svc.url}/v1/jobs?status=failed`, { key: user.apiKey });
    expect(failed.body.data.map((j: any) => j.id)).toEqual([ids[2]]);

    const bad: Array<[string, string, string]> = [
      ['?after=img_doesnotexist000000000000', 'invalid_cursor', 'after'],
      ['?after=nonsense', 'invalid_cursor', 'after'],
      ['?status=done', 'invalid_status', 'status'],
      ['?limit=0', 'invalid_limit', 'limit'],
      ['?limit=101', 'invalid_limit', 'limit'],
    ];
    for (const [query, code, param] of bad) {
      const r = await call(`${svc.url}/v1/jobs${query}`, { key: user.apiKey });
      expect([query, r.status]).toEqual([query, 400]);
      expect(expectEnvelope(r)).toMatchObject({ code, param });
    }

    // Another tenant: 404 for every route, nothing in their list, and a cursor of ours is not theirs.
    const other = await newUser();
    await generate(other.apiKey, { model: MODEL, prompt: 'mine' });
    const theirs = await call(`${svc.url}/v1/jobs`, { key: other.apiKey });
    expect(theirs.body.data).toHaveLength(1);
    expect(theirs.body.data.map((j: any) => j.id)).not.toContain(ids[0]);
    for (const r of [
      await getJob(other.apiKey, ids[0]),
      await getJob(other.apiKey, ids[0], '/content'),
      await cancel(other.apiKey, ids[0]),
    ]) {
      expect(r.status).toBe(404);
      expect(expectEnvelope(r)).toMatchObject({ code: 'job_not_found', param: 'job_id' });
    }
    const cursor = await call(`${svc.url}/v1/jobs?after=${ids[0]}`, { key: other.apiKey });
    expect(cursor.status).toBe(400);
    expect(expectEnvelope(cursor).code).toBe('invalid_cursor');
    const unknown = await getJob(user.apiKey, 'img_doesnotexist000000000000');
    expect(unknown.status).toBe(404);
    expect(expectEnvelope(unknown).code).toBe('job_not_found');
  });
});

describe('task API (/v1/aiart/openai/image)', () => {
  const submit = (key: string | undefined, json: unknown) =>
    call(`${svc.url}/v1/aiart/openai/image/submit`, { method: 'POST', key, json });
  const query = (key: string | undefined, json: unknown) =>
    call(`${svc.url}/v1/aiart/openai/image/query`, { method: 'POST', key, json });
  const dataUrl = `data:image/png;base64,${PNG_1x1.toString('base64')}`;

  /** Queries the task until it is no longer WAIT. */
  async function waitTask(key: string, jobId: string): Promise<any> {
    let last: Answer | undefined;
    try {
      return await eventually(async () => {
        last = await query(key, { job_id: jobId });
        expect(last.status).toBe(200);
        return last.body.status === 'WAIT' ? null : last.body;
      }, 20_000);
    } catch {
      throw new Error(`task ${jobId} did not finish; last: ${last?.text}`);
    }
  }

  /** Submits, checks the submit answer, and waits for the task to be DONE; the image's bytes and type. */
  async function runTask(key: string, body: Record<string, unknown>) {
    const a = await submit(key, body);
    expect([a.status, a.text]).toEqual([200, a.text]);
    expect(Object.keys(a.body).sort()).toEqual(['job_id', 'request_id']);
    expect(a.body.job_id).toMatch(/^img_/);
    expect(a.body.request_id).toMatch(/^req_/);
    const done = await waitTask(key, a.body.job_id);
    expect(done).toMatchObject({ status: 'DONE', data: [{ url: expect.any(String) }] });
    expect(done.data).toHaveLength(1);
    expect(typeof done.created).toBe('number');
    const img = await fetchLink(done.data[0].url);
    expect(img.status).toBe(200);
    return { jobId: a.body.job_id as string, ...img };
  }

  it('runs a prompt-only task to DONE with a link that needs no key', async () => {
    const user = await newUser();
    const t = await runTask(user.apiKey, { prompt: 'a lighthouse' });
    expect(t.type).toBe('image/png');
    expect(pngSize(t.data)).toEqual({ width: 1024, height: 1024 });
    // The task is an image job of its owner too.
    expect((await getJob(user.apiKey, t.jobId)).body).toMatchObject({ status: 'succeeded', operation: 'generation' });
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - PRICE);
  });

  it('takes images as an http URL, a data URL and a vision file id, and a mask', async () => {
    const user = await newUser();
    const up = await call(`${svc.url}/v1/image-files`, {
      method: 'POST',
      key: user.apiKey,
      body: form([
        ['purpose', 'vision'],
        ['file', { data: PNG_1x1, filename: 'ref.png', type: 'image/png' }],
      ]),
    });
    expect(up.status).toBe(200);
    const fileId = up.body.id as string;
    for (const body of [
      { prompt: 'make it red', images: [`${imagesUrl}/x.png`] },
      { prompt: 'make it red', images: [dataUrl] },
      { prompt: 'make it red', images: [fileId] },
      { images: [`${imagesUrl}/x.png`, '', fileId] },
      { prompt: 'only the sky', images: [dataUrl], mask: `${imagesUrl}/x.png` },
    ]) {
      const t = await runTask(user.apiKey, body);
      expect(t.type).toBe('image/png');
      const { rows } = await db.query('SELECT operation, inputs FROM image_jobs WHERE id = $1', [t.jobId]);
      expect(rows[0].operation).toBe('edit');
      const roles = (rows[0].inputs as Array<{ role: string }>).map((i) => i.role);
      expect(roles).toEqual([...body.images.filter(Boolean).map(() => 'image'), ...('mask' in body ? ['mask'] : [])]);
    }
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - 5 * PRICE);
  });

  it('answers WAIT while the task runs', async () => {
    const user = await newUser();
    const a = await submit(user.apiKey, { prompt: 'x [emulate:slow]' });
    expect(a.status).toBe(200);
    const wait = await query(user.apiKey, { job_id: a.body.job_id });
    expect([wait.status, Object.keys(wait.body).sort(), wait.body.status]).toEqual([
      200,
      ['created', 'status'],
      'WAIT',
    ]);
    expect(Math.abs(wait.body.created - Date.now() / 1000)).toBeLessThan(60);
    expect((await waitTask(user.apiKey, a.body.job_id)).status).toBe('DONE');
  });

  it('takes a data: URL image larger than the usual 256 KB body', async () => {
    const user = await newUser();
    // Noise does not compress: a PNG of about 400 KB, over half a megabyte as a data: URL.
    const side = 360;
    const rows = Array.from({ length: side }, () => Buffer.concat([Buffer.from([0]), randomBytes(side * 3)]));
    const big = encodePng(side, side, Buffer.concat(rows));
    expect(big.length).toBeGreaterThan(350_000);
    const t = await runTask(user.apiKey, {
      prompt: 'tidy it up',
      images: [`data:image/png;base64,${big.toString('base64')}`],
    });
    expect(t.type).toBe('image/png');
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - PRICE);
  });

  it('takes size, quality and background, and extra.image_config', async () => {
    const user = await newUser();
    const sized = await runTask(user.apiKey, {
      prompt: 'a wide field',
      size: '1536x1024',
      quality: 'high',
      background: 'opaque',
    });
    expect(pngSize(sized.data)).toEqual({ width: 1248, height: 832 });
    const configured = await runTask(user.apiKey, {
      prompt: 'a wider field',
      extra: { image_config: { aspect_ratio: '16:9', image_size: '1K' } },
    });
    expect(pngSize(configured.data)).toEqual({ width: 1344, height: 768 });
    expect((await ledger(svc, user.id)).quota).toBe(100_000 - 2 * PRICE);
  });

  it('keeps output_compression 0 with output_format jpeg', async () => {
    const user = await newUser();
    const t = await runTask(user.apiKey, { prompt: 'a field', output_format: 'jpeg', output_compression: 0 });
    expect(t.type).toBe('image/jpeg');
    expect(t.data.subarray(0, 3).equals(Buffer.from([0xff, 0xd8, 0xff]))).toBe(true);
    const { rows } = await db.query('SELECT request FROM image_jobs WHERE id = $1', [t.jobId]);
    expect(rows[0].request).toMatchObject({ output_format: 'jpeg', output_compression: 0 });
  });

  it('answers errors as {code, message, data: null}, charging nothing', async () => {
    const user = await newUser();
    const exact = async (a: Answer, status: number, code: string, message?: string) => {
      expect([a.status, Object.keys(a.body ?? {}).sort()]).toEqual([status, ['code', 'data', 'message']]);
      expect(a.body.code).toBe(code);
      expect(a.body.data).toBeNull();
      expect(typeof a.body.message).toBe('string');
      if (message !== undefined) expect(a.body.message).toBe(message);
    };
    const none = await submit(user.apiKey, {});
    expect(none.status).toBe(400);
    expect(none.text).toBe('{"code":"invalid_request","message":"prompt or images is required","data":null}');
    await exact(await submit(user.apiKey, { prompt: '  ', images: [''] }), 400, 'invalid_request');
    await exact(await query(user.apiKey, {}), 400, 'invalid_request', 'job_id is required');
    await exact(await query(user.apiKey, { job_id: '' }), 400, 'invalid_request', 'job_id is required');
    await exact(await query(user.apiKey, { job_id: 'img_doesnotexist000000000000' }), 404, 'job_not_found');
    await exact(await submit(user.apiKey, { prompt: 'two', n: 2 }), 400, 'invalid_value');
    await exact(await submit(user.apiKey, { prompt: 'x', colour: 'red' }), 400, 'unknown_parameter');
    await exact(await submit(undefined, { prompt: 'x' }), 401, 'missing_api_key');
    await exact(await submit('sk-not-a-key', { prompt: 'x' }), 401, 'invalid_api_key');
    await exact(await query(undefined, { job_id: 'img_x' }), 401, 'missing_api_key');
    // Not found, not an image, not answered within FETCH_TIMEOUT_MS, not an image either.
    for (const url of [
      `${imagesUrl}/missing.png`,
      `${imagesUrl}/text.png`,
      `${imagesUrl}/hang.png`,
      'data:image/png;base64,AAAA',
    ]) {
      const a = await submit(user.apiKey, { prompt: 'x', images: [url] });
      await exact(a, 400, 'invalid_image_url');
      expect(a.body.message).toContain(url.startsWith('data:') ? 'data:image/png;base64' : url);
    }
    const badMask = await submit(user.apiKey, { prompt: 'x', images: [dataUrl], mask: `${imagesUrl}/missing.png` });
    await exact(badMask, 400, 'invalid_image_url');
    await exact(
      await submit(user.apiKey, { prompt: 'x', images: ['file_doesnotexist00000000000'] }),
      404,
      'file_not_found',
    );

    // Refused before anything existed: no job, no charge, no stored reference.
    expect((await call(`${svc.url}/v1/jobs`, { key: user.apiKey })).body.data).toEqual([]);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000);
    expect(l.logs.map((x) => x.type)).toEqual(['topup']);
    expect(await svc.runtime.services.store.list(`tenants/${user.id}/`)).toEqual([]);

    // Another tenant's task is not found either.
    const other = await newUser();
    const theirs = await submit(other.apiKey, { prompt: 'theirs' });
    await exact(await query(user.apiKey, { job_id: theirs.body.job_id }), 404, 'job_not_found');
  });

  it('answers FAIL with error_message when the task fails, refunded', async () => {
    const user = await newUser();
    const a = await submit(user.apiKey, { prompt: 'x [emulate:fail]' });
    expect(a.status).toBe(200);
    const done = await waitTask(user.apiKey, a.body.job_id);
    expect(Object.keys(done).sort()).toEqual(['created', 'error_message', 'status']);
    expect(done.status).toBe('FAIL');
    expect(done.error_message).toMatch(/Vertex AI did not make the image/);
    expect((await ledger(svc, user.id)).quota).toBe(100_000);
  });
});

/** A second service on the defaults that guard image URLs, with a short job life and a small image cap. */
describe('expiry, and image URLs on the default guard', () => {
  let short: TestService;
  beforeAll(async () => {
    short = await startTestService({
      IMAGE_JOB_TTL: '2s',
      VERTEX_EMULATOR_ONLINE_MS: '50',
      VERTEX_EMULATOR_SLOW_MS: '30000',
      SWEEP_INTERVAL_MS: '300',
      VISION_MAX_BYTES: '4KiB',
    });
  });

  it('refuses private addresses, images over VISION_MAX_BYTES and bodies over its limit, charging nothing', async () => {
    const user = await short.createUser(100_000);
    const submit = (json: unknown) =>
      call(`${short.url}/v1/aiart/openai/image/submit`, { method: 'POST', key: user.apiKey, json });
    const refused = async (a: Answer, status: number, code: string) => {
      expect([a.status, a.body?.code, a.body?.data]).toEqual([status, code, null]);
      return a.body.message as string;
    };
    // The images server of this file listens on loopback: FETCH_ALLOW_PRIVATE_URLS is off here.
    for (const url of [`${imagesUrl}/x.png`, 'http://10.1.2.3/x.png', 'http://169.254.169.254/latest/x.png']) {
      expect(await refused(await submit({ prompt: 'x', images: [url] }), 400, 'invalid_image_url')).toMatch(
        /private|loopback|link-local|not allowed|address/i,
      );
    }
    expect(await refused(await submit({ prompt: 'x', mask: `${imagesUrl}/x.png` }), 400, 'invalid_image_url')).toMatch(
      /address|private|loopback/i,
    );
    // 5 KB of image in a data: URL, over the 4 KiB cap; a body far over 256 KB + the cap in base64.
    const fiveKb = Buffer.concat([PNG_1x1, Buffer.alloc(5000)]);
    await refused(
      await submit({ prompt: 'x', images: [`data:image/png;base64,${fiveKb.toString('base64')}`] }),
      400,
      'invalid_image_url',
    );
    const huge = `data:image/png;base64,${Buffer.alloc(400_000).toString('base64')}`;
    await refused(await submit({ prompt: 'x', images: [huge] }), 413, 'body_too_large');
    const l = await ledger(short, user.id);
    expect([l.quota, l.logs.map((x) => x.type)]).toEqual([100_000, ['topup']]);
    expect((await call(`${short.url}/v1/jobs`, { key: user.apiKey })).body.data).toEqual([]);
    expect(await short.runtime.services.store.list(`tenants/${user.id}/`)).toEqual([]);
  });

  afterAll(async () => {
    await short?.stop();
  });

  it('ends a job still running at expires_at expired, refunded in full', async () => {
    const user = await short.createUser(100_000);
    const a = await call(`${short.url}/v1/images/generations?async=true`, {
      method: 'POST',
      key: user.apiKey,
      json: { model: MODEL, prompt: 'x [emulate:slow]', n: 2 },
    });
    expect(a.status).toBe(202);
    expect(a.body.expires_at - a.body.created_at).toBeLessThanOrEqual(3);
    let last: any;
    await eventually(async () => {
      last = (await call(`${short.url}/v1/jobs/${a.body.id}`, { key: user.apiKey })).body;
      return finished(last) ? last : null;
    }, 15_000);
    expect(last).toMatchObject({
      status: 'expired',
      image_count: 0,
      usage: { cost_credits: 0 },
      billing: { pre_deducted: 2 * PRICE, settled: 0, refunded: 2 * PRICE },
      error: { code: 'expired' },
    });
    const l = await ledger(short, user.id);
    expect(l.quota).toBe(100_000);
    expect(l.sum).toBe(l.quota);
    const logs = (await short.admin('GET', `/admin/logs?image_job_id=${a.body.id}`)).body.data;
    expect(logs.map((x: any) => x.type)).toEqual(['pre_deduction', 'difference']);
  });
});

describe('ledger', () => {
  it('holds for every user: quota = Σ log deltas', async () => {
    expect(users.length).toBeGreaterThan(5);
    for (const user of users) {
      const l = await ledger(svc, user.id);
      expect([user.id, l.sum]).toEqual([user.id, l.quota]);
    }
  });
});
