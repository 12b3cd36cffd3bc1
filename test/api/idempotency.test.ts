import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import OpenAI, { toFile } from 'openai';
import pg from 'pg';
import { eventually, ledger, waitForBatch } from '../support/batches.ts';
import { type Answer, call, expectEnvelope, form, imageLine, jsonl } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * Idempotency-Key on the creating POSTs: a repeat answers the first answer and charges once,
 * concurrent duplicates make one thing, another request under the same key is refused.
 */
let svc: TestService;
let db: pg.Pool;

beforeAll(async () => {
  svc = await startTestService();
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
});
afterAll(async () => {
  await db.end();
  await svc.stop();
});

const count = async (sql: string, params: unknown[]) => Number((await db.query(sql, params)).rows[0].count);
const batchesOf = (userId: number) => count('SELECT count(*) FROM batches WHERE user_id = $1', [userId]);
const filesOf = (userId: number) => count('SELECT count(*) FROM files WHERE user_id = $1', [userId]);

async function batchFileId(apiKey: string, lines = [imageLine('a'), imageLine('b', 'a cat', { n: 2 })]) {
  const a = await call(`${svc.url}/v1/files`, {
    method: 'POST',
    key: apiKey,
    body: form([
      ['purpose', 'batch'],
      ['file', { data: jsonl(lines), filename: 'in.jsonl' }],
    ]),
  });
  expect(a.status).toBe(200);
  return a.body.id as string;
}

const createBatch = (apiKey: string, key: string, inputFileId: string, extra: Record<string, unknown> = {}) =>
  call(`${svc.url}/v1/batches`, {
    method: 'POST',
    key: apiKey,
    headers: { 'Idempotency-Key': key },
    json: { input_file_id: inputFileId, endpoint: '/v1/images/generations', completion_window: '24h', ...extra },
  });

