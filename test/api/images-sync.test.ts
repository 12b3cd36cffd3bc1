import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import OpenAI from 'openai';
import { decodePng, eventually, ledger } from '../support/batches.ts';
import { call, expectEnvelope } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/** Sync generations through the service and the emulator's online prediction, billed at the sync price. */
let svc: TestService;
const MODEL = 'gemini-2.5-flash-image';
const PRICE = 5000; // 1K, multiplier 1
const START = 100_000;
const users: Array<{ id: number; apiKey: string }> = [];

async function newUser(quota = START) {
  const user = await svc.createUser(quota);
  users.push(user);
  return user;
}

beforeAll(async () => {
  svc = await startTestService({
    VERTEX_EMULATOR_ONLINE_MS: '30',
    // Long enough that, on a busy machine, the first image of the lost-call test is stored in time.
    VERTEX_EMULATOR_SLOW_MS: '6000',
    SYNC_TIMEOUT_MS: '3000',
  });
});
afterAll(async () => {
  await svc?.stop();
});

const generate = (key: string, json: unknown, query = '') =>
  call(`${svc.url}/v1/images/generations${query}`, { method: 'POST', key, json });

describe('POST /v1/images/generations (sync)', () => {
  it('answers the images inline and charges n × the sync price', async () => {
    const user = await newUser();
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'a red cube', n: 2, size: '1536x1024' });
    expect(a.status).toBe(200);
    expect(a.body.data).toHaveLength(2);
    expect(decodePng(a.body.data[0].b64_json)).toEqual({ width: 1248, height: 832 });
    expect(a.body.usage.output_tokens).toBeGreaterThan(0);
    // Online calls ask for the model's text too: it comes back as revised_prompt.
    expect(a.body.data[0].revised_prompt).toMatch(/a red cube/);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - 2 * PRICE);
    expect(l.sum).toBe(l.quota);
  });

  it('refunds failed images, and all-failed is 502 with everything returned', async () => {
    const user = await newUser();
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:fail]', n: 2 });
    expect(a.status).toBe(502);
    expect(expectEnvelope(a).code).toBe('upstream_error');
    const b = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:block]' });
    expect(b.status).toBe(400);
    expect(expectEnvelope(b).code).toBe('content_blocked');
    // Each error answer names the job that records its refund.
    for (const [answer, code] of [
      [a, 'upstream_error'],
      [b, 'content_blocked'],
    ] as const) {
      const job = await call(`${svc.url}/v1/jobs/${answer.headers.get('x-image-job-id')}`, { key: user.apiKey });
      expect(job.body).toMatchObject({ status: 'failed', image_count: 0, error: { code } });
    }
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START);
    expect(l.sum).toBe(l.quota);
  });

  it('times out with 504 and a full refund', async () => {
    const user = await newUser();
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:slow]' });
    expect(a.status).toBe(504);
    expect(expectEnvelope(a).code).toBe('timeout');
    const job = await call(`${svc.url}/v1/jobs/${a.headers.get('x-image-job-id')}`, { key: user.apiKey });
    expect(job.body).toMatchObject({ status: 'failed', error: { code: 'timeout' } });
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START);
  });

  it('keeps no image of a url-mode request that timed out: refunded in full, nothing left to fetch', async () => {
    const user = await newUser();
    const vertex = svc.runtime.emulators!.vertex;
    // Of the two calls, the first answers at once and the second is never answered.
    vertex.setFaults({ transportFaults: [{ method: 'GenerateContent', call: 2, status: 'hang' }] });
    let a: Awaited<ReturnType<typeof generate>>;
    try {
      const pending = generate(user.apiKey, {
        model: MODEL,
        prompt: 'one fast, one lost',
        n: 2,
        response_format: 'url',
      });
      // The first image is stored while the second call hangs: there is something to take back.
      const stored = async () => (await svc.runtime.services.store.list(`tenants/${user.id}/jobs/`)).length;
      await eventually(async () => ((await stored()) > 0 ? true : null), 2900);
      a = await pending;
    } finally {
      vertex.setFaults({ transportFaults: [] });
    }
    expect(a.status).toBe(504);
    const jobId = a.headers.get('x-image-job-id')!;
    const job = await call(`${svc.url}/v1/jobs/${jobId}`, { key: user.apiKey });
    expect(job.body).toMatchObject({ status: 'failed', image_count: 0, unsigned_urls: [], content_url: null });
    expect(job.body.billing).toEqual({ pre_deducted: 2 * PRICE, settled: 0, refunded: 2 * PRICE });
    const content = await call(`${svc.url}/v1/jobs/${jobId}/content`, { key: user.apiKey });
    expect([content.status, expectEnvelope(content).code]).toEqual([400, 'invalid_index']);
    // The image stored while the other call hung is deleted with it.
    await eventually(async () =>
      (await svc.runtime.services.store.list(`tenants/${user.id}/jobs/`)).length === 0 ? true : null,
    );
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START);
    expect(l.sum).toBe(l.quota);
  });

  it('asks again for the image alone when the model answers in words only', async () => {
    const user = await newUser();
    const vertex = svc.runtime.emulators!.vertex;
    const calls = vertex.callCount('GenerateContent');
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'describe it [emulate:textonly]' });
    expect([a.status, a.text.slice(0, 200)]).toEqual([200, a.text.slice(0, 200)]);
    expect(decodePng(a.body.data[0].b64_json)).toEqual({ width: 1024, height: 1024 });
    // The second call asked for the image alone: no text came with it.
    expect(a.body.data[0].revised_prompt).toBeUndefined();
    expect(vertex.callCount('GenerateContent')).toBe(calls + 2);
    expect((await ledger(svc, user.id)).quota).toBe(START - PRICE);
  });

  it('refuses a request costing more than the quota left, charging nothing and calling nobody', async () => {
    const user = await newUser(4999);
    const calls = svc.runtime.emulators!.vertex.callCount('GenerateContent');
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'a cube' });
    expect(a.status).toBe(402);
    expect(expectEnvelope(a).code).toBe('insufficient_quota');
    expect((await ledger(svc, user.id)).quota).toBe(4999);
    expect(svc.runtime.emulators!.vertex.callCount('GenerateContent')).toBe(calls);
  });

  it('works with the official openai SDK, b64 and url', async () => {
    const user = await newUser();
    const client = new OpenAI({ apiKey: user.apiKey, baseURL: `${svc.url}/v1` });
    const r = await client.images.generate({ model: MODEL, prompt: 'a blue sphere' });
    expect(decodePng(r.data![0].b64_json!)).toEqual({ width: 1024, height: 1024 });
    const u = await client.images.generate({ model: MODEL, prompt: 'a blue sphere', response_format: 'url' });
    const img = await fetch(u.data![0].url!);
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
  });
});

describe('ledger', () => {
  it('holds for every user after all of the above: quota = Σ log deltas', async () => {
    expect(users.length).toBeGreaterThan(5);
    for (const user of users) {
      const l = await ledger(svc, user.id);
      expect([user.id, l.sum]).toEqual([user.id, l.quota]);
    }
  });
});
