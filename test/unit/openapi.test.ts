import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from '@jest/globals';
import type { BatchRow } from '../../src/batches/batch-queries.ts';
import { HTTP_ERRORS } from '../../src/errors/codes.ts';
import { buildOpenApi } from '../../src/http/openapi.ts';
import { batchView } from '../../src/http/views.ts';
import { OpenApiChecker, type SeenResponse, takeViolations, watchResponses } from '../support/openapi-check.ts';

const checker = new OpenApiChecker();
const doc = checker.document as any;

const jsonAnswer = (method: string, path: string, status: number, body: unknown): SeenResponse => ({
  method,
  path,
  status,
  contentType: 'application/json; charset=utf-8',
  body: Buffer.from(JSON.stringify(body)),
});

const batchRow = (over: Partial<BatchRow> = {}): BatchRow => ({
  id: 'batch_abc',
  userId: 1,
  status: 'completed',
  outcome: 'completed',
  endpoint: '/v1/images/generations',
  inputFileId: 'file_in',
  outputFileId: 'file_out',
  errorFileId: null,
  model: 'gemini-2.5-flash-image',
  errors: null,
  metadata: { project: 'spring' },
  requestTotal: 2,
  requestCompleted: 2,
  requestFailed: 0,
  imageTotal: 2,
  imageSucceeded: 2,
  modelSnapshot: null,
  preDeducted: 5000,
  settled: 5000,
  refunded: 0,
  createdAt: new Date(1_795_254_600_000),
  inProgressAt: new Date(1_795_254_601_000),
  finalizingAt: new Date(1_795_254_602_000),
  completedAt: new Date(1_795_254_603_000),
  failedAt: null,
  expiredAt: null,
  cancellingAt: null,
  cancelledAt: null,
  expiresAt: new Date(1_795_341_000_000),
  completionWindow: '24h',
  outputExpiresSeconds: null,
  ...over,
});

const error = (code: string, type: string, param: string | null = null) => ({
  error: { message: 'm', type, code, param },
});

describe('the OpenAPI document', () => {
  it('is OpenAPI 3.1 with unique operation ids and every $ref resolvable', () => {
    expect(doc.openapi).toBe('3.1.0');
    const ids: string[] = [];
    for (const item of Object.values(doc.paths) as any[]) {
      for (const op of Object.values(item) as any[]) ids.push(op.operationId);
    }
    expect(new Set(ids).size).toBe(ids.length);
    const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
    expect(refs.length).toBeGreaterThan(50);
    for (const r of refs) {
      const target = JSON.parse(`{${r}}`).$ref as string;
      const found = target
        .slice(2)
        .split('/')
        .reduce((node: any, part) => node?.[part.replaceAll('~1', '/')], doc);
      expect([target, found !== undefined]).toEqual([target, true]);
    }
  });

  it('compiles every schema under ajv strict mode', () => {
    const compile = (pointer: string) => checker.schemaAt(pointer);
    for (const name of Object.keys(doc.components.schemas))
      expect(() => compile(`#/components/schemas/${name}`)).not.toThrow();
    for (const name of Object.keys(doc.components.responses).filter((n) => doc.components.responses[n].content)) {
      expect(() => compile(`#/components/responses/${name}/content/application~1json/schema`)).not.toThrow();
    }
  });

  it('answers each error code only with the statuses of the catalog', () => {
    for (const [code, spec] of Object.entries(HTTP_ERRORS)) {
      for (const status of [400, 401, 402, 403, 404, 409, 413, 415, 416, 422, 429, 500, 502, 503, 504]) {
        const schema = doc.components.responses[`Error${status}`].content['application/json'].schema;
        expect([code, status, schema.properties.error.properties.code.enum.includes(code)]).toEqual([
          code,
          status,
          (spec.statuses as readonly number[]).includes(status),
        ]);
      }
    }
  });

  it('names PUBLIC_URL as its server, else the relative root', () => {
    expect(buildOpenApi({ publicUrl: null }).servers).toEqual([{ url: '/' }]);
    expect(buildOpenApi({ publicUrl: 'https://images.example.com' }).servers).toEqual([
      { url: 'https://images.example.com' },
    ]);
  });
});

