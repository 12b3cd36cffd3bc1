import { afterAll, afterEach, beforeAll, describe, expect, it, jest } from '@jest/globals';
import OpenAI, { toFile } from 'openai';
import { generateImage } from '../../src/emulator/image-generator.ts';
import { encodePng } from '../../src/emulator/png.ts';
import { decodePng, eventually, ledger } from '../support/batches.ts';
import { type Answer, call, expectEnvelope, form, PNG_1x1 } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * Edits, reference images, bad input, Vertex retries, partial failures, the per-user cap and
 * abandoned requests of the sync image endpoints, over HTTP against the real service, Postgres
 * and the Vertex emulator's online prediction. One service: at most one sync request per user at
 * once (USER_MAX_CONCURRENT_REQUESTS=1), `[emulate:slow]` calls take a second more.
 */
let svc: TestService;
const MODEL = 'gemini-2.5-flash-image';
const PRICE = 5000; // 1K, multiplier 1
const PRO = 'gemini-3-pro-image-preview'; // multiplier 2
const START = 100_000;
const users: Array<{ id: number; apiKey: string }> = [];

beforeAll(async () => {
  svc = await startTestService({
    VERTEX_EMULATOR_ONLINE_MS: '20',
    VERTEX_EMULATOR_SLOW_MS: '1000',
    SYNC_TIMEOUT_MS: '8000',
    USER_MAX_CONCURRENT_REQUESTS: '1',
  });
  // The first request of a process is slow (connections, code paths): made here, not in a test.
  const warm = await newUser();
  expect((await generate(warm.apiKey, { model: MODEL, prompt: 'warm-up' })).status).toBe(200);
});
afterAll(async () => {
  await svc?.stop();
});
afterEach(() => {
  svc?.runtime.emulators?.vertex.setFaults({ transportFaults: [] });
});

async function newUser(quota = START) {
  const user = await svc.createUser(quota);
  users.push(user);
  return user;
}

/** A solid-colour PNG of its own bytes (the emulator derives its answer from each reference image). */
function png(width: number, height: number, rgb: [number, number, number]): Buffer {
  const row = Buffer.concat([Buffer.from([0]), ...Array.from({ length: width }, () => Buffer.from(rgb))]);
  return encodePng(width, height, Buffer.concat(Array.from({ length: height }, () => row)));
}
const RED = png(16, 16, [220, 20, 20]);
const GREEN = png(16, 16, [20, 200, 40]);
const BLUE = png(24, 16, [20, 40, 230]);

type Field = Parameters<typeof form>[0][number];
const file = (data: Buffer, filename = 'ref.png', type = 'image/png'): Field[1] => ({ data, filename, type });

const generate = (key: string, json: unknown, query = '') =>
  call(`${svc.url}/v1/images/generations${query}`, { method: 'POST', key, json });
const edit = (key: string, fields: Field[], query = '') =>
  call(`${svc.url}/v1/images/edits${query}`, { method: 'POST', key, body: form(fields) });

async function uploadVision(key: string, data: Buffer): Promise<string> {
  const a = await call(`${svc.url}/v1/files`, {
    method: 'POST',
    key,
    body: form([
      ['purpose', 'vision'],
      ['file', file(data)],
    ]),
  });
  expect(a.status).toBe(200);
  return a.body.id;
}

const images = (a: Answer): Buffer[] => a.body.data.map((d: { b64_json: string }) => Buffer.from(d.b64_json, 'base64'));

function expectError(a: Answer, status: number, code: string, param?: string | null) {
  if (a.status !== status) throw new Error(`expected ${status} ${code}, got ${a.status}: ${a.text.slice(0, 300)}`);
  const e = expectEnvelope(a);
  expect(e.code).toBe(code);
  if (param !== undefined) expect(e.param).toBe(param);
}

/** Nothing was charged or recorded: the quota is untouched, the only log row the top-up, no job made. */
async function expectUntouched(user: { id: number; apiKey: string }, quota = START) {
  const l = await ledger(svc, user.id);
  expect(l.quota).toBe(quota);
  expect(l.used).toBe(0);
  expect(l.logs.map((r) => r.type)).toEqual(['topup']);
  const jobs = await call(`${svc.url}/v1/jobs`, { key: user.apiKey });
  expect(jobs.body.data).toEqual([]);
  // The reference images of refused edits were not kept.
  expect(await storedJobIds(user.id)).toEqual([]);
}