describe('Idempotency-Key', () => {
  it('POST /v1/batches: concurrent duplicates make one batch, replays answer it again, and it is charged once', async () => {
    const user = await svc.createUser(1_000_000);
    const input = await batchFileId(user.apiKey);
    const answers = await Promise.all(Array.from({ length: 8 }, () => createBatch(user.apiKey, 'order-42', input)));
    const created = answers.filter((a) => a.status === 200);
    const busy = answers.filter((a) => a.status !== 200);
    expect(created.length).toBeGreaterThanOrEqual(1);
    expect(new Set(created.map((a) => a.body.id)).size).toBe(1);
    for (const a of busy) expect([a.status, expectEnvelope(a).code]).toEqual([409, 'idempotency_key_in_use']);
    expect(await batchesOf(user.id)).toBe(1);

    const id = created[0].body.id;
    const done = await waitForBatch(svc, user.apiKey, id);
    expect(done.status).toBe('completed');
    // After the batch ran, a replay still answers the original answer (validating), not a new batch.
    const replay = await createBatch(user.apiKey, 'order-42', input);
    expect(replay.status).toBe(200);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body).toEqual(created[0].body);
    expect(await batchesOf(user.id)).toBe(1);

    const l = await ledger(svc, user.id);
    expect(l.logs.filter((x) => x.type === 'pre_deduction')).toHaveLength(1);
    expect(l.quota).toBe(1_000_000 - done.billing.settled);
    expect(l.sum).toBe(l.quota);
  }, 60_000);

  it('the same key with a different request is 422 and makes nothing; keys are per user', async () => {
    const user = await svc.createUser();
    const input = await batchFileId(user.apiKey);
    const first = await createBatch(user.apiKey, 'k-1', input);
    expect(first.status).toBe(200);
    const other = await createBatch(user.apiKey, 'k-1', input, { metadata: { a: 'b' } });
    expect([other.status, expectEnvelope(other).code]).toEqual([422, 'idempotency_key_reused']);
    const elsewhere = await call(`${svc.url}/v1/image-batches/${first.body.id}/cancel`, {
      method: 'POST',
      key: user.apiKey,
    });
    expect(elsewhere.status).toBe(200);
    expect(await batchesOf(user.id)).toBe(1);

    // Another user's identical key is theirs alone.
    const stranger = await svc.createUser();
    const theirs = await createBatch(stranger.apiKey, 'k-1', await batchFileId(stranger.apiKey));
    expect(theirs.status).toBe(200);
    expect(theirs.body.id).not.toBe(first.body.id);
  });

  it('a request that failed frees its key: the corrected retry runs', async () => {
    const user = await svc.createUser(1_000_000, { privacy: false });
    const input = await batchFileId(user.apiKey);
    const refused = await createBatch(user.apiKey, 'retry-me', input);
    expect([refused.status, expectEnvelope(refused).code]).toEqual([403, 'privacy_not_accepted']);
    // Retried at once, it runs again (the key was freed before the refusal was sent), not 409.
    const again = await createBatch(user.apiKey, 'retry-me', input);
    expect([again.status, expectEnvelope(again).code]).toEqual([403, 'privacy_not_accepted']);
    await call(`${svc.url}/api/image-batch-privacy`, { method: 'PUT', key: user.apiKey, json: { accept: true } });
    const retried = await createBatch(user.apiKey, 'retry-me', input);
    expect(retried.status).toBe(200);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
  });

  it('POST /v1/files and /v1/image-files: a repeat is compared by its bytes and never stored twice', async () => {
    const user = await svc.createUser();
    const upload = (route: string, purpose: string, key: string, content: string) =>
      call(`${svc.url}${route}`, {
        method: 'POST',
        key: user.apiKey,
        headers: { 'Idempotency-Key': key },
        body: form([
          ['purpose', purpose],
          ['file', { data: content, filename: 'in.jsonl' }],
        ]),
      });
    const content = jsonl([imageLine('x')]);
    const first = await upload('/v1/files', 'batch', 'f-1', content);
    const again = await upload('/v1/files', 'batch', 'f-1', content);
    expect(first.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    const changed = await upload('/v1/files', 'batch', 'f-1', jsonl([imageLine('y')]));
    expect([changed.status, expectEnvelope(changed).code]).toEqual([422, 'idempotency_key_reused']);
    expect(await filesOf(user.id)).toBe(1);
    const objects = await svc.runtime.services.store.list(`tenants/${user.id}/files/`);
    expect(objects).toHaveLength(1);

    // Our own one-step upload: concurrent duplicates make one batch.
    const answers: Answer[] = await Promise.all(
      Array.from({ length: 6 }, () => upload('/v1/image-files', 'image_batch', 'b-1', content)),
    );
    const ok = answers.filter((a) => a.status === 200);
    expect(new Set(ok.map((a) => a.body.id)).size).toBe(1);
    for (const a of answers.filter((x) => x.status !== 200))
      expect(expectEnvelope(a).code).toBe('idempotency_key_in_use');
    expect(await batchesOf(user.id)).toBe(1);
    // Every refused duplicate's bytes were removed again: one upload object per file record.
    await eventually(async () =>
      (await svc.runtime.services.store.list(`tenants/${user.id}/files/`)).length === 2 ? true : null,
    );
  }, 30_000);

  it('the SDK sends a key with its request options, and a malformed key is refused', async () => {
    const user = await svc.createUser();
    const client = new OpenAI({ apiKey: user.apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
    const file = await client.files.create({
      file: await toFile(Buffer.from(jsonl([imageLine('s')])), 's.jsonl'),
      purpose: 'batch',
    });
    const params = {
      input_file_id: file.id,
      endpoint: '/v1/images/generations' as never,
      completion_window: '24h' as const,
    };
    const a = await client.batches.create(params, { headers: { 'Idempotency-Key': 'sdk-1' } });
    const b = await client.batches.create(params, { headers: { 'Idempotency-Key': 'sdk-1' } });
    expect(b.id).toBe(a.id);
    expect(await batchesOf(user.id)).toBe(1);
    const bad = await createBatch(user.apiKey, ' spaced key ', file.id);
    expect([bad.status, expectEnvelope(bad).code]).toEqual([400, 'invalid_idempotency_key']);
  });

  it('a key whose holder died (its lease ran out) can be taken again', async () => {
    const user = await svc.createUser();
    const input = await batchFileId(user.apiKey);
    await db.query(
      `INSERT INTO idempotency_keys (user_id, key, locked_until) VALUES ($1, 'orphan', now() - interval '1 second')`,
      [user.id],
    );
    const a = await createBatch(user.apiKey, 'orphan', input);
    expect(a.status).toBe(200);
    await db.query(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE user_id = $1`, [
      user.id,
    ]);
    // An answer older than 24 h is forgotten: the key makes a new batch.
    const b = await createBatch(user.apiKey, 'orphan', input);
    expect(b.status).toBe(200);
    expect(b.body.id).not.toBe(a.body.id);
  });
});
