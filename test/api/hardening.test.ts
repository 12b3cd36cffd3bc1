import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { startWorkers } from '../../src/pipeline/workers.ts';
import { eventually, ledger, uploadBatch, waitForBatch } from '../support/batches.ts';
import { type Answer, call, expectEnvelope, form, imageLine, jsonl, PNG_1x1 } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * Regression tests, one describe per failure seen: inputs that used to crash a step, loop a job,
 * charge for nothing or answer 500 — each now refused or settled the way the README says.
 */
let svc: TestService;
let db: pg.Pool;

beforeAll(async () => {
  svc = await startTestService();
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
});
afterAll(async () => {
  await db?.end();
  await svc?.stop();
});

const QUOTA = 1_000_000;
/** A batch that fails validation fails within this; a stuck one used to sit in `validating`. */
const FAIL_FAST_MS = 15_000;

/** A batch input given as raw bytes (anything a client may send, UTF-8 or not). */
function uploadBytes(key: string, data: Buffer): Promise<Answer> {
  return call(`${svc.url}/v1/image-files`, {
    method: 'POST',
    key,
    body: form([
      ['purpose', 'image_batch'],
      ['file', { data, filename: 'batch.jsonl', type: 'application/jsonl' }],
    ]),
  });
}

/** A batch line as JSON with `bytes` put where `marker` (inside a string) is, then a newline. */
function lineWithBytes(line: unknown, marker: string, bytes: number[]): Buffer {
  const [before, after] = JSON.stringify(line).split(marker);
  return Buffer.concat([Buffer.from(before), Buffer.from(bytes), Buffer.from(`${after}\n`)]);
}

/** Uploads, then waits for the batch to finish; it must fail, with the returned errors. */
async function failedBatch(key: string, data: Buffer | string) {
  const created = typeof data === 'string' ? await uploadBatch(svc, key, data) : await uploadBytes(key, data);
  expect(created.status).toBe(200);
  const done = await waitForBatch(svc, key, created.body.id, undefined, FAIL_FAST_MS);
  expect(done.status).toBe('failed');
  return done as { id: string; billing: unknown; errors: { data: Array<Record<string, unknown>> } };
}

/** Nothing charged: the quota as created, and the top-up the only ledger row. */
async function expectUntouched(user: { id: number }) {
  const l = await ledger(svc, user.id);
  expect(l.quota).toBe(QUOTA);
  expect(l.used).toBe(0);
  expect(l.logs.map((x) => x.type)).toEqual(['topup']);
}

describe('NUL characters in a batch input', () => {
  it('fails the batch with the line errors, NUL stored as U+FFFD, nothing charged', async () => {
    const user = await svc.createUser(QUOTA);
    const content =
      // a raw NUL byte: the line is not JSON, and the parser's message echoes the text
      `\u0000${JSON.stringify(imageLine('raw-nul'))}\n` +
      jsonl([
        imageLine('dup\u0000id'),
        imageLine('dup\u0000id'), // JSON escapes \u0000: a duplicate echoed in the message
        imageLine('bad-model', 'a red cube', { model: 'gemini-2.5-flash-image\u0000' }),
      ]);
    const done = await failedBatch(user.apiKey, content);
    expect(done.errors.data).toEqual([
      expect.objectContaining({ code: 'invalid_json', line: 1, param: null }),
      {
        code: 'duplicate_custom_id',
        line: 3,
        param: 'custom_id',
        message: "custom_id 'dup\uFFFDid' appears more than once in the batch",
      },
      expect.objectContaining({ code: 'model_not_found', line: 4, param: 'body.model' }),
    ]);
    const [json, , model] = done.errors.data.map((e) => String(e.message));
    expect(json).toContain('\uFFFD{');
    expect(model).toContain("'gemini-2.5-flash-image\uFFFD'");
    for (const e of done.errors.data) expect(String(e.message)).not.toContain('\u0000');
    expect(done.billing).toEqual({ pre_deducted: 0, settled: 0, refunded: 0 });
    await expectUntouched(user);
  });
});

