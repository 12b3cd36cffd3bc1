import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { type Answer, call, expectEnvelope, form, imageLine, jsonl, PNG_1x1 } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * Malformed requests, each answered 4xx in the OpenAI error envelope with the right code
 * and param — and, over the whole table, nothing stored and nothing charged.
 */
let svc: TestService;
let db: pg.Pool;
let user: { id: number; apiKey: string };
let other: { id: number; apiKey: string };
let otherBatch: string;

beforeAll(async () => {
  svc = await startTestService({ ROLE: 'api', VISION_MAX_BYTES: '1024', BATCH_UPLOAD_MAX_BYTES: '4096' });
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
  user = await svc.createUser(50_000);
  other = await svc.createUser(50_000);
  const b = await call(`${svc.url}/v1/image-files`, {
    method: 'POST',
    key: other.apiKey,
    body: form([
      ['purpose', 'image_batch'],
      ['file', { data: jsonl([imageLine('x')]), filename: 'b.jsonl' }],
    ]),
  });
  otherBatch = b.body.id;
});
afterAll(async () => {
  await db?.end();
  await svc?.stop();
});

type Case = [name: string, send: () => Promise<Answer>, status: number, code: string, param?: string | null];

const png = { data: PNG_1x1, filename: 'a.png', type: 'image/png' };
const text = (s: string) => ({ data: s, filename: 'x.txt', type: 'text/plain' });
const raw = (headers: Record<string, string>, body: string) => () =>
  call(`${svc.url}/v1/image-files`, { method: 'POST', key: user.apiKey, headers, body });
const up = (fields: Parameters<typeof form>[0], key?: string) => () =>
  call(`${svc.url}/v1/image-files`, { method: 'POST', key: key ?? user.apiKey, body: form(fields) });
const get = (path: string, key?: string) => () => call(svc.url + path, { key: key ?? user.apiKey });