/** The image jobs that have objects (inputs, images) in the store for this user. */
async function storedJobIds(userId: number): Promise<string[]> {
  const objects = await svc.runtime.services.store.list(`tenants/${userId}/jobs/`);
  return [...new Set(objects.map((o) => o.key.split('/')[3]))].sort();
}

async function jobLogs(jobId: string) {
  const { body } = await svc.admin('GET', `/admin/logs?image_job_id=${jobId}`);
  return body.data as Array<{ type: string; quota_delta: number; image_job_id: string; user_id: number }>;
}

describe('POST /v1/images/edits', () => {
  it('edits one uploaded image into n images, charged n × the sync price', async () => {
    const user = await newUser();
    const a = await edit(user.apiKey, [
      ['image', file(RED)],
      ['prompt', 'make it a watercolour'],
      ['model', MODEL],
      ['n', '2'],
      ['size', '1024x1024'],
    ]);
    expect(a.status).toBe(200);
    expect(a.body.data).toHaveLength(2);
    for (const d of a.body.data) expect(decodePng(d.b64_json)).toEqual({ width: 1024, height: 1024 });
    // The reference image is counted as image input tokens.
    expect(a.body.usage.input_tokens_details.image_tokens).toBeGreaterThan(0);
    const jobId = a.headers.get('x-image-job-id')!;
    expect(jobId).toMatch(/^img_/);
    const job = await call(`${svc.url}/v1/jobs/${jobId}`, { key: user.apiKey });
    // b64_json images are answered, not kept: the job records the bill, not the pictures.
    expect(job.body).toMatchObject({ status: 'succeeded', operation: 'edit', mode: 'sync', n: 2 });
    expect(job.body.billing).toEqual({ pre_deducted: 2 * PRICE, settled: 2 * PRICE, refunded: 0 });
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - 2 * PRICE);
    expect(l.used).toBe(2 * PRICE);
    expect(l.sum).toBe(l.quota);
  });

  it('takes several images as `image[]` or as repeated `image` (the same request), and they shape the result', async () => {
    const user = await newUser();
    const base: Field[] = [
      ['prompt', 'a collage'],
      ['model', MODEL],
    ];
    const brackets = await edit(user.apiKey, [['image[]', file(RED)], ['image[]', file(GREEN, 'g.png')], ...base]);
    expect(brackets.status).toBe(200);
    const repeated = await edit(user.apiKey, [['image', file(RED)], ['image', file(GREEN, 'g.png')], ...base]);
    expect(repeated.status).toBe(200);
    const one = await edit(user.apiKey, [['image', file(RED)], ...base]);
    expect(one.status).toBe(200);
    const other = await edit(user.apiKey, [['image', file(BLUE)], ...base]);
    expect(other.status).toBe(200);
    const none = await generate(user.apiKey, { model: MODEL, prompt: 'a collage' });
    expect(none.status).toBe(200);
    const [b, r, o, x, g] = [brackets, repeated, one, other, none].map((a) => images(a)[0]);
    expect(b.equals(r)).toBe(true);
    expect(b.equals(o)).toBe(false);
    expect(o.equals(x)).toBe(false);
    expect(o.equals(g)).toBe(false);
    expect(b.equals(g)).toBe(false);
    expect(brackets.body.usage.input_tokens_details.image_tokens).toBe(
      2 * one.body.usage.input_tokens_details.image_tokens,
    );
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - 5 * PRICE);
    expect(l.sum).toBe(l.quota);
  });

  it('takes a mask, which changes the result', async () => {
    const user = await newUser();
    const base: Field[] = [
      ['image', file(RED)],
      ['prompt', 'a hat in the clear area'],
      ['model', MODEL],
    ];
    const masked = await edit(user.apiKey, [...base, ['mask', file(PNG_1x1, 'mask.png')]]);
    expect(masked.status).toBe(200);
    expect(masked.body.data).toHaveLength(1);
    const plain = await edit(user.apiKey, base);
    expect(plain.status).toBe(200);
    expect(images(masked)[0].equals(images(plain)[0])).toBe(false);
    expect(masked.body.usage.input_tokens_details.image_tokens).toBeGreaterThan(
      plain.body.usage.input_tokens_details.image_tokens,
    );
    // The mask is not a reference image: it is not counted against the model's limit of 3.
    const full = await edit(user.apiKey, [
      ['image[]', file(RED)],
      ['image[]', file(GREEN)],
      ['image[]', file(BLUE)],
      ['mask', file(PNG_1x1, 'mask.png')],
      ['prompt', 'three and a mask'],
      ['model', MODEL],
    ]);
    expect(full.status).toBe(200);
    expect((await ledger(svc, user.id)).quota).toBe(START - 3 * PRICE);
  });

  it('takes vision files by id: `image_file_ids[]` in an edit, `image_file_ids` in a generation', async () => {
    const user = await newUser();
    const green = await uploadVision(user.apiKey, GREEN);
    const blue = await uploadVision(user.apiKey, BLUE);
    // Uploaded and by id: the same reference images, the same picture.
    const uploaded = await edit(user.apiKey, [
      ['image', file(GREEN)],
      ['prompt', 'in a frame'],
      ['model', MODEL],
    ]);
    const byId = await edit(user.apiKey, [
      ['image_file_ids[]', green],
      ['prompt', 'in a frame'],
      ['model', MODEL],
    ]);
    expect(byId.status).toBe(200);
    expect(images(byId)[0].equals(images(uploaded)[0])).toBe(true);
    const both = await edit(user.apiKey, [
      ['image', file(RED)],
      ['image_file_ids[]', green],
      ['image_file_ids[]', blue],
      ['prompt', 'in a frame'],
      ['model', MODEL],
    ]);
    expect(both.status).toBe(200);
    expect(images(both)[0].equals(images(byId)[0])).toBe(false);

    const gen = await generate(user.apiKey, { model: MODEL, prompt: 'in a frame', image_file_ids: [green] });
    expect(gen.status).toBe(200);
    expect(images(gen)[0].equals(images(byId)[0])).toBe(true);
    const plain = await generate(user.apiKey, { model: MODEL, prompt: 'in a frame' });
    expect(images(gen)[0].equals(images(plain)[0])).toBe(false);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - 5 * PRICE);
    expect(l.sum).toBe(l.quota);
  });

  it('takes one vision file id as `image_file_id`, or as a plain `image_file_ids` field', async () => {
    const user = await newUser();
    const green = await uploadVision(user.apiKey, GREEN);
    const base: Field[] = [
      ['prompt', 'in a frame'],
      ['model', MODEL],
    ];
    const brackets = await edit(user.apiKey, [['image_file_ids[]', green], ...base]);
    const plain = await edit(user.apiKey, [['image_file_ids', green], ...base]);
    const single = await edit(user.apiKey, [['image_file_id', green], ...base]);
    const gen = await generate(user.apiKey, { model: MODEL, prompt: 'in a frame', image_file_id: green });
    for (const a of [brackets, plain, single, gen])
      expect([a.status, a.text.slice(0, 200)]).toEqual([200, a.text.slice(0, 200)]);
    const [b, p, o, g] = [brackets, plain, single, gen].map((a) => images(a)[0]);
    expect(p.equals(b) && o.equals(b) && g.equals(b)).toBe(true);
    expect((await ledger(svc, user.id)).quota).toBe(START - 4 * PRICE);
  });

  it('edits JPEG and WebP uploads as well as PNG', async () => {
    const user = await newUser();
    const jpeg = (await generateImage({ width: 32, height: 24, seed: 'jpeg ref', mimeType: 'image/jpeg' })).data;
    const webp = (await generateImage({ width: 32, height: 24, seed: 'webp ref', mimeType: 'image/webp' })).data;
    const results: Buffer[] = [];
    for (const [data, name, type] of [
      [jpeg, 'ref.jpg', 'image/jpeg'],
      [webp, 'ref.webp', 'image/webp'],
    ] as const) {
      const a = await edit(user.apiKey, [
        ['image', file(data, name, type)],
        ['prompt', 'as a postcard'],
        ['model', MODEL],
      ]);
      expect([a.status, a.text.slice(0, 200)]).toEqual([200, a.text.slice(0, 200)]);
      expect(a.body.usage.input_tokens_details.image_tokens).toBeGreaterThan(0);
      results.push(images(a)[0]);
    }
    // Each reference reached the model: different pictures in, different pictures out.
    expect(results[0].equals(results[1])).toBe(false);
    expect((await ledger(svc, user.id)).quota).toBe(START - 2 * PRICE);
  });

  it("refuses another user's file id with 404 file_not_found, charging nothing", async () => {
    const owner = await newUser();
    const other = await newUser();
    const fileId = await uploadVision(owner.apiKey, RED);
    const a = await edit(other.apiKey, [
      ['image_file_ids[]', fileId],
      ['prompt', 'steal it'],
      ['model', MODEL],
    ]);
    expectError(a, 404, 'file_not_found', 'image_file_ids');
    const b = await generate(other.apiKey, { model: MODEL, prompt: 'steal it', image_file_ids: [fileId] });
    expectError(b, 404, 'file_not_found', 'image_file_ids');
    const c = await edit(other.apiKey, [
      ['image', file(GREEN)],
      ['image_file_ids[]', 'file_doesnotexist000000000000'],
      ['prompt', 'x'],
      ['model', MODEL],
    ]);
    expectError(c, 404, 'file_not_found');
    await expectUntouched(other);
  });

  it('refuses an edit without an image, with a non-image, or with more images than the model takes', async () => {
    const user = await newUser();
    const noImage = await edit(user.apiKey, [
      ['prompt', 'edit nothing'],
      ['model', MODEL],
    ]);
    expectError(noImage, 400, 'missing_required_parameter', 'image');
    const text = await edit(user.apiKey, [
      ['image', file(Buffer.from('just some text, not a picture'), 'notes.png', 'image/png')],
      ['prompt', 'edit this'],
      ['model', MODEL],
    ]);
    expectError(text, 400, 'invalid_image');
    const textMask = await edit(user.apiKey, [
      ['image', file(RED)],
      ['mask', file(Buffer.from('not a mask either'), 'mask.png', 'image/png')],
      ['prompt', 'edit this'],
      ['model', MODEL],
    ]);
    expectError(textMask, 400, 'invalid_image');
    const badQuery = await edit(
      user.apiKey,
      [
        ['image', file(RED)],
        ['prompt', 'edit this'],
        ['model', MODEL],
      ],
      '?async=maybe',
    );
    expectError(badQuery, 400, 'invalid_query', 'async');
    const four = await edit(user.apiKey, [
      ['image[]', file(RED)],
      ['image[]', file(GREEN)],
      ['image[]', file(BLUE)],
      ['image[]', file(PNG_1x1)],
      ['prompt', 'too many'],
      ['model', MODEL],
    ]);
    expectError(four, 400, 'too_many_reference_images', 'image');
    // Uploads and ids count together.
    const fileId = await uploadVision(user.apiKey, BLUE);
    const mixed = await edit(user.apiKey, [
      ['image', file(RED)],
      ['image', file(GREEN)],
      ['image_file_ids[]', fileId],
      ['image_file_ids[]', fileId],
      ['prompt', 'too many'],
      ['model', MODEL],
    ]);
    expectError(mixed, 400, 'too_many_reference_images');
    const gen = await generate(user.apiKey, {
      model: MODEL,
      prompt: 'too many',
      image_file_ids: [fileId, fileId, fileId, fileId],
    });
    expectError(gen, 400, 'too_many_reference_images', 'image_file_ids');
    await expectUntouched(user);
  });
});

