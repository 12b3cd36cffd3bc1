import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import OpenAI from 'openai';
import { decodePng, ledger } from '../support/batches.ts';
import { call, expectEnvelope } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/** Sync generations through the service and the emulator's online prediction, billed at the sync price. */
let svc: TestService;
const MODEL = 'gemini-2.5-flash-image';
const PRICE = 5000; // 1K, multiplier 1

beforeAll(async () => {
  svc = await startTestService({
    VERTEX_EMULATOR_ONLINE_MS: '30',
    VERTEX_EMULATOR_SLOW_MS: '3000',
    SYNC_TIMEOUT_MS: '1500',
  });
});
afterAll(async () => {
  await svc?.stop();
});

const generate = (key: string, json: unknown, query = '') =>
  call(`${svc.url}/v1/images/generations${query}`, { method: 'POST', key, json });

describe('POST /v1/images/generations (sync)', () => {
  it('answers the images inline and charges n × the sync price', async () => {
    const user = await svc.createUser(100_000);
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'a red cube', n: 2, size: '1536x1024' });
    expect(a.status).toBe(200);
    expect(a.body.data).toHaveLength(2);
    expect(decodePng(a.body.data[0].b64_json)).toEqual({ width: 1248, height: 832 });
    expect(a.body.usage.output_tokens).toBeGreaterThan(0);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000 - 2 * PRICE);
    expect(l.sum).toBe(l.quota);
  });

  it('refunds failed images, and all-failed is 502 with everything returned', async () => {
    const user = await svc.createUser(100_000);
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:fail]', n: 2 });
    expect(a.status).toBe(502);
    expect(expectEnvelope(a).code).toBe('upstream_error');
    const b = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:block]' });
    expect(b.status).toBe(400);
    expect(expectEnvelope(b).code).toBe('content_blocked');
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000);
    expect(l.sum).toBe(l.quota);
  });

  it('times out with 504 and a full refund', async () => {
    const user = await svc.createUser(100_000);
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'x [emulate:slow]' });
    expect(a.status).toBe(504);
    expect(expectEnvelope(a).code).toBe('timeout');
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000);
  });

  it('refuses a request costing more than the quota left, charging nothing', async () => {
    const user = await svc.createUser(4999);
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'a cube' });
    expect(a.status).toBe(402);
    expect(expectEnvelope(a).code).toBe('insufficient_quota');
    expect((await ledger(svc, user.id)).quota).toBe(4999);
  });

  it('works with the official openai SDK, b64 and url', async () => {
    const user = await svc.createUser(100_000);
    const client = new OpenAI({ apiKey: user.apiKey, baseURL: `${svc.url}/v1` });
    const r = await client.images.generate({ model: MODEL, prompt: 'a blue sphere' });
    expect(decodePng(r.data![0].b64_json!)).toEqual({ width: 1024, height: 1024 });
    const u = await client.images.generate({ model: MODEL, prompt: 'a blue sphere', response_format: 'url' });
    const img = await fetch(u.data![0].url!);
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
  });
});