const cases: Case[] = [
  ['no Authorization header', () => call(`${svc.url}/v1/image-batches`), 401, 'missing_api_key', null],
  [
    'Authorization without Bearer',
    () => call(`${svc.url}/v1/image-batches`, { headers: { authorization: 'Basic abc' } }),
    401,
    'invalid_api_key',
    null,
  ],
  [
    'Bearer with an empty token',
    () => call(`${svc.url}/v1/image-batches`, { headers: { authorization: 'Bearer ' } }),
    401,
    'invalid_api_key',
    null,
  ],
  ['a malformed key', () => call(`${svc.url}/v1/image-batches`, { key: 'sk-!!' }), 401, 'invalid_api_key', null],
  [
    'upload as JSON instead of multipart',
    () => call(`${svc.url}/v1/image-files`, { method: 'POST', key: user.apiKey, json: { purpose: 'vision' } }),
    415,
    'invalid_content_type',
    null,
  ],
  ['multipart without a boundary', raw({ 'content-type': 'multipart/form-data' }, 'x'), 400, 'invalid_multipart'],
  [
    'truncated multipart body',
    raw(
      { 'content-type': 'multipart/form-data; boundary=XX' },
      '--XX\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision',
    ),
    400,
    'invalid_multipart',
  ],
  ['missing purpose', up([['file', png]]), 400, 'missing_purpose', 'purpose'],
  [
    'unknown purpose',
    up([
      ['purpose', 'fine-tune'],
      ['file', png],
    ]),
    400,
    'invalid_purpose',
    'purpose',
  ],
  [
    'purpose in the wrong case',
    up([
      ['purpose', 'VISION'],
      ['file', png],
    ]),
    400,
    'invalid_purpose',
    'purpose',
  ],
  ['missing file', up([['purpose', 'vision']]), 400, 'missing_file', 'file'],
  [
    'file in the wrong field',
    up([
      ['purpose', 'vision'],
      ['image', png],
    ]),
    400,
    'unexpected_file_field',
    'image',
  ],
  [
    'two files',
    up([
      ['purpose', 'vision'],
      ['file', png],
      ['file', png],
    ]),
    400,
    'too_many_files',
    'file',
  ],
  [
    'empty vision file',
    up([
      ['purpose', 'vision'],
      ['file', { data: Buffer.alloc(0), filename: 'e.png' }],
    ]),
    400,
    'empty_file',
    'file',
  ],
  [
    'vision file that is text',
    up([
      ['purpose', 'vision'],
      ['file', text('hello, not an image at all')],
    ]),
    400,
    'invalid_image',
    'file',
  ],
  [
    'vision file that is a GIF',
    up([
      ['purpose', 'vision'],
      ['file', { data: Buffer.from(`GIF89a${'x'.repeat(20)}`), filename: 'a.gif' }],
    ]),
    400,
    'invalid_image',
    'file',
  ],
  [
    'vision text file with the purpose after it',
    up([
      ['file', text('plain text, not an image')],
      ['purpose', 'vision'],
    ]),
    400,
    'invalid_image',
    'file',
  ],
  [
    'vision file over the limit with the purpose after it',
    up([
      ['file', { data: Buffer.concat([PNG_1x1, Buffer.alloc(2048)]), filename: 'b.png' }],
      ['purpose', 'vision'],
    ]),
    413,
    'file_too_large',
    'file',
  ],
  [
    'vision file of 3 bytes',
    up([
      ['purpose', 'vision'],
      ['file', { data: Buffer.from([0x89, 0x50, 0x4e]), filename: 'a.png' }],
    ]),
    400,
    'invalid_image',
    'file',
  ],
  [
    'vision file over VISION_MAX_BYTES',
    up([
      ['purpose', 'vision'],
      ['file', { data: Buffer.concat([PNG_1x1, Buffer.alloc(2048)]), filename: 'big.png' }],
    ]),
    413,
    'file_too_large',
    'file',
  ],
  [
    'empty batch file',
    up([
      ['purpose', 'image_batch'],
      ['file', text('')],
    ]),
    400,
    'empty_file',
    'file',
  ],
  [
    'batch file over BATCH_UPLOAD_MAX_BYTES',
    up([
      ['purpose', 'image_batch'],
      ['file', text('x'.repeat(5000))],
    ]),
    413,
    'file_too_large',
    'file',
  ],
  [
    'metadata that is not JSON',
    up([
      ['purpose', 'image_batch'],
      ['metadata', '{oops'],
      ['file', text(jsonl([imageLine('a')]))],
    ]),
    400,
    'invalid_metadata',
    'metadata',
  ],
  [
    'metadata with a number value',
    up([
      ['purpose', 'image_batch'],
      ['metadata', '{"a":1}'],
      ['file', text(jsonl([imageLine('a')]))],
    ]),
    400,
    'invalid_metadata',
    'metadata',
  ],
  ['batch id of the wrong shape', get('/v1/image-batches/not-a-batch'), 404, 'batch_not_found', 'batch_id'],
  ['unknown batch id', get('/v1/image-batches/batch_AAAAAAAAAAAAAAAAAAAAAAAA'), 404, 'batch_not_found', 'batch_id'],
  ["another user's batch", () => get(`/v1/image-batches/${otherBatch}`)(), 404, 'batch_not_found', 'batch_id'],
  [
    'cancel of an unknown batch',
    () => call(`${svc.url}/v1/image-batches/batch_x/cancel`, { method: 'POST', key: user.apiKey }),
    404,
    'batch_not_found',
    'batch_id',
  ],
  ['unknown file id', get('/v1/files/file_AAAAAAAAAAAAAAAAAAAAAAAA'), 404, 'file_not_found', 'file_id'],
  ['file id with SQL in it', get("/v1/files/file_1'%20OR%20'1'='1/content"), 404, 'file_not_found', 'file_id'],
  ['list limit 0', get('/v1/image-batches?limit=0'), 400, 'invalid_limit', 'limit'],
  ['list limit 101', get('/v1/image-batches?limit=101'), 400, 'invalid_limit', 'limit'],
  ['list limit not a number', get('/v1/image-batches?limit=ten'), 400, 'invalid_limit', 'limit'],
  ['list with an unknown status', get('/v1/image-batches?status=done'), 400, 'invalid_status', 'status'],
  [
    "list after another user's batch",
    () => get(`/v1/image-batches?after=${otherBatch}`)(),
    400,
    'invalid_cursor',
    'after',
  ],
  [
    'privacy body not JSON',
    () =>
      call(`${svc.url}/api/image-batch-privacy`, {
        method: 'PUT',
        key: user.apiKey,
        headers: { 'content-type': 'application/json' },
        body: '{accept:',
      }),
    400,
    'invalid_json',
    null,
  ],
  [
    'privacy accept false',
    () => call(`${svc.url}/api/image-batch-privacy`, { method: 'PUT', key: user.apiKey, json: { accept: false } }),
    400,
    'privacy_not_accepted',
    'accept',
  ],
  ['unknown route', get('/v1/nothing-here'), 404, 'route_not_found', null],
  [
    'admin top-up of a negative amount',
    () => svc.admin('POST', `/admin/users/${user.id}/topup`, { quota: -5 }) as Promise<Answer>,
    400,
    'invalid_quota',
    'quota',
  ],
  [
    'admin top-up of a fraction',
    () => svc.admin('POST', `/admin/users/${user.id}/topup`, { quota: 1.5 }) as Promise<Answer>,
    400,
    'invalid_quota',
    'quota',
  ],
  [
    'admin user id not a number',
    () => svc.admin('GET', '/admin/users/abc') as Promise<Answer>,
    400,
    'invalid_id',
    'id',
  ],
];

describe('bad input', () => {
  it(`has at least 25 cases (${cases.length})`, () => expect(cases.length).toBeGreaterThanOrEqual(25));

  // A rest parameter: jest reads a handler's arity to decide whether it takes `done`.
  it.each(cases)('%s', async (...row) => {
    const [, send, status, code, param] = row as Case;
    const a = await send();
    expect(a.status).toBe(status);
    const e = expectEnvelope(a);
    expect(e.code).toBe(code);
    if (param !== undefined) expect(e.param).toBe(param);
  });

  it('stored nothing and charged nothing', async () => {
    expect(await svc.runtime.services.store.list(`tenants/${user.id}/`)).toEqual([]);
    const { rows } = await db.query('SELECT count(*)::int AS n FROM files WHERE user_id = $1', [user.id]);
    expect(rows[0].n).toBe(0);
    const u = await svc.admin('GET', `/admin/users/${user.id}`);
    expect(u.body).toMatchObject({ quota: 50_000, used_quota: 0 });
    const logs = await svc.admin('GET', `/admin/logs?user_id=${user.id}`);
    expect(logs.body.data.map((l: { type: string }) => l.type)).toEqual(['topup']);
  });
});