describe('prices', () => {
  // 4K on the pro model: a large image to make; the 8 s deadline of this file leaves room under load.
  it('prices by size tier and model: 4K and the model multiplier, image_config and the OpenAI fields', async () => {
    const user = await newUser(200_000);
    const a = await generate(user.apiKey, {
      model: PRO,
      prompt: 'a wide valley',
      image_config: { aspect_ratio: '16:9', image_size: '4K' },
      quality: 'high',
      style: 'natural',
      background: 'opaque',
      moderation: 'low',
      user: 'end-user-7',
    });
    expect([a.status, a.text.slice(0, 200)]).toEqual([200, a.text.slice(0, 200)]);
    expect(decodePng(a.body.data[0].b64_json)).toEqual({ width: 5376, height: 3072 });
    const b = await generate(user.apiKey, {
      model: PRO,
      prompt: 'a small valley',
      size: '1024x1024',
      output_format: 'jpeg',
      output_compression: 60,
    });
    expect([b.status, b.text.slice(0, 200)]).toEqual([200, b.text.slice(0, 200)]);
    const jpeg = Buffer.from(b.body.data[0].b64_json, 'base64');
    expect(jpeg.subarray(0, 3)).toEqual(Buffer.from([0xff, 0xd8, 0xff]));
    const l = await ledger(svc, user.id);
    // 4K on the pro model: 12,500 × 2; 1K: 5,000 × 2.
    expect(l.quota).toBe(200_000 - 25_000 - 10_000);
    expect(l.sum).toBe(l.quota);
  });
});

