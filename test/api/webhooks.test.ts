import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import OpenAI, { InvalidWebhookSignatureError } from 'openai';
import pg from 'pg';
import { sweep } from '../../src/pipeline/sweep.ts';
import { nextAttemptAt } from '../../src/webhooks/delivery-job.ts';
import { postWebhook } from '../../src/webhooks/webhook-http.ts';
import { eventually, uploadBatch, waitForBatch } from '../support/batches.ts';
import { call, expectEnvelope, imageLine } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/** What a receiver got: the raw body, as a signature must be checked over it. */
interface Received {
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** A real HTTP receiver on a random loopback port; a path can be told to answer 500 a number of times first. */
async function startReceiver() {
  const received: Received[] = [];
  const failuresLeft = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const headers = Object.fromEntries(
        Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : (v ?? '')]),
      );
      received.push({ path, headers, body: Buffer.concat(chunks).toString('utf8') });
      const left = failuresLeft.get(path) ?? 0;
      if (left > 0) {
        failuresLeft.set(path, left - 1);
        res.writeHead(500, { 'content-type': 'text/plain' }).end('try again later');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"received":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    failuresLeft,
    at: (path: string) => received.filter((r) => r.path === path),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

let svc: TestService;
let db: pg.Pool;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
const sdk = () => new OpenAI({ apiKey: 'x', baseURL: `${svc.url}/v1` });

beforeAll(async () => {
  receiver = await startReceiver();
  svc = await startTestService({
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    WEBHOOK_RETRY_BASE: '200ms',
    VERTEX_EMULATOR_SLOW_MS: '30000',
  });
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
});
afterAll(async () => {
  await db?.end();
  await svc?.stop();
  await receiver?.close();
});

const createEndpoint = (key: string, json: unknown) => call(`${svc.url}/v1/webhooks`, { method: 'POST', key, json });
const deliveries = async (key: string, endpointId: string) =>
  (await call(`${svc.url}/v1/webhooks/${endpointId}/deliveries`, { key })).body.data as any[];
/** The endpoint's one delivery once it is no longer pending. */
const settledDelivery = (key: string, endpointId: string) =>
  eventually(async () => {
    const [d] = await deliveries(key, endpointId);
    return d && d.status !== 'pending' ? d : null;
  }, 20_000);

describe('webhook endpoints', () => {
  it('creates an endpoint with a secret shown once, and lists it without', async () => {
    const u = await svc.createUser();
    const a = await createEndpoint(u.apiKey, { url: receiver.url('/shape') });
    expect(a.status).toBe(200);
    expect(Object.keys(a.body)).toEqual(['id', 'object', 'url', 'events', 'secret', 'created_at']);
    expect(a.body).toMatchObject({
      object: 'webhook_endpoint',
      url: receiver.url('/shape'),
      events: ['batch.completed', 'batch.failed', 'batch.cancelled', 'batch.expired'],
    });
    expect(a.body.id).toMatch(/^wh_[A-Za-z0-9]{24}$/);
    expect(a.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(a.body.secret.slice('whsec_'.length), 'base64')).toHaveLength(32);
    expect(Math.abs(a.body.created_at - Date.now() / 1000)).toBeLessThan(60);

    const b = await createEndpoint(u.apiKey, {
      url: receiver.url('/shape-2'),
      events: ['batch.failed', 'batch.completed', 'batch.failed'],
    });
    expect(b.body.events).toEqual(['batch.completed', 'batch.failed']);
    expect(b.body.secret).not.toBe(a.body.secret);

    const all = await call(`${svc.url}/v1/webhooks`, { key: u.apiKey });
    expect(all.body).toMatchObject({ object: 'list', first_id: b.body.id, last_id: a.body.id, has_more: false });
    expect(all.body.data.map((e: any) => e.id)).toEqual([b.body.id, a.body.id]);
    for (const e of all.body.data) expect(e).not.toHaveProperty('secret');
    expect(all.text).not.toContain('whsec_');

    const first = await call(`${svc.url}/v1/webhooks?limit=1`, { key: u.apiKey });
    expect(first.body).toMatchObject({ first_id: b.body.id, has_more: true });
    const next = await call(`${svc.url}/v1/webhooks?limit=1&after=${b.body.id}`, { key: u.apiKey });
    expect(next.body).toMatchObject({ first_id: a.body.id, last_id: a.body.id, has_more: false });
  });

  it('refuses bad events with invalid_events and a missing url, storing nothing', async () => {
    const u = await svc.createUser();
    for (const events of ['batch.completed', [], ['batch.done'], [1], ['batch.completed', null], {}]) {
      const a = await createEndpoint(u.apiKey, { url: receiver.url('/bad'), events });
      expect(a.status).toBe(400);
      expect(expectEnvelope(a)).toMatchObject({ code: 'invalid_events', param: 'events' });
    }
    const missing = await createEndpoint(u.apiKey, { events: ['batch.failed'] });
    expect(missing.status).toBe(400);
    expect(expectEnvelope(missing)).toMatchObject({ code: 'missing_required_parameter', param: 'url' });
    const notString = await createEndpoint(u.apiKey, { url: 42 });
    expect(expectEnvelope(notString)).toMatchObject({ code: 'invalid_webhook_url', param: 'url' });
    const notObject = await createEndpoint(u.apiKey, ['http://example.com']);
    expect(expectEnvelope(notObject).code).toBe('invalid_body');
    expect((await call(`${svc.url}/v1/webhooks`, { key: u.apiKey })).body.data).toEqual([]);
  });

  it('keeps cloud metadata addresses out even when private addresses are allowed', async () => {
    const u = await svc.createUser();
    for (const url of [
      'http://169.254.169.254/latest/meta-data/',
      'http://[fd00:ec2::254]/',
      'http://metadata.google.internal/',
    ]) {
      const a = await createEndpoint(u.apiKey, { url });
      expect(a.status).toBe(400);
      expect(expectEnvelope(a).code).toBe('invalid_webhook_url');
    }
  });

  it("answers 404 webhook_not_found for another user's endpoint, and leaves it alone", async () => {
    const alice = await svc.createUser();
    const bob = await svc.createUser();
    const endpoint = (await createEndpoint(alice.apiKey, { url: receiver.url('/alice') })).body;
    expect((await call(`${svc.url}/v1/webhooks`, { key: bob.apiKey })).body.data).toEqual([]);
    for (const [method, path] of [
      ['DELETE', `/v1/webhooks/${endpoint.id}`],
      ['GET', `/v1/webhooks/${endpoint.id}/deliveries`],
      ['DELETE', '/v1/webhooks/wh_doesnotexist'],
      ['GET', '/v1/webhooks/not-an-id/deliveries'],
    ]) {
      const a = await call(svc.url + path, { method, key: bob.apiKey });
      expect(a.status).toBe(404);
      expect(expectEnvelope(a).code).toBe('webhook_not_found');
    }
    const listed = await call(`${svc.url}/v1/webhooks`, { key: alice.apiKey });
    expect(listed.body.data.map((e: any) => e.id)).toEqual([endpoint.id]);
    // Bob's batch ends without a word to Alice's endpoint.
    const batch = await uploadBatch(svc, bob.apiKey, 'not json\n');
    await waitForBatch(svc, bob.apiKey, batch.body.id);
    expect(await deliveries(alice.apiKey, endpoint.id)).toEqual([]);
  });
});

describe('batch events', () => {
  it('delivers batch.completed, signed so that the OpenAI SDK verifies it; a filtered endpoint gets nothing', async () => {
    const u = await svc.createUser();
    const all = (await createEndpoint(u.apiKey, { url: receiver.url('/completed') })).body;
    const failedOnly = (await createEndpoint(u.apiKey, { url: receiver.url('/failed-only'), events: ['batch.failed'] }))
      .body;
    const created = await uploadBatch(svc, u.apiKey, [imageLine('a')]);
    const batch = await waitForBatch(svc, u.apiKey, created.body.id);
    expect(batch.status).toBe('completed');

    const delivery = await settledDelivery(u.apiKey, all.id);
    expect(delivery).toMatchObject({
      object: 'webhook_delivery',
      endpoint_id: all.id,
      event_type: 'batch.completed',
      batch_id: batch.id,
      status: 'delivered',
      attempts: 1,
      last_status_code: 200,
      last_error: null,
      next_attempt_at: null,
    });
    expect(delivery.id).toMatch(/^whdel_/);
    expect(delivery.event_id).toMatch(/^evt_/);
    expect(delivery.delivered_at).toBeGreaterThanOrEqual(delivery.created_at);

    const [got] = receiver.at('/completed');
    expect(receiver.at('/completed')).toHaveLength(1);
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['webhook-id']).toBe(delivery.event_id);
    expect(got.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    const event = await sdk().webhooks.unwrap(got.body, got.headers, all.secret);
    expect(event).toEqual({
      id: delivery.event_id,
      object: 'event',
      type: 'batch.completed',
      created_at: batch.completed_at,
      data: { id: batch.id },
    });
    expect(got.body).toBe(JSON.stringify(event));

    const tampered = got.body.replace(batch.id, `${batch.id.slice(0, -1)}X`);
    expect(tampered).not.toBe(got.body);
    await expect(sdk().webhooks.unwrap(tampered, got.headers, all.secret)).rejects.toThrow(
      InvalidWebhookSignatureError,
    );
    const otherSecret = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    await expect(sdk().webhooks.unwrap(got.body, got.headers, otherSecret)).rejects.toThrow(
      InvalidWebhookSignatureError,
    );

    // Delivery rows are written with the final status: once it is completed, none can follow.
    expect(await deliveries(u.apiKey, failedOnly.id)).toEqual([]);
    expect(receiver.at('/failed-only')).toEqual([]);
  });

  it('retries after a 500 with the same bytes and webhook-id, then records the delivery', async () => {
    const u = await svc.createUser();
    receiver.failuresLeft.set('/flaky', 1);
    const endpoint = (await createEndpoint(u.apiKey, { url: receiver.url('/flaky') })).body;
    const created = await uploadBatch(svc, u.apiKey, 'not json\n');
    const batch = await waitForBatch(svc, u.apiKey, created.body.id);
    expect(batch.status).toBe('failed');

    const delivery = await settledDelivery(u.apiKey, endpoint.id);
    expect(delivery).toMatchObject({
      event_type: 'batch.failed',
      status: 'delivered',
      attempts: 2,
      last_status_code: 200,
      last_error: null,
    });
    const attempts = receiver.at('/flaky');
    expect(attempts).toHaveLength(2);
    expect(attempts[1].body).toBe(attempts[0].body);
    expect(attempts[1].headers['webhook-id']).toBe(attempts[0].headers['webhook-id']);
    for (const a of attempts) {
      const event = await sdk().webhooks.unwrap(a.body, a.headers, endpoint.secret);
      expect(event).toMatchObject({ id: delivery.event_id, type: 'batch.failed', data: { id: batch.id } });
    }
  });

  it('sends batch.failed for a batch refused for quota (failed inside the charging transaction)', async () => {
    const u = await svc.createUser(0);
    const endpoint = (await createEndpoint(u.apiKey, { url: receiver.url('/no-quota') })).body;
    const created = await uploadBatch(svc, u.apiKey, [imageLine('a')]);
    const batch = await waitForBatch(svc, u.apiKey, created.body.id);
    expect(batch.errors.data[0].code).toBe('insufficient_quota');
    const delivery = await settledDelivery(u.apiKey, endpoint.id);
    expect(delivery).toMatchObject({ event_type: 'batch.failed', status: 'delivered', batch_id: batch.id });
    const [got] = receiver.at('/no-quota');
    const event = await sdk().webhooks.unwrap(got.body, got.headers, endpoint.secret);
    expect(event).toMatchObject({ type: 'batch.failed', created_at: batch.failed_at, data: { id: batch.id } });
  });

  it('sends batch.cancelled for a cancelled batch', async () => {
    const u = await svc.createUser();
    const endpoint = (await createEndpoint(u.apiKey, { url: receiver.url('/cancelled') })).body;
    const created = await uploadBatch(svc, u.apiKey, [imageLine('slow', 'a slow cube [emulate:slow]')]);
    const cancel = await call(`${svc.url}/v1/image-batches/${created.body.id}/cancel`, {
      method: 'POST',
      key: u.apiKey,
    });
    expect(cancel.status).toBe(200);
    const batch = await waitForBatch(svc, u.apiKey, created.body.id);
    expect(batch.status).toBe('cancelled');
    const delivery = await settledDelivery(u.apiKey, endpoint.id);
    expect(delivery).toMatchObject({ event_type: 'batch.cancelled', status: 'delivered' });
    const [got] = receiver.at('/cancelled');
    const event = await sdk().webhooks.unwrap(got.body, got.headers, endpoint.secret);
    expect(event).toEqual({
      id: delivery.event_id,
      object: 'event',
      type: 'batch.cancelled',
      created_at: batch.cancelled_at,
      data: { id: batch.id },
    });
  });

  it('deleting an endpoint stops its pending deliveries', async () => {
    const u = await svc.createUser();
    receiver.failuresLeft.set('/down', Number.POSITIVE_INFINITY);
    const endpoint = (await createEndpoint(u.apiKey, { url: receiver.url('/down') })).body;
    const created = await uploadBatch(svc, u.apiKey, 'not json\n');
    await waitForBatch(svc, u.apiKey, created.body.id);
    const retrying = await eventually(async () => {
      const [d] = await deliveries(u.apiKey, endpoint.id);
      return d?.attempts >= 2 ? d : null;
    });
    expect(retrying).toMatchObject({ status: 'pending', last_status_code: 500, last_error: 'HTTP 500' });
    expect(retrying.next_attempt_at).not.toBeNull();

    const del = await call(`${svc.url}/v1/webhooks/${endpoint.id}`, { method: 'DELETE', key: u.apiKey });
    expect(del.body).toEqual({ id: endpoint.id, object: 'webhook_endpoint.deleted', deleted: true });
    const again = await call(`${svc.url}/v1/webhooks/${endpoint.id}`, { method: 'DELETE', key: u.apiKey });
    expect(expectEnvelope(again).code).toBe('webhook_not_found');
    const gone = await call(`${svc.url}/v1/webhooks/${endpoint.id}/deliveries`, { key: u.apiKey });
    expect(gone.status).toBe(404);

    const { rows } = await db.query('SELECT status, last_error, attempts FROM webhook_deliveries WHERE id = $1', [
      retrying.id,
    ]);
    expect(rows[0]).toMatchObject({ status: 'failed', last_error: 'endpoint deleted' });
    // The attempt already queued runs, finds the delivery stopped and queues no other.
    await eventually(async () => {
      const { rows: jobs } = await db.query(
        `SELECT 1 FROM pgboss.job WHERE name = 'webhook-deliver' AND singleton_key = $1 AND state IN ('created', 'retry', 'active')`,
        [retrying.id],
      );
      return jobs.length === 0 ? true : null;
    });
    const sent = receiver.at('/down').length;
    // At most one attempt was already on the wire when the endpoint went.
    expect(sent).toBeLessThanOrEqual(rows[0].attempts + 1);
    const after = await db.query('SELECT status FROM webhook_deliveries WHERE id = $1', [retrying.id]);
    expect(after.rows[0].status).toBe('failed');
  });
});

describe('delivery-time address guard', () => {
  const message = {
    id: 'evt_guard',
    body: '{"id":"evt_guard"}',
    secret: `whsec_${Buffer.alloc(32, 1).toString('base64')}`,
  };

  it('refuses a host name that resolves to loopback when it connects, with the real resolver', async () => {
    const url = `http://localhost:${receiver.port}/guard`;
    const refused = await postWebhook(url, message, { allowPrivate: false, timeoutMs: 10_000 });
    expect(refused).toMatchObject({ ok: false, statusCode: null });
    expect(refused.error).toMatch(/^localhost resolves to (127\.0\.0\.1|::1), a loopback address$/);
    const literal = await postWebhook(`http://127.0.0.1:${receiver.port}/guard`, message, {
      allowPrivate: false,
      timeoutMs: 10_000,
    });
    expect(literal).toMatchObject({ ok: false, statusCode: null, error: 'refused: 127.0.0.1 is a loopback address' });
    const mapped = await postWebhook(`http://[::ffff:127.0.0.1]:${receiver.port}/guard`, message, {
      allowPrivate: false,
      timeoutMs: 10_000,
    });
    expect(mapped.error).toMatch(/loopback/);
    expect(receiver.at('/guard')).toEqual([]);

    // The same request with private addresses allowed goes through: the guard was what stopped it.
    const allowed = await postWebhook(url, message, { allowPrivate: true, timeoutMs: 10_000 });
    expect(allowed).toEqual({ ok: true, statusCode: 200, error: null });
    expect(receiver.at('/guard')).toHaveLength(1);
  });

  it('gives up on an attempt after its timeout', async () => {
    const silent = http.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address() as AddressInfo;
      const r = await postWebhook(`http://127.0.0.1:${port}/`, message, { allowPrivate: true, timeoutMs: 300 });
      expect(r).toEqual({ ok: false, statusCode: null, error: 'timed out after 0.3 s' });
    } finally {
      silent.closeAllConnections();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});

describe('retry schedule', () => {
  const base = 10_000;
  const now = new Date('2030-01-01T00:00:00Z');
  const plus = (ms: number) => new Date(now.getTime() + ms);
  const hoursAgo = (h: number) => new Date(now.getTime() - h * 3_600_000);

  it('doubles from WEBHOOK_RETRY_BASE, caps at an hour, and gives up past 72 h', () => {
    expect(nextAttemptAt(now, 1, base, now)).toEqual(plus(10_000));
    expect(nextAttemptAt(now, 2, base, now)).toEqual(plus(20_000));
    expect(nextAttemptAt(now, 5, base, now)).toEqual(plus(160_000));
    expect(nextAttemptAt(now, 12, base, now)).toEqual(plus(3_600_000));
    expect(nextAttemptAt(now, 500, base, now)).toEqual(plus(3_600_000));
    expect(nextAttemptAt(hoursAgo(71), 40, base, now)).toEqual(plus(3_600_000));
    expect(nextAttemptAt(hoursAgo(71.5), 40, base, now)).toBeNull();
    expect(nextAttemptAt(hoursAgo(72), 1, base, now)).toBeNull();
  });
});

describe('with the default configuration', () => {
  let strict: TestService;
  let strictDb: pg.Pool;

  beforeAll(async () => {
    // ROLE=api: no workers, so a batch stays where the API and the test put it.
    strict = await startTestService({ ROLE: 'api' });
    strictDb = new pg.Pool({ connectionString: strict.databaseUrl, max: 2 });
  });
  afterAll(async () => {
    await strictDb?.end();
    await strict?.stop();
  });

  it('refuses URLs that are not http(s), carry credentials, are too long, or reach private addresses', async () => {
    const u = await strict.createUser();
    const refused = [
      'http://127.0.0.1/hook',
      'http://10.0.0.1/hook',
      'http://169.254.169.254/latest/meta-data/',
      'ftp://example.com/hook',
      `http://localhost:${receiver.port}/hook`,
      'http://[::1]/hook',
      'http://[::ffff:192.168.1.1]/hook',
      'http://[fd12:3456::1]/hook',
      'http://100.64.0.1/hook',
      'http://0.0.0.0/hook',
      'http://224.0.0.1/hook',
      'http://2130706433/hook',
      'http://metadata.google.internal/computeMetadata/v1/',
      'https://user:secret@93.184.215.14/hook',
      `https://93.184.215.14/${'a'.repeat(2048)}`,
      'not a url',
    ];
    for (const url of refused) {
      const a = await call(`${strict.url}/v1/webhooks`, { method: 'POST', key: u.apiKey, json: { url } });
      expect([url, a.status]).toEqual([url, 400]);
      expect(expectEnvelope(a)).toMatchObject({ code: 'invalid_webhook_url', param: 'url' });
    }
    expect((await call(`${strict.url}/v1/webhooks`, { key: u.apiKey })).body.data).toEqual([]);
    const ok = await call(`${strict.url}/v1/webhooks`, {
      method: 'POST',
      key: u.apiKey,
      json: { url: 'https://93.184.215.14/hook' },
    });
    expect(ok.status).toBe(200);
  });

  it('records batch.expired with its delivery job when the sweep expires a batch, once', async () => {
    const u = await strict.createUser();
    const endpoint = (
      await call(`${strict.url}/v1/webhooks`, {
        method: 'POST',
        key: u.apiKey,
        json: { url: 'https://93.184.215.14/hook', events: ['batch.expired'] },
      })
    ).body;
    const created = await uploadBatch(strict, u.apiKey, [imageLine('a')]);
    expect(created.body.status).toBe('validating');
    await strictDb.query(`UPDATE batches SET expires_at = now() - interval '1 second' WHERE id = $1`, [
      created.body.id,
    ]);

    await sweep(strict.runtime.services);
    const batch = (await call(`${strict.url}/v1/image-batches/${created.body.id}`, { key: u.apiKey })).body;
    expect(batch.status).toBe('expired');
    const list = await call(`${strict.url}/v1/webhooks/${endpoint.id}/deliveries`, { key: u.apiKey });
    expect(list.body.data).toHaveLength(1);
    const [delivery] = list.body.data;
    expect(delivery).toMatchObject({ event_type: 'batch.expired', batch_id: batch.id, status: 'pending', attempts: 0 });
    const { rows } = await strictDb.query('SELECT body FROM webhook_deliveries WHERE id = $1', [delivery.id]);
    expect(JSON.parse(rows[0].body)).toEqual({
      id: delivery.event_id,
      object: 'event',
      type: 'batch.expired',
      created_at: batch.expired_at,
      data: { id: batch.id },
    });
    const jobs = await strictDb.query(
      `SELECT data FROM pgboss.job WHERE name = 'webhook-deliver' AND singleton_key = $1`,
      [delivery.id],
    );
    expect(jobs.rows.map((r) => r.data)).toEqual([{ deliveryId: delivery.id }]);

    // A second sweep loses the compare-and-set: no second event.
    await sweep(strict.runtime.services);
    expect(
      (await call(`${strict.url}/v1/webhooks/${endpoint.id}/deliveries`, { key: u.apiKey })).body.data,
    ).toHaveLength(1);
  });

  it('sends nothing for a batch cancelled before it ran to an endpoint not subscribed to it', async () => {
    const u = await strict.createUser();
    const endpoint = (
      await call(`${strict.url}/v1/webhooks`, {
        method: 'POST',
        key: u.apiKey,
        json: { url: 'https://93.184.215.14/hook', events: ['batch.completed'] },
      })
    ).body;
    const created = await uploadBatch(strict, u.apiKey, [imageLine('a')]);
    const cancelled = await call(`${strict.url}/v1/image-batches/${created.body.id}/cancel`, {
      method: 'POST',
      key: u.apiKey,
    });
    expect(cancelled.body.status).toBe('cancelled');
    expect((await call(`${strict.url}/v1/webhooks/${endpoint.id}/deliveries`, { key: u.apiKey })).body.data).toEqual(
      [],
    );
    // Subscribed: the cancel from `validating` commits its event with it.
    const all = (
      await call(`${strict.url}/v1/webhooks`, {
        method: 'POST',
        key: u.apiKey,
        json: { url: 'https://93.184.215.14/all' },
      })
    ).body;
    const second = await uploadBatch(strict, u.apiKey, [imageLine('b')]);
    await call(`${strict.url}/v1/image-batches/${second.body.id}/cancel`, { method: 'POST', key: u.apiKey });
    const [d] = (await call(`${strict.url}/v1/webhooks/${all.id}/deliveries`, { key: u.apiKey })).body.data;
    expect(d).toMatchObject({ event_type: 'batch.cancelled', batch_id: second.body.id, status: 'pending' });
  });
});
