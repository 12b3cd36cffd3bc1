import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BATCH_STATUSES } from '../../src/batches/batch-states.ts';
import { randomToken } from '../../src/ids.ts';
import { IMAGE_JOB_STATUSES } from '../../src/images/image-job-queries.ts';
import { decodePng, download, eventually, uploadBatch, waitForBatch } from '../support/batches.ts';
import { call, expectEnvelope, imageLine } from '../support/http.ts';
import { ADMIN_TOKEN, startTestService, type TestService } from '../support/service.ts';

// The endpoints the dashboard reads: the admin users list, the ledger check, the system counts,
// and a batch's images with signed links. Two lines per shard: several Vertex jobs per batch.
let svc: TestService;
let owner: { id: number; apiKey: string };
let stranger: { id: number; apiKey: string };
/** The finished b64_json batch, its output file's raw bytes and its output lines. */
let batch: any;
let raw: Buffer;
let out: any[];

beforeAll(async () => {
  svc = await startTestService({ SHARD_MAX_REQUESTS: '2', VERTEX_EMULATOR_SLOW_MS: '120000' });
  owner = await svc.createUser(1_000_000);
  stranger = await svc.createUser(1_000_000);
  const created = await uploadBatch(svc, owner.apiKey, [
    imageLine('a', 'a red cube', { n: 2 }),
    imageLine('b', 'a blue sphere'),
    imageLine('c', 'a green cone', { n: 2 }),
    imageLine('d', 'nothing [emulate:fail]'),
    imageLine('e', 'a yellow torus', { n: 3 }),
  ]);
  expect(created.status).toBe(200);
  batch = await waitForBatch(svc, owner.apiKey, created.body.id);
  expect(batch.status).toBe('completed');
  const file = await fetch(`${svc.url}/v1/files/${batch.output_file_id}/content`, {
    headers: { authorization: `Bearer ${owner.apiKey}` },
  });
  raw = Buffer.from(await file.arrayBuffer());
  out = await download(svc, owner.apiKey, batch.output_file_id);
  expect(out.map((l) => l.custom_id)).toEqual(['a', 'b', 'c', 'e']);
}, 60_000);
afterAll(async () => {
  await svc?.stop();
});

const admin = (path: string, token: string | null = ADMIN_TOKEN) =>
  call(`${svc.url}${path}`, token === null ? {} : { headers: { authorization: `Bearer ${token}` } });

/** What the gallery answers for a batch of `key`'s (query string included in `query`). */
const images = (key: string, id: string, query = '', base = 'image-batches') =>
  call(`${svc.url}/v1/${base}/${id}/images${query}`, { key });