describe('not enough quota', () => {
  it('refuses every way of buying an image before any Vertex call, keeping nothing', async () => {
    const user = await newUser(PRICE - 1);
    const vertex = svc.runtime.emulators!.vertex;
    const calls = vertex.callCount('GenerateContent');
    const editFields: Field[] = [
      ['image', file(RED)],
      ['prompt', 'too dear'],
      ['model', MODEL],
    ];
    expectError(
      await generate(user.apiKey, { model: MODEL, prompt: 'too dear' }, '?async=true'),
      402,
      'insufficient_quota',
    );
    expectError(await edit(user.apiKey, editFields), 402, 'insufficient_quota');
    expectError(await edit(user.apiKey, editFields, '?async=true'), 402, 'insufficient_quota');
    const task = await call(`${svc.url}/v1/aiart/openai/image/submit`, {
      method: 'POST',
      key: user.apiKey,
      json: { model: MODEL, prompt: 'too dear', images: [`data:image/png;base64,${RED.toString('base64')}`] },
    });
    expect([task.status, task.body.code, task.body.data]).toEqual([402, 'insufficient_quota', null]);
    expect(vertex.callCount('GenerateContent')).toBe(calls);
    await expectUntouched(user, PRICE - 1);
  });
});

describe('the official OpenAI SDK', () => {
  const sdk = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });

  it('images.edit with one image and with an array of images', async () => {
    const user = await newUser();
    const client = sdk(user.apiKey);
    const one = await client.images.edit({
      image: await toFile(RED, 'red.png', { type: 'image/png' }),
      prompt: 'a red kite',
      model: MODEL,
    });
    expect(one.data).toHaveLength(1);
    expect(decodePng(one.data![0].b64_json!)).toEqual({ width: 1024, height: 1024 });
    const many = await client.images.edit({
      image: [await toFile(RED, 'red.png', { type: 'image/png' }), await toFile(GREEN, 'green.png')],
      prompt: 'a red kite',
      model: MODEL,
      n: 2,
      size: '1536x1024',
    });
    expect(many.data).toHaveLength(2);
    expect(decodePng(many.data![0].b64_json!)).toEqual({ width: 1248, height: 832 });
    expect(many.data![0].b64_json).not.toBe(one.data![0].b64_json);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - 3 * PRICE);
    expect(l.sum).toBe(l.quota);
  });

  it("answers response_format 'url' with links that work without auth; a tampered one is 403 invalid_link", async () => {
    const user = await newUser();
    const client = sdk(user.apiKey);
    const r = await client.images.edit({
      image: await toFile(BLUE, 'blue.png', { type: 'image/png' }),
      prompt: 'a blue boat',
      model: MODEL,
      response_format: 'url',
    });
    const url = r.data![0].url!;
    expect(url).toBeTruthy();
    expect(r.data![0].b64_json).toBeUndefined();
    const img = await fetch(url);
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
    const bytes = Buffer.from(await img.arrayBuffer());
    expect(decodePng(bytes.toString('base64'))).toEqual({ width: 1024, height: 1024 });
    const tampered = new URL(url);
    const signature = tampered.searchParams.get('signature')!;
    tampered.searchParams.set('signature', (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1));
    expectError(await call(tampered.toString()), 403, 'invalid_link');
    const otherImage = new URL(url);
    otherImage.pathname = otherImage.pathname.replace(/\/0\.png$/, '/1.png');
    expect(otherImage.pathname).not.toBe(new URL(url).pathname);
    expectError(await call(otherImage.toString()), 403, 'invalid_link');
    // url-mode images are kept with the job, which links them too.
    const [job] = (await call(`${svc.url}/v1/jobs`, { key: user.apiKey })).body.data;
    expect(job).toMatchObject({ status: 'succeeded', operation: 'edit', image_count: 1 });
    expect((await fetch(job.unsigned_urls[0])).status).toBe(200);
  });
});