describe('the response checker', () => {
  it('accepts the batch object the views make, in every shape', () => {
    const shapes = [
      batchRow(),
      batchRow({ status: 'validating', outcome: null, model: null, metadata: null, settled: null, refunded: null }),
      batchRow({
        status: 'failed',
        errors: [
          { code: 'invalid_prompt', message: 'm', param: 'body.prompt', line: 3 },
          { code: 'too_many_errors', message: 'm', param: null, line: null },
        ],
      }),
    ];
    for (const row of shapes)
      expect(checker.check(jsonAnswer('GET', '/v1/batches/batch_abc', 200, batchView(row)))).toEqual([]);
  });

  it('fails an undocumented field, a wrong type and a missing field', () => {
    const view = batchView(batchRow());
    const extra = checker.check(jsonAnswer('GET', '/v1/image-batches/batch_abc', 200, { ...view, secret: 1 }));
    expect(extra.join()).toMatch(/must NOT have additional properties.*secret/);
    const wrongType = checker.check(jsonAnswer('GET', '/v1/batches/b', 200, { ...view, created_at: '2026-01-01' }));
    expect(wrongType.join()).toMatch(/\/created_at must be integer/);
    const { billing: _b, ...missing } = view;
    expect(checker.check(jsonAnswer('GET', '/v1/batches/b', 200, missing)).join()).toMatch(/billing/);
    const nested = { ...view, billing: { ...view.billing, discount: 3 } };
    expect(checker.check(jsonAnswer('GET', '/v1/batches/b', 200, nested)).join()).toMatch(/discount/);
  });

  it('fails a status the operation does not list, and an error code of another status', () => {
    const wrongStatus = checker.check(
      jsonAnswer('GET', '/v1/batches/b', 409, error('batch_not_finished', 'conflict_error')),
    );
    expect(wrongStatus).toEqual([expect.stringMatching(/status 409 is not documented for GET \/v1\/batches\/\{id\}/)]);
    const wrongCode = checker.check(jsonAnswer('GET', '/v1/batches/b', 404, error('invalid_json', 'not_found_error')));
    expect(wrongCode.join()).toMatch(/\/error\/code must be equal to one of the allowed values/);
    const wrongType = checker.check(jsonAnswer('GET', '/v1/batches/b', 404, error('batch_not_found', 'server_error')));
    expect(wrongType.join()).toMatch(/\/error\/type/);
    // The task API answers its own envelope, not OpenAI's.
    const envelope = checker.check(
      jsonAnswer('POST', '/v1/aiart/openai/image/query', 404, error('job_not_found', 'not_found_error')),
    );
    expect(envelope.join()).toMatch(/TaskError404/);
    expect(
      checker.check(
        jsonAnswer('POST', '/v1/aiart/openai/image/query', 404, { code: 'job_not_found', message: 'm', data: null }),
      ),
    ).toEqual([]);
  });

  it('fails an undocumented route that answers, and accepts one that answers route_not_found', () => {
    expect(checker.check(jsonAnswer('GET', '/v1/secrets', 200, { ok: true }))).toEqual([
      expect.stringMatching(/GET \/v1\/secrets is not in the OpenAPI document/),
    ]);
    // A documented path with a method it does not take.
    expect(checker.check(jsonAnswer('PATCH', '/v1/batches/b', 200, batchView(batchRow())))).toEqual([
      expect.stringMatching(/not in the OpenAPI document/),
    ]);
    expect(checker.check(jsonAnswer('GET', '/admin/unknown', 409, error('file_in_use', 'conflict_error')))).toEqual([
      expect.stringMatching(/answered file_in_use/),
    ]);
    expect(checker.check(jsonAnswer('GET', '/v1/secrets', 404, error('route_not_found', 'not_found_error')))).toEqual(
      [],
    );
    expect(
      checker.check(jsonAnswer('GET', '/admin/unknown', 401, error('missing_admin_token', 'authentication_error'))),
    ).toEqual([]);
    // Not the API (the dashboard's files): not checked until documented.
    expect(
      checker.check({
        method: 'GET',
        path: '/dashboard/app.js',
        status: 200,
        contentType: 'text/javascript',
        body: null,
      }),
    ).toEqual([]);
  });

  it('checks the content type, and only the content type of a streamed body', () => {
    const bytes = { method: 'GET', path: '/v1/files/file_1/content', status: 200, body: null };
    expect(checker.check({ ...bytes, contentType: 'application/jsonl' })).toEqual([]);
    expect(checker.check({ ...bytes, status: 206, contentType: 'image/png' })).toEqual([]);
    expect(checker.check({ ...bytes, contentType: 'text/csv' })).toEqual([
      expect.stringMatching(/Content-Type text\/csv is not documented/),
    ]);
    expect(checker.check({ ...bytes, contentType: null })).toEqual([expect.stringMatching(/no Content-Type/)]);
    expect(checker.check({ ...jsonAnswer('GET', '/healthz', 200, { ok: true }), contentType: 'text/plain' })).toEqual([
      expect.stringMatching(/text\/plain is not documented/),
    ]);
    // A link's key holds slashes.
    const link = {
      method: 'HEAD',
      path: '/links/users/1/jobs/img_1/0.png',
      status: 200,
      contentType: 'image/png',
      body: null,
    };
    expect(checker.check(link)).toEqual([]);
  });
});

describe('watching a server', () => {
  let server: http.Server | null = null;
  afterEach(async () => {
    await new Promise((resolve) => server?.close(resolve));
    server = null;
  });

  it('records what a server answers wrong, when it answers', async () => {
    server = http.createServer((req, res) => {
      if (req.url === '/healthz') {
        // Written in two pieces, as a stream would.
        res.setHeader('content-type', 'application/json');
        res.write('{"ok": true, ');
        res.end('"uptime": 5}');
      } else if (req.url === '/readyz')
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true,"database":true,"queue":true}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    watchResponses(server, checker);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(takeViolations()).toEqual([expect.stringMatching(/GET \/healthz → 200: .*additional properties.*uptime/s)]);
    await (await fetch(`${base}/readyz`)).text();
    expect(takeViolations()).toEqual([]);
    await (await fetch(`${base}/v1/hidden?x=1`, { method: 'POST' })).text();
    expect(takeViolations()).toEqual([expect.stringMatching(/POST \/v1\/hidden → 200: .*not in the OpenAPI document/)]);
    await (await fetch(`${base}/healthz`, { method: 'HEAD' })).text();
    // HEAD has no body to check; its status and type are right.
    expect(takeViolations()).toEqual([]);
  });
});