/** A link fetched as an <img> would: no Authorization header. */
async function fetchLink(url: string, method = 'GET') {
  const res = await fetch(url, { method });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** Every page of a gallery list, following next_cursor. */
async function allPages(key: string, id: string, query: string) {
  const pages: any[] = [];
  let after: string | null = null;
  do {
    const sep = query ? '&' : '?';
    const a = await images(key, id, `${query}${after === null ? '' : `${sep}after=${encodeURIComponent(after)}`}`);
    expect(a.status).toBe(200);
    pages.push(a.body);
    after = a.body.next_cursor;
    expect(a.body.has_more).toBe(after !== null);
    if (pages.length > 50) throw new Error('paging does not end');
  } while (after !== null);
  return pages;
}

describe('GET /admin/users', () => {
  it('lists users newest first, a page at a time, each exactly once', async () => {
    const tag = `dash-${randomToken(6).toLowerCase()}`;
    const made: number[] = [];
    for (let i = 0; i < 5; i++) {
      const a = await svc.admin('POST', '/admin/users', { name: `${tag} user ${i}`, quota: 0 });
      made.push(a.body.id);
    }
    const all = await admin('/admin/users');
    expect(all.status).toBe(200);
    expect(all.body.object).toBe('list');
    expect(all.body.has_more).toBe(false);
    const ids = all.body.data.map((u: any) => u.id);
    expect(ids).toEqual([...ids].sort((x: number, y: number) => y - x));
    expect(ids.slice(0, 5)).toEqual([...made].reverse());
    expect(ids).toEqual(expect.arrayContaining([owner.id, stranger.id]));
    expect(all.body.data[0]).toEqual({
      id: made[4],
      object: 'user',
      name: `${tag} user 4`,
      quota: 0,
      used_quota: 0,
      privacy_accepted_at: null,
      created_at: expect.any(Number),
    });

    // Pages of 2 by `after` = the last id of the page before: every user once, in the same order.
    const paged: number[] = [];
    let after: number | null = null;
    for (;;) {
      const page = await admin(`/admin/users?limit=2${after === null ? '' : `&after=${after}`}`);
      expect(page.status).toBe(200);
      expect(page.body.data.length).toBeLessThanOrEqual(2);
      paged.push(...page.body.data.map((u: any) => u.id));
      if (!page.body.has_more) break;
      after = page.body.data.at(-1).id;
    }
    expect(paged).toEqual(ids);
    // `after` takes ids below it, whether or not that id is a user.
    const below = await admin(`/admin/users?after=${made[2]}&limit=200`);
    expect(below.body.data.map((u: any) => u.id)).toEqual(ids.filter((id: number) => id < made[2]));
  });

  it('filters by a piece of the name, in any case, or by an exact id', async () => {
    const tag = `Needle-${randomToken(6)}`;
    const a = (await svc.admin('POST', '/admin/users', { name: `first ${tag}`, quota: 0 })).body;
    const b = (await svc.admin('POST', '/admin/users', { name: `${tag.toUpperCase()} second`, quota: 0 })).body;
    await svc.admin('POST', '/admin/users', { name: 'someone else', quota: 0 });
    const found = await admin(`/admin/users?q=${encodeURIComponent(tag.toLowerCase())}`);
    expect(found.body.data.map((u: any) => u.id)).toEqual([b.id, a.id]);
    const paged = await admin(`/admin/users?q=${encodeURIComponent(tag)}&limit=1`);
    expect(paged.body).toMatchObject({ data: [{ id: b.id }], has_more: true });
    const next = await admin(`/admin/users?q=${encodeURIComponent(tag)}&limit=1&after=${b.id}`);
    expect(next.body).toMatchObject({ data: [{ id: a.id }], has_more: false });
    // An id finds that user; LIKE's wildcards are plain characters.
    const byId = await admin(`/admin/users?q=${a.id}&limit=200`);
    expect(byId.body.data.map((u: any) => u.id)).toContain(a.id);
    expect(byId.body.data.every((u: any) => u.id === a.id || u.name.includes(String(a.id)))).toBe(true);
    expect((await admin('/admin/users?q=%25')).body.data).toEqual([]);
    expect((await admin('/admin/users?q=_')).body.data).toEqual([]);
    // Blank is no filter.
    expect((await admin('/admin/users?q=%20&limit=1')).body.has_more).toBe(true);
  });

  it('refuses a bad limit, cursor or repeated parameter, and callers without the admin token', async () => {
    for (const [query, code] of [
      ['limit=0', 'invalid_limit'],
      ['limit=201', 'invalid_limit'],
      ['limit=x', 'invalid_limit'],
      ['after=abc', 'invalid_id'],
      ['after=-1', 'invalid_id'],
      ['q=a&q=b', 'invalid_query'],
    ]) {
      const a = await admin(`/admin/users?${query}`);
      expect(a.status).toBe(400);
      expect(expectEnvelope(a).code).toBe(code);
    }
    expect((await admin('/admin/users?limit=200')).status).toBe(200);
    const anonymous = await admin('/admin/users', null);
    expect(anonymous.status).toBe(401);
    expect(expectEnvelope(anonymous).code).toBe('missing_admin_token');
    const wrong = await admin('/admin/users', 'not-the-token');
    expect(wrong.status).toBe(401);
    expect(expectEnvelope(wrong).code).toBe('invalid_admin_token');
    // A tenant's API key is no admin token.
    expect((await admin('/admin/users', owner.apiKey)).status).toBe(401);
  });
});

describe('GET /admin/users/:id ledger', () => {
  it('shows quota = Σ log deltas after a batch (pre-deduction, refund) and a top-up', async () => {
    const before = (await admin(`/admin/users/${owner.id}`)).body;
    await svc.admin('POST', `/admin/users/${owner.id}/topup`, { quota: 1234 });
    const user = (await admin(`/admin/users/${owner.id}`)).body;
    const logs = (await admin(`/admin/logs?user_id=${owner.id}&limit=1000`)).body.data;
    // opening quota, pre-deduction, difference (line d failed), top-up
    expect(logs.map((l: any) => l.type)).toEqual(['topup', 'pre_deduction', 'difference', 'topup']);
    const sum = logs.reduce((s: number, l: any) => s + l.quota_delta, 0);
    expect(user.ledger).toEqual({ quota: user.quota, log_sum: sum, log_count: 4, balanced: true });
    expect(user.quota).toBe(before.quota + 1234);
    expect(user.quota).toBe(1_000_000 - batch.billing.settled + 1234);
    expect(user.api_keys).toHaveLength(1);
    // A user with no quota moves at all is balanced at zero.
    const empty = (await svc.admin('POST', '/admin/users', { name: 'no moves', quota: 0 })).body;
    expect((await admin(`/admin/users/${empty.id}`)).body.ledger).toEqual({
      quota: 0,
      log_sum: 0,
      log_count: 0,
      balanced: true,
    });
    const missing = await admin('/admin/users/999999');
    expect(missing.status).toBe(404);
    expect(expectEnvelope(missing).code).toBe('user_not_found');
  });
});

describe('GET /admin/system', () => {
  it('counts batches and image jobs by every status, queues by name, Vertex jobs and dead jobs', async () => {
    const a = await admin('/admin/system');
    expect(a.status).toBe(200);
    const s = a.body;
    expect(s.object).toBe('system');
    expect(Object.keys(s.batches)).toEqual([...BATCH_STATUSES]);
    expect(Object.keys(s.image_jobs)).toEqual([...IMAGE_JOB_STATUSES]);
    expect(s.batches.completed).toBeGreaterThanOrEqual(1);
    expect(Object.values(s.batches).every((n) => Number.isInteger(n) && (n as number) >= 0)).toBe(true);
    const names = s.queues.map((q: any) => q.name);
    expect(names).toEqual(expect.arrayContaining(['batch-validate', 'batch-finalize', 'shard-poll', 'image-generate']));
    expect(names).not.toContain('dead-jobs');
    for (const q of s.queues) {
      expect(Object.keys(q)).toEqual(['name', 'queued', 'active', 'deferred']);
      for (const n of [q.queued, q.active, q.deferred]) expect(Number.isInteger(n) && n >= 0).toBe(true);
    }
    expect(Number.isInteger(s.vertex_jobs_in_flight)).toBe(true);
    expect(s.dead_jobs).toBe(0);

    // The counts move: one more batch, cancelled while validating, is one more `cancelled`.
    const extra = await uploadBatch(svc, stranger.apiKey, [imageLine('x')]);
    await call(`${svc.url}/v1/image-batches/${extra.body.id}/cancel`, { method: 'POST', key: stranger.apiKey });
    const now = (await waitForBatch(svc, stranger.apiKey, extra.body.id)).status;
    const after = (await admin('/admin/system')).body;
    expect(after.batches[now]).toBe(s.batches[now] + 1);
    expect(Object.values(after.batches).reduce((x: any, y: any) => x + y)).toBe(
      (Object.values(s.batches).reduce((x: any, y: any) => x + y) as number) + 1,
    );
  });

  it('shows a Vertex job in flight while a batch runs, and none once it ended', async () => {
    const slow = await uploadBatch(svc, stranger.apiKey, [imageLine('slow', 'take your time [emulate:slow]')]);
    await waitForBatch(svc, stranger.apiKey, slow.body.id, (b) => b.status === 'in_progress');
    const s = await eventually(async () => {
      const body = (await admin('/admin/system')).body;
      return body.vertex_jobs_in_flight >= 1 ? body : null;
    });
    expect(s.batches.in_progress).toBeGreaterThanOrEqual(1);
    await call(`${svc.url}/v1/image-batches/${slow.body.id}/cancel`, { method: 'POST', key: stranger.apiKey });
    await waitForBatch(svc, stranger.apiKey, slow.body.id);
    await eventually(async () => ((await admin('/admin/system')).body.vertex_jobs_in_flight === 0 ? true : null));
  });

  it('needs the admin token', async () => {
    expect((await admin('/admin/system', null)).status).toBe(401);
    expect((await admin('/admin/system', 'wrong')).status).toBe(401);
  });
});

describe('GET /v1/image-batches/:id/images', () => {
  /** The images of the output file as a client decodes them: [custom_id, index, bytes]. */
  const expected = () =>
    out.flatMap((l) =>
      l.response.body.data.map((d: any, i: number) => [l.custom_id, i, Buffer.from(d.b64_json, 'base64')] as const),
    );

  it('lists every image in output order, with links that serve the very bytes without an API key', async () => {
    const a = await images(owner.apiKey, batch.id);
    expect(a.status).toBe(200);
    expect(a.body.object).toBe('list');
    expect(a.body.has_more).toBe(false);
    expect(a.body.next_cursor).toBeNull();
    const want = expected();
    expect(want).toHaveLength(8);
    expect(a.body.data.map((d: any) => [d.custom_id, d.index])).toEqual(want.map(([c, i]) => [c, i]));
    for (const [n, d] of a.body.data.entries()) {
      expect(Object.keys(d)).toEqual(['object', 'custom_id', 'index', 'url', 'mime_type']);
      expect(d).toMatchObject({ object: 'batch.image', mime_type: 'image/png' });
      expect(d.url.startsWith(`${svc.url}/links/`)).toBe(true);
      const res = await fetchLink(d.url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('image/png');
      expect(res.headers.get('cache-control')).toMatch(/^private, max-age=\d+$/);
      expect(res.bytes.equals(want[n][2])).toBe(true);
    }
    // The very bytes of the output file, and a PNG that decodes (once: decoding is slow in JS).
    expect(decodePng((await fetchLink(a.body.data[7].url)).bytes.toString('base64')).width).toBeGreaterThan(0);
    // The other path answers the same.
    const alias = await images(owner.apiKey, batch.id, '', 'batches');
    expect(alias.body.data.map((d: any) => [d.custom_id, d.index])).toEqual(want.map(([c, i]) => [c, i]));
    // HEAD: the type, no body.
    const head = await fetchLink(a.body.data[0].url, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('image/png');
    expect(head.bytes.length).toBe(0);
  });

  it('pages by cursor: every image exactly once, each page read from its line onwards', async () => {
    const want = expected().map(([c, i]) => `${c}/${i}`);
    for (const limit of [1, 2, 3, 5, 8]) {
      const pages = await allPages(owner.apiKey, batch.id, `?limit=${limit}`);
      expect(pages).toHaveLength(Math.ceil(want.length / limit));
      const got = pages.flatMap((p) => p.data.map((d: any) => `${d.custom_id}/${d.index}`));
      expect(got).toEqual(want);
      for (const p of pages.slice(0, -1)) expect(p.data).toHaveLength(limit);
    }
    // A cursor at a line's start is its byte offset in the output file.
    const first = await images(owner.apiKey, batch.id, '?limit=2');
    const offset = Number(first.body.next_cursor);
    expect(first.body.data.map((d: any) => d.custom_id)).toEqual(['a', 'a']);
    expect(raw[offset - 1]).toBe(0x0a);
    expect(JSON.parse(raw.subarray(offset, raw.indexOf(0x0a, offset)).toString()).custom_id).toBe('b');
  });

  it('keeps one request’s images with custom_id', async () => {
    const c = await images(owner.apiKey, batch.id, '?custom_id=c');
    expect(c.body.data.map((d: any) => [d.custom_id, d.index])).toEqual([
      ['c', 0],
      ['c', 1],
    ]);
    expect(c.body.has_more).toBe(false);
    const pages = await allPages(owner.apiKey, batch.id, '?custom_id=e&limit=2');
    expect(pages.flatMap((p) => p.data.map((d: any) => `${d.custom_id}/${d.index}`))).toEqual(['e/0', 'e/1', 'e/2']);
    // A filtered page that ends with the request's last image: nothing more, however many lines follow.
    const a = await images(owner.apiKey, batch.id, '?custom_id=a&limit=2');
    expect(a.body).toMatchObject({ has_more: false, next_cursor: null });
    expect(a.body.data.map((d: any) => `${d.custom_id}/${d.index}`)).toEqual(['a/0', 'a/1']);
    // The failed line has no images; an unknown id none either.
    for (const id of ['d', 'nope']) {
      expect((await images(owner.apiKey, batch.id, `?custom_id=${id}`)).body).toEqual({
        object: 'list',
        data: [],
        has_more: false,
        next_cursor: null,
      });
    }
    const fromC = await images(owner.apiKey, batch.id, '?custom_id=c');
    const link = await fetchLink(fromC.body.data[1].url);
    expect(link.bytes.equals(Buffer.from(out[2].response.body.data[1].b64_json, 'base64'))).toBe(true);
  });

  it('refuses a bad cursor or limit', async () => {
    const midLine = String(raw.indexOf(0x0a) - 10);
    for (const [query, code] of [
      ['?after=abc', 'invalid_cursor'],
      ['?after=-5', 'invalid_cursor'],
      [`?after=${midLine}`, 'invalid_cursor'],
      [`?after=${raw.length + 1}`, 'invalid_cursor'],
      ['?after=1&after=2', 'invalid_query'],
      ['?limit=0', 'invalid_limit'],
      ['?limit=101', 'invalid_limit'],
    ]) {
      const a = await images(owner.apiKey, batch.id, query);
      expect(a.status).toBe(400);
      expect(expectEnvelope(a)).toMatchObject({
        code,
        param: code === 'invalid_cursor' ? 'after' : expect.any(String),
      });
    }
    // The end of the file is a valid (empty) place to be.
    expect((await images(owner.apiKey, batch.id, `?after=${raw.length}`)).body.data).toEqual([]);
    expect((await images(owner.apiKey, batch.id, '?limit=100')).status).toBe(200);
  });

  it('refuses a link whose offset, index or object was tampered with', async () => {
    const { body } = await images(owner.apiKey, batch.id, '?custom_id=c');
    const url = new URL(body.data[0].url);
    const tampered: Array<(u: URL) => void> = [
      (u) => u.searchParams.set('index', '1'),
      (u) => u.searchParams.set('offset', String(Number(u.searchParams.get('offset')) + 1)),
      (u) => u.searchParams.set('offset', '0'),
      (u) => u.searchParams.delete('offset'),
      (u) => {
        u.searchParams.delete('offset');
        u.searchParams.delete('index');
      },
    ];
    for (const change of tampered) {
      const copy = new URL(url);
      change(copy);
      const a = await call(copy.toString());
      expect(a.status).toBe(403);
      expect(expectEnvelope(a).code).toBe('invalid_link');
    }
    expect((await fetchLink(url.toString())).status).toBe(200);
  });

  it('is a 404 for another tenant’s batch, and empty while a batch has no output', async () => {
    for (const base of ['image-batches', 'batches']) {
      const a = await images(stranger.apiKey, batch.id, '', base);
      expect(a.status).toBe(404);
      expect(expectEnvelope(a).code).toBe('batch_not_found');
    }
    expect((await images(owner.apiKey, 'batch_doesnotexist')).status).toBe(404);
    expect((await call(`${svc.url}/v1/image-batches/${batch.id}/images`)).status).toBe(401);

    const slow = await uploadBatch(svc, owner.apiKey, [imageLine('slow', 'slowly [emulate:slow]'), imageLine('quick')]);
    await waitForBatch(svc, owner.apiKey, slow.body.id, (b) => b.status === 'in_progress');
    const running = await images(owner.apiKey, slow.body.id);
    expect(running.status).toBe(200);
    expect(running.body).toEqual({ object: 'list', data: [], has_more: false, next_cursor: null });
    await call(`${svc.url}/v1/image-batches/${slow.body.id}/cancel`, { method: 'POST', key: owner.apiKey });
    await waitForBatch(svc, owner.apiKey, slow.body.id);
  });

  it('signs url-mode images anew: links to the stored images, jpeg too', async () => {
    const created = await uploadBatch(svc, owner.apiKey, [
      imageLine('u-two', 'two spheres', { response_format: 'url', n: 2 }),
      imageLine('b-one', 'inline', { response_format: 'b64_json' }),
      imageLine('u-jpeg', 'a jpeg', { response_format: 'url', output_format: 'jpeg' }),
    ]);
    const done = await waitForBatch(svc, owner.apiKey, created.body.id);
    expect(done.status).toBe('completed');
    const lines = await download(svc, owner.apiKey, done.output_file_id);
    const a = await images(owner.apiKey, done.id);
    expect(a.body.data.map((d: any) => [d.custom_id, d.index, d.mime_type])).toEqual([
      ['u-two', 0, 'image/png'],
      ['u-two', 1, 'image/png'],
      ['b-one', 0, 'image/png'],
      ['u-jpeg', 0, 'image/jpeg'],
    ]);
    const written = [
      lines[0].response.body.data[0].url,
      lines[0].response.body.data[1].url,
      null,
      lines[2].response.body.data[0].url,
    ];
    for (const [n, d] of a.body.data.entries()) {
      const res = await fetchLink(d.url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(d.mime_type);
      if (written[n] === null) {
        expect(res.bytes.equals(Buffer.from(lines[1].response.body.data[0].b64_json, 'base64'))).toBe(true);
        continue;
      }
      // The same stored image as the link in the file, under a signature of its own.
      expect(new URL(d.url).pathname).toBe(new URL(written[n]!).pathname);
      expect(res.bytes.equals((await fetchLink(written[n]!)).bytes)).toBe(true);
    }
    expect(decodePng((await fetchLink(a.body.data[0].url)).bytes.toString('base64')).width).toBeGreaterThan(0);

    // Deleting the batch deletes its files: a valid link then finds nothing.
    const inline = a.body.data[2].url;
    expect((await call(`${svc.url}/v1/image-batches/${done.id}`, { method: 'DELETE', key: owner.apiKey })).status).toBe(
      200,
    );
    const gone = await call(inline);
    expect(gone.status).toBe(404);
    expect(expectEnvelope(gone).code).toBe('file_not_found');
    expect((await images(owner.apiKey, done.id)).status).toBe(404);
  });
});