describe('batch inputs that are not UTF-8', () => {
  it('names the field holding bytes that are not UTF-8, and keeps valid non-ASCII byte for byte', async () => {
    const user = await svc.createUser(QUOTA);
    const content = Buffer.concat([
      lineWithBytes(imageLine('bad-@@-id'), '@@', [0xc3, 0x28]),
      lineWithBytes(imageLine('bad-prompt', 'a red @@ cube'), '@@', [0xc3, 0x28]),
    ]);
    const done = await failedBatch(user.apiKey, content);
    expect(done.errors.data).toEqual([
      expect.objectContaining({ code: 'invalid_encoding', line: 1, param: 'custom_id' }),
      expect.objectContaining({ code: 'invalid_encoding', line: 2, param: 'body.prompt' }),
    ]);
    await expectUntouched(user);

    // Valid UTF-8 beyond ASCII is not touched: the custom_id comes back as the same bytes.
    const other = await svc.createUser(QUOTA);
    const customId = 'café-☕';
    const created = await uploadBatch(svc, other.apiKey, [imageLine(customId)]);
    expect(created.status).toBe(200);
    const ok = await waitForBatch(svc, other.apiKey, created.body.id);
    expect(ok.status).toBe('completed');
    const res = await fetch(`${svc.url}/v1/files/${ok.output_file_id}/content`, {
      headers: { authorization: `Bearer ${other.apiKey}` },
    });
    expect(res.status).toBe(200);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(bytes.includes(Buffer.from(`"custom_id":"${customId}"`, 'utf8'))).toBe(true);
    expect(JSON.parse(bytes.toString('utf8').split('\n')[0]).custom_id).toBe(customId);
  });

  it('refuses a UTF-16 file with one invalid_encoding error at line 1', async () => {
    const user = await svc.createUser(QUOTA);
    const text = jsonl([imageLine('a'), imageLine('b')]);
    const done = await failedBatch(
      user.apiKey,
      Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]),
    );
    expect(done.errors.data).toEqual([expect.objectContaining({ code: 'invalid_encoding', line: 1, param: null })]);
    await expectUntouched(user);
  });

  it('refuses a gzip-compressed file with one invalid_encoding error', async () => {
    const user = await svc.createUser(QUOTA);
    const done = await failedBatch(user.apiKey, zlib.gzipSync(jsonl([imageLine('a'), imageLine('b')])));
    expect(done.errors.data).toEqual([expect.objectContaining({ code: 'invalid_encoding', line: 1 })]);
    await expectUntouched(user);
  });
});

describe('prompts that show nothing', () => {
  it('are invalid_prompt; one visible character is enough', async () => {
    const user = await svc.createUser(QUOTA);
    const invisible = ['\u200B', '\u2060', '\uFEFF', '\u00A0', '\u3000', '\u200B \u2060'];
    const lines = [
      ...invisible.map((prompt, i) => imageLine(`invisible-${i}`, prompt)),
      imageLine('visible', 'a\u200B'),
    ];
    const done = await failedBatch(user.apiKey, jsonl(lines));
    expect(done.errors.data).toEqual(
      invisible.map((_, i) => expect.objectContaining({ code: 'invalid_prompt', line: i + 1, param: 'body.prompt' })),
    );
    await expectUntouched(user);
  });
});