describe('bad input on /v1/images/generations', () => {
  it('answers each mistake with its code and status, and charges nothing', async () => {
    const user = await newUser();
    const cases: Array<[unknown, number, string, string | null | undefined, string?]> = [
      [{ model: MODEL, prompt: 'a cube', colour: 'red' }, 400, 'unknown_parameter', 'colour'],
      [{ model: MODEL, prompt: 'a cube', n: 11 }, 400, 'invalid_value', 'n'],
      [{ model: MODEL, prompt: 'a cube', n: 0 }, 400, 'invalid_value', 'n'],
      [{ model: MODEL, prompt: 'a cube', size: '2048x2048' }, 400, 'unsupported_size', 'size'],
      [{ model: MODEL, prompt: 'a cube', size: '1000x100' }, 400, 'unsupported_size', 'size'],
      [{ model: MODEL, prompt: '' }, 400, 'invalid_prompt', 'prompt'],
      [{ model: MODEL, prompt: '   \n\u200b ' }, 400, 'invalid_prompt', 'prompt'],
      [{ model: 'gemini-9-imaginary', prompt: 'a cube' }, 404, 'model_not_found', 'model'],
      [{ model: MODEL, prompt: 'a cube', n: '2' }, 400, 'invalid_type', 'n'],
      [{ model: MODEL, prompt: 'a cube', image_file_ids: 'file_abc' }, 400, 'invalid_type', 'image_file_ids'],
      [{ model: MODEL, prompt: 'a cube', size: 1024 }, 400, 'unsupported_size', 'size'],
      // A prompt that is not text is a bad prompt (as in a batch line).
      [{ model: MODEL, prompt: 42 }, 400, 'invalid_prompt', 'prompt'],
      [{ model: MODEL, prompt: 'a cube' }, 400, 'invalid_query', 'async', '?async=maybe'],
    ];
    for (const [body, status, code, param, query] of cases) {
      const a = await generate(user.apiKey, body, query);
      try {
        expectError(a, status, code, param);
      } catch (err) {
        throw new Error(`${JSON.stringify(body)}${query ?? ''}: ${(err as Error).message}`);
      }
    }
    const noAuth = await call(`${svc.url}/v1/images/generations`, {
      method: 'POST',
      json: { model: MODEL, prompt: 'a cube' },
    });
    expectError(noAuth, 401, 'missing_api_key');
    const badKey = await generate('sk-not-a-real-key-0000000000000000', { model: MODEL, prompt: 'a cube' });
    expect(badKey.status).toBe(401);
    await expectUntouched(user);
  });
});