describe('concurrent deletes of one finished batch', () => {
  it('answer one 200 and 404 batch_not_found for the others', async () => {
    const user = await svc.createUser(QUOTA);
    const done = await failedBatch(user.apiKey, jsonl([imageLine('a', 'a red cube', { model: 'no-such-model' })]));
    // Hold the batch row until all ten deletes have read the batch and wait for its lock: the
    // race (each saw it finished, then one deleted it) happens on every run, not by chance.
    const holder = await db.connect();
    let answers: Answer[];
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM batches WHERE id = $1 FOR UPDATE', [done.id]);
      const deletes = Promise.all(
        Array.from({ length: 10 }, () =>
          call(`${svc.url}/v1/image-batches/${done.id}`, { method: 'DELETE', key: user.apiKey }),
        ),
      );
      // From another connection: a transaction sees pg_stat_activity as it was when it first looked.
      await eventually(async () => {
        const { rows } = await db.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'
              AND query LIKE '%FROM batches WHERE id = $1%FOR UPDATE%'`,
        );
        return rows[0].n === 10 ? true : null;
      });
      await holder.query('COMMIT');
      answers = await deletes;
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      holder.release();
    }
    const ok = answers.filter((a) => a.status === 200);
    expect(ok.map((a) => a.body)).toEqual([{ id: done.id, object: 'batch.deleted', deleted: true }]);
    const others = answers.filter((a) => a.status !== 200);
    expect(others.map((a) => [a.status, expectEnvelope(a).code])).toEqual(Array(9).fill([404, 'batch_not_found']));
    const after = await call(`${svc.url}/v1/image-batches/${done.id}`, { key: user.apiKey });
    expect(after.status).toBe(404);
    expect(expectEnvelope(after).code).toBe('batch_not_found');
  });
});

describe('vision uploads', () => {
  it('are read to their pixel size; unreadable or oversized images are refused and not stored', async () => {
    const user = await svc.createUser(QUOTA);
    const vision = (data: Buffer, filename = 'ref.png') =>
      call(`${svc.url}/v1/image-files`, {
        method: 'POST',
        key: user.apiKey,
        body: form([
          ['purpose', 'vision'],
          ['file', { data, filename, type: 'image/png' }],
        ]),
      });

    const garbage = await vision(Buffer.concat([PNG_1x1.subarray(0, 8), Buffer.alloc(64, 0x41)]));
    expect(garbage.status).toBe(400);
    expect(expectEnvelope(garbage)).toMatchObject({ code: 'invalid_image', param: 'file' });

    const accepted = await vision(PNG_1x1);
    expect(accepted.status).toBe(200);
    expect(accepted.body).toMatchObject({ object: 'file', purpose: 'vision', width: 1, height: 1 });
    const meta = await call(`${svc.url}/v1/files/${accepted.body.id}`, { key: user.apiKey });
    expect(meta.body).toMatchObject({ id: accepted.body.id, width: 1, height: 1 });

    // IHDR says 20000×1 (its CRC no longer matches, but only the header is read).
    const huge = Buffer.from(PNG_1x1);
    huge.writeUInt32BE(20_000, 16);
    const tooWide = await vision(huge);
    expect(tooWide.status).toBe(400);
    expect(expectEnvelope(tooWide)).toMatchObject({ code: 'invalid_image', param: 'file' });

    const stored = await svc.runtime.services.store.list(`tenants/${user.id}/`);
    expect(stored.map((o) => o.key)).toEqual([`tenants/${user.id}/files/${accepted.body.id}`]);
  });
});

describe('NUL characters in admin and query inputs', () => {
  const admin = (method: string, path: string, body?: unknown) => svc.admin(method, path, body) as Promise<Answer>;

  it('are refused with 400 invalid_value, not a 500, and nothing is written', async () => {
    const user = await admin('POST', '/admin/users', { name: 'a\u0000b', quota: 1 });
    expect(user.status).toBe(400);
    expect(expectEnvelope(user)).toMatchObject({ code: 'invalid_value', param: 'name' });

    const model = await admin('PUT', '/admin/models/some-model', { vertex_model: 'x\u0000' });
    expect(model.status).toBe(400);
    expect(expectEnvelope(model)).toMatchObject({ code: 'invalid_value', param: 'vertex_model' });
    const models = await admin('GET', '/admin/models');
    expect(models.body.data.map((m: { id: string }) => m.id)).not.toContain('some-model');

    const logs = await admin('GET', '/admin/logs?batch_id=%00');
    expect(logs.status).toBe(400);
    expect(expectEnvelope(logs)).toMatchObject({ code: 'invalid_value', param: 'batch_id' });

    const client = await svc.createUser(QUOTA);
    const list = await call(`${svc.url}/v1/image-batches?after=%00`, { key: client.apiKey });
    expect(list.status).toBeGreaterThanOrEqual(400);
    expect(list.status).toBeLessThan(500);
    expect(expectEnvelope(list)).toMatchObject({ code: 'invalid_value', param: 'after' });
  });
});

describe('a pipeline step that keeps failing', () => {
  it('dead-letters the job: the batch fails with internal_error, nothing charged, the job listed', async () => {
    // ROLE=api: no workers yet, so the input can be removed before validation reads it.
    const api = await startTestService({ ROLE: 'api', JOB_RETRY_LIMIT: '1' });
    const db = new pg.Pool({ connectionString: api.databaseUrl, max: 2 });
    let workers: Awaited<ReturnType<typeof startWorkers>> | null = null;
    try {
      const user = await api.createUser(QUOTA);
      const created = await uploadBatch(api, user.apiKey, [imageLine('a')]);
      expect(created.status).toBe(200);
      const { rows } = await db.query('SELECT object_key FROM files WHERE id = $1', [created.body.input_file_id]);
      await api.runtime.services.store.delete(rows[0].object_key);
      expect(await api.runtime.services.store.exists(rows[0].object_key)).toBe(false);

      workers = await startWorkers(api.runtime.services);
      const done = await waitForBatch(api, user.apiKey, created.body.id, undefined, 30_000);
      expect(done.status).toBe('failed');
      expect(done.errors.data).toEqual([expect.objectContaining({ code: 'internal_error', line: null })]);
      expect(done.billing).toMatchObject({ pre_deducted: 0, settled: 0, refunded: 0 });

      const l = await ledger(api, user.id);
      expect(l.quota).toBe(QUOTA);
      expect(l.used).toBe(0);
      expect(l.logs.map((x) => x.type)).toEqual(['topup']);

      const dead = await eventually(async () => {
        const a = await api.admin('GET', '/admin/dead-jobs');
        expect(a.status).toBe(200);
        const found = a.body.data.find(
          (j: { job: string; data: { batchId?: string } }) =>
            j.job === 'batch-validate' && j.data?.batchId === created.body.id,
        );
        return found ?? null;
      });
      expect(dead).toMatchObject({ object: 'dead_job', job: 'batch-validate', data: { batchId: created.body.id } });
    } finally {
      await workers?.stop();
      await db.end();
      await api.stop();
    }
  }, 120_000);
});