describe('Vertex retries', () => {
  const fault = (...faults: Array<[number, 429 | 500 | 503 | 504 | 'hang']>) =>
    svc.runtime.emulators!.vertex.setFaults({
      transportFaults: faults.map(([call, status]) => ({ method: 'GenerateContent', call, status })),
    });

  it('retries a 503 and a 429, answering with one image charged once', async () => {
    const user = await newUser();
    fault([1, 503]);
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'after a 503' });
    expect(a.status).toBe(200);
    expect(a.body.data).toHaveLength(1);
    fault([1, 429], [2, 503]);
    const b = await generate(user.apiKey, { model: MODEL, prompt: 'after a 429 and a 503' });
    expect(b.status).toBe(200);
    expect(b.body.data).toHaveLength(1);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - 2 * PRICE);
    expect(l.logs.map((r) => r.type).sort()).toEqual(['pre_deduction', 'pre_deduction', 'topup']);
    expect(l.sum).toBe(l.quota);
  });

  it('tries again after a 504 and after a call lost on the way (no answer in VERTEX_CALL_TIMEOUT_MS)', async () => {
    const user = await newUser();
    fault([1, 504]);
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'after a 504' });
    expect([a.status, a.text.slice(0, 200)]).toEqual([200, a.text.slice(0, 200)]);
    const l = await ledger(svc, user.id);
    expect([l.quota, l.sum]).toEqual([START - PRICE, START - PRICE]);

    // A service of its own: a call is given up after 2 s there (the default is SYNC_TIMEOUT_MS).
    const quick = await startTestService({
      VERTEX_EMULATOR_ONLINE_MS: '20',
      SYNC_TIMEOUT_MS: '8000',
      VERTEX_CALL_TIMEOUT_MS: '2s',
    });
    try {
      const other = await quick.createUser(START);
      quick.runtime.emulators!.vertex.setFaults({
        transportFaults: [{ method: 'GenerateContent', call: 1, status: 'hang' }],
      });
      const started = Date.now();
      const b = await call(`${quick.url}/v1/images/generations`, {
        method: 'POST',
        key: other.apiKey,
        json: { model: MODEL, prompt: 'after a lost call' },
      });
      expect([b.status, b.text.slice(0, 200)]).toEqual([200, b.text.slice(0, 200)]);
      expect(b.body.data).toHaveLength(1);
      // Given up at 2 s and made by the second try, long before the request's own 8 s.
      expect(Date.now() - started).toBeGreaterThanOrEqual(1950);
      expect(quick.runtime.emulators!.vertex.callCount('GenerateContent')).toBe(2);
      const m = await ledger(quick, other.id);
      expect([m.quota, m.sum, m.logs.map((r) => r.type).sort()]).toEqual([
        START - PRICE,
        START - PRICE,
        ['pre_deduction', 'topup'],
      ]);
    } finally {
      await quick.stop();
    }
  });

  it('gives up after 4 attempts with 502 upstream_error, refunded in full', async () => {
    const user = await newUser();
    fault([1, 503], [2, 503], [3, 429], [4, 503]);
    // The jitter pinned at its top: the waits between the 4 tries are 250, 500 and 1000 ms.
    const jitter = jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const started = Date.now();
    let a: Answer;
    try {
      a = await generate(user.apiKey, { model: MODEL, prompt: 'never available' });
    } finally {
      jitter.mockRestore();
    }
    const elapsed = Date.now() - started;
    expectError(a, 502, 'upstream_error');
    expect(expectEnvelope(a).message).toMatch(/gave up after retries/);
    // It backed off between tries, and gave up at once after the last (no 4th wait of 2 s).
    expect(elapsed).toBeGreaterThanOrEqual(1740);
    expect(elapsed).toBeLessThan(3000);
    // The error answer names the job that records its refund.
    const jobId = a.headers.get('x-image-job-id');
    const jobs = await call(`${svc.url}/v1/jobs`, { key: user.apiKey });
    expect(jobs.body.data).toHaveLength(1);
    const job = jobs.body.data[0];
    expect(job.id).toBe(jobId);
    expect(job).toMatchObject({ status: 'failed', image_count: 0 });
    expect(job.billing).toEqual({ pre_deducted: PRICE, settled: 0, refunded: PRICE });
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START);
    expect(l.used).toBe(0);
    expect(l.sum).toBe(l.quota);
  });
});

describe('partial failure', () => {
  it('answers the images made, charges only those and refunds the rest against the job', async () => {
    const user = await newUser();
    // 500 is not retried: two of the three calls fail for good.
    svc.runtime.emulators!.vertex.setFaults({
      transportFaults: [
        { method: 'GenerateContent', call: 1, status: 500 },
        { method: 'GenerateContent', call: 3, status: 500 },
      ],
    });
    const a = await generate(user.apiKey, { model: MODEL, prompt: 'three, please', n: 3 });
    expect(a.status).toBe(200);
    expect(a.body.data).toHaveLength(1);
    expect(decodePng(a.body.data[0].b64_json)).toEqual({ width: 1024, height: 1024 });
    const jobId = a.headers.get('x-image-job-id')!;
    expect(jobId).toMatch(/^img_/);
    const job = await call(`${svc.url}/v1/jobs/${jobId}`, { key: user.apiKey });
    expect(job.status).toBe(200);
    expect(job.body).toMatchObject({ id: jobId, status: 'succeeded', n: 3 });
    expect(job.body.billing).toEqual({ pre_deducted: 3 * PRICE, settled: PRICE, refunded: 2 * PRICE });
    expect(job.body.usage.cost_credits).toBe(PRICE);
    const logs = await jobLogs(jobId);
    expect(logs.map((r) => [r.type, r.quota_delta]).sort()).toEqual([
      ['difference', 2 * PRICE],
      ['pre_deduction', -3 * PRICE],
    ]);
    for (const r of logs) expect(r).toMatchObject({ image_job_id: jobId, user_id: user.id });
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - PRICE);
    expect(l.used).toBe(PRICE);
    expect(l.sum).toBe(l.quota);
  });
});

describe('concurrency cap (USER_MAX_CONCURRENT_REQUESTS=1)', () => {
  it('refuses a second request of the same user with 429 and Retry-After; other users go on', async () => {
    const busy = await newUser();
    const other = await newUser();
    const first = generate(busy.apiKey, { model: MODEL, prompt: 'a slow one [emulate:slow]' });
    await eventually(async () => {
      const jobs = await call(`${svc.url}/v1/jobs`, { key: busy.apiKey });
      return jobs.body.data.length ? jobs.body.data : null;
    });
    const second = await generate(busy.apiKey, { model: MODEL, prompt: 'me too' });
    expectError(second, 429, 'rate_limit_exceeded');
    expect(second.headers.get('retry-after')).toMatch(/^\d+$/);
    const edited = await edit(busy.apiKey, [
      ['image', file(RED)],
      ['prompt', 'me too'],
      ['model', MODEL],
    ]);
    expectError(edited, 429, 'rate_limit_exceeded');
    const unaffected = await generate(other.apiKey, { model: MODEL, prompt: 'not waiting' });
    expect(unaffected.status).toBe(200);
    // Async jobs are not sync requests: the cap does not apply to them.
    const queued = await generate(busy.apiKey, { model: MODEL, prompt: 'later' }, '?async=true');
    expect(queued.status).toBe(202);
    expect((await first).status).toBe(200);
    await eventually(async () => {
      const job = await call(`${svc.url}/v1/jobs/${queued.body.id}`, { key: busy.apiKey });
      return ['succeeded', 'failed'].includes(job.body.status) ? job.body : null;
    });
    // Only the slow request and the async job were charged; the refused ones left no job.
    const jobs = (await call(`${svc.url}/v1/jobs`, { key: busy.apiKey })).body.data;
    expect(jobs).toHaveLength(2);
    // The refused edit's upload is gone; only the async job keeps its image.
    expect(await storedJobIds(busy.id)).toEqual([queued.body.id]);
    const l = await ledger(svc, busy.id);
    expect(l.quota).toBe(START - 2 * PRICE);
    expect(l.sum).toBe(l.quota);
    // Once the first has ended, the user may send again.
    expect((await generate(busy.apiKey, { model: MODEL, prompt: 'now' })).status).toBe(200);
  });
});

describe('a client that hangs up', () => {
  it('does not stop the job: it ends and is settled exactly', async () => {
    const user = await newUser();
    const controller = new AbortController();
    const sent = fetch(`${svc.url}/v1/images/generations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${user.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'nobody waits [emulate:slow]', n: 2 }),
      signal: controller.signal,
    }).catch((err: Error) => err);
    const running = await eventually(async () => {
      const jobs = await call(`${svc.url}/v1/jobs`, { key: user.apiKey });
      return jobs.body.data[0]?.status === 'running' ? jobs.body.data[0] : null;
    });
    controller.abort();
    expect(await sent).toMatchObject({ name: 'AbortError' });
    const ended = await eventually(async () => {
      const job = await call(`${svc.url}/v1/jobs/${running.id}`, { key: user.apiKey });
      return ['queued', 'running'].includes(job.body.status) ? null : job.body;
    });
    expect(ended).toMatchObject({ status: 'succeeded', n: 2 });
    expect(ended.billing).toEqual({ pre_deducted: 2 * PRICE, settled: 2 * PRICE, refunded: 0 });
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(START - ended.billing.settled);
    expect(l.sum).toBe(l.quota);
  });
});

describe('after everything', () => {
  it('holds the ledger invariant for every user: quota = Σ log deltas, used = what was taken', async () => {
    expect(users.length).toBeGreaterThan(10);
    for (const user of users) {
      // No job of anyone is still open.
      const jobs = (await call(`${svc.url}/v1/jobs?limit=100`, { key: user.apiKey })).body.data as Array<{
        status: string;
        billing: { settled: number | null };
      }>;
      expect(jobs.filter((j) => ['queued', 'running'].includes(j.status))).toEqual([]);
      const l = await ledger(svc, user.id);
      const topups = l.logs.filter((r) => r.type === 'topup').reduce((s, r) => s + r.quota_delta, 0);
      const taken = l.logs.filter((r) => r.type !== 'topup').reduce((s, r) => s - r.quota_delta, 0);
      expect(l.sum).toBe(l.quota);
      expect(l.used).toBe(taken);
      expect(l.quota + l.used).toBe(topups);
      // What the user paid is what their jobs settled.
      expect(l.used).toBe(jobs.reduce((s, j) => s + (j.billing.settled ?? 0), 0));
    }
  });
});
