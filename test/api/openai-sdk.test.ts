import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import OpenAI, { toFile } from 'openai';
import { decodePng, eventually, ledger, uploadBatch } from '../support/batches.ts';
import { call, expectEnvelope, form, imageLine, jsonl, PNG_1x1 } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * The official `openai` npm SDK, unchanged, against the gateway: OpenAI's two-step flow (upload
 * a `batch` file, then create a batch from it) end to end, and its errors as the SDK raises them.
 */
let svc: TestService;
let user: { id: number; apiKey: string };
let client: OpenAI;

const sdk = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
const batchFile = (lines: unknown[], name = 'batch.jsonl') =>
  toFile(Buffer.from(jsonl(lines)), name, { type: 'application/jsonl' });

async function finished(id: string): Promise<OpenAI.Batch> {
  return eventually(async () => {
    const b = await client.batches.retrieve(id);
    return ['completed', 'failed', 'expired', 'cancelled'].includes(b.status) ? b : null;
  }, 45_000);
}

beforeAll(async () => {
  svc = await startTestService();
  user = await svc.createUser(10_000_000);
  client = sdk(user.apiKey);
});
afterAll(() => svc.stop());

describe('the official OpenAI SDK runs the batch flow unchanged', () => {
  it('files.create → batches.create → retrieve → output with decodable images; list, content, delete', async () => {
    const lines = [imageLine('a', 'a red cube'), imageLine('b', 'a blue sphere', { n: 2 })];
    const file = await client.files.create({ file: await batchFile(lines), purpose: 'batch' });
    expect(file).toMatchObject({ object: 'file', purpose: 'batch', filename: 'batch.jsonl', status: 'processed' });
    expect(file.id).toMatch(/^file_/);
    expect(file.bytes).toBe(Buffer.byteLength(jsonl(lines)));
    // FILE_RETENTION (30 days) by default.
    expect(file.expires_at! - file.created_at).toBe(30 * 86400);
    expect(await (await client.files.content(file.id)).text()).toBe(jsonl(lines));
    expect(await client.files.retrieve(file.id)).toMatchObject({ id: file.id, bytes: file.bytes });

    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/images/generations' as never,
      completion_window: '24h',
      metadata: { team: 'pics' },
    });
    expect(created).toMatchObject({
      object: 'batch',
      input_file_id: file.id,
      endpoint: '/v1/images/generations',
      completion_window: '24h',
      status: 'validating',
      metadata: { team: 'pics' },
    });

    // The input of an unfinished batch cannot be deleted.
    const inUse = await client.files.delete(file.id).catch((e) => e);
    if (!(inUse instanceof OpenAI.APIError)) {
      // It may have finished already on a fast machine; then the delete went through.
      throw new Error(`expected a conflict while batch ${created.id} runs, got ${JSON.stringify(inUse)}`);
    }
    expect(inUse.status).toBe(409);
    expect(inUse.code).toBe('file_in_use');

    const done = await finished(created.id);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 2, completed: 2, failed: 0 });
    const output = (await (await client.files.content(done.output_file_id!)).text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(output.map((l) => l.custom_id).sort()).toEqual(['a', 'b']);
    const images = output.flatMap((l) => l.response.body.data.map((d: { b64_json: string }) => d.b64_json));
    expect(images).toHaveLength(3);
    for (const b64 of images) expect(decodePng(b64).width).toBeGreaterThan(0);
    const outputFile = await client.files.retrieve(done.output_file_id!);
    expect(outputFile.purpose).toBe('batch_output');
    expect(outputFile.expires_at! - outputFile.created_at).toBe(30 * 86400);

    // The same batch on our own path, and in both lists.
    const ours = await call(`${svc.url}/v1/image-batches/${created.id}`, { key: user.apiKey });
    expect(ours.body).toMatchObject({ id: created.id, status: 'completed', output_file_id: done.output_file_id });
    const listed: string[] = [];
    for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
    expect(listed).toContain(created.id);
    const files: string[] = [];
    for await (const f of client.files.list({ purpose: 'batch', limit: 1 })) files.push(f.id);
    expect(files).toContain(file.id);
    expect(files.every((id) => id.startsWith('file_'))).toBe(true);

    expect(await client.files.delete(file.id)).toEqual({ id: file.id, object: 'file', deleted: true });
    const gone = await client.files.retrieve(file.id).catch((e) => e);
    expect(gone).toBeInstanceOf(OpenAI.NotFoundError);
    // The batch keeps its history.
    expect((await client.batches.retrieve(created.id)).input_file_id).toBe(file.id);
  }, 60_000);

  it('files.list pages with after and order, filtered by purpose', async () => {
    const u = await svc.createUser();
    const c = sdk(u.apiKey);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await c.files.create({ file: await batchFile([imageLine(`x${i}`)]), purpose: 'batch' })).id);
    }
    const vision = await c.files.create({ file: await toFile(PNG_1x1, 'ref.png'), purpose: 'vision' });
    expect(vision).toMatchObject({ purpose: 'vision', expires_at: null });

    const newestFirst = await c.files.list({ purpose: 'batch' });
    expect(newestFirst.data.map((f) => f.id)).toEqual([...ids].reverse());
    const page = await c.files.list({ purpose: 'batch', order: 'asc', limit: 2 });
    expect(page.data.map((f) => f.id)).toEqual(ids.slice(0, 2));
    expect(page.has_more).toBe(true);
    const next = await c.files.list({ purpose: 'batch', order: 'asc', limit: 2, after: ids[1] });
    expect(next.data.map((f) => f.id)).toEqual([ids[2]]);
    expect(next.has_more).toBe(false);
    expect((await c.files.list()).data).toHaveLength(4);
    // Another tenant sees none of them.
    expect((await client.files.list({ purpose: 'vision' })).data.map((f) => f.id)).not.toContain(vision.id);
    await expect(client.files.retrieve(vision.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('expires_after sets expires_at on uploads; output_expires_after on the batch’s results', async () => {
    const file = await client.files.create({
      file: await batchFile([imageLine('e')]),
      purpose: 'batch',
      expires_after: { anchor: 'created_at', seconds: 3600 },
    });
    expect(file.expires_at! - file.created_at).toBe(3600);
    const bad = await client.files
      .create({
        file: await batchFile([imageLine('e')]),
        purpose: 'batch',
        expires_after: { anchor: 'created_at', seconds: 60 },
      })
      .catch((e) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect(bad.code).toBe('invalid_expires_after');

    const batch = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/images/generations' as never,
      completion_window: '24h',
      output_expires_after: { anchor: 'created_at', seconds: 7200 },
    });
    const done = await finished(batch.id);
    const output = await client.files.retrieve(done.output_file_id!);
    expect(output.expires_at! - output.created_at).toBe(7200);
  }, 60_000);

  it('batches.cancel, and a batch made on either path is cancellable and deletable on both', async () => {
    const file = await client.files.create({ file: await batchFile([imageLine('c')]), purpose: 'batch' });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/images/generations' as never,
      completion_window: '24h',
    });
    const cancelled = await client.batches.cancel(b.id);
    expect(['cancelling', 'cancelled']).toContain(cancelled.status);
    const ended = await finished(b.id);
    expect(ended.status).toBe('cancelled');
    const del = await call(`${svc.url}/v1/image-batches/${b.id}`, { method: 'DELETE', key: user.apiKey });
    expect(del.status).toBe(200);
    await expect(client.batches.retrieve(b.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);

    // Made with /v1/image-files, run and deleted through /v1/batches.
    const ours = await uploadBatch(svc, user.apiKey, [imageLine('d')]);
    expect(ours.status).toBe(200);
    expect((await client.batches.retrieve(ours.body.id)).input_file_id).toBe(ours.body.input_file_id);
    await finished(ours.body.id);
    const gone = await call(`${svc.url}/v1/batches/${ours.body.id}`, { method: 'DELETE', key: user.apiKey });
    expect(gone.body).toEqual({ id: ours.body.id, object: 'batch.deleted', deleted: true });
    expect((await call(`${svc.url}/v1/image-batches/${ours.body.id}`, { key: user.apiKey })).status).toBe(404);
  }, 60_000);

  it('refuses what it cannot run, as the SDK reports it, and charges nothing', async () => {
    const before = await ledger(svc, user.id);
    const file = await client.files.create({ file: await batchFile([imageLine('r')]), purpose: 'batch' });
    const vision = await client.files.create({ file: await toFile(PNG_1x1, 'v.png'), purpose: 'vision' });
    const create = (body: Record<string, unknown>) =>
      client.batches
        .create({
          input_file_id: file.id,
          endpoint: '/v1/images/generations' as never,
          completion_window: '24h',
          ...body,
        } as never)
        .catch((e) => e);
    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ endpoint: '/v1/chat/completions' }, 400, 'invalid_endpoint'],
      [{ completion_window: '48h' }, 400, 'invalid_completion_window'],
      [{ input_file_id: 'file_doesnotexist' }, 404, 'file_not_found'],
      [{ input_file_id: vision.id }, 400, 'invalid_input_file'],
      [{ metadata: { k: 1 } }, 400, 'invalid_metadata'],
      [{ output_expires_after: { anchor: 'now', seconds: 3600 } }, 400, 'invalid_expires_after'],
      [{ model: 'x' }, 400, 'unknown_parameter'],
    ];
    for (const [body, status, code] of cases) {
      const err = await create(body);
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect([err.status, err.code]).toEqual([status, code]);
    }
    const missing = await call(`${svc.url}/v1/batches`, {
      method: 'POST',
      key: user.apiKey,
      json: { endpoint: '/v1/images/generations', completion_window: '24h' },
    });
    expect([missing.status, expectEnvelope(missing).code]).toEqual([400, 'missing_required_parameter']);
    const badPurpose = await client.files
      .create({ file: await batchFile([imageLine('p')]), purpose: 'fine-tune' })
      .catch((e) => e);
    expect([badPurpose.status, badPurpose.code]).toEqual([400, 'invalid_purpose']);

    // The privacy gate, as on /v1/image-files.
    const stranger = await svc.createUser(1_000_000, { privacy: false });
    const c = sdk(stranger.apiKey);
    const theirs = await c.files.create({ file: await batchFile([imageLine('s')]), purpose: 'batch' });
    const refused = await c.batches
      .create({ input_file_id: theirs.id, endpoint: '/v1/images/generations' as never, completion_window: '24h' })
      .catch((e) => e);
    expect(refused).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(refused.code).toBe('privacy_not_accepted');
    // Another tenant's file is not found.
    const other = sdk((await svc.createUser()).apiKey);
    const foreign = await other.batches
      .create({ input_file_id: file.id, endpoint: '/v1/images/generations' as never, completion_window: '24h' })
      .catch((e) => e);
    expect(foreign).toBeInstanceOf(OpenAI.NotFoundError);

    const after = await ledger(svc, user.id);
    expect(after.quota).toBe(before.quota);
    expect((await client.batches.list({ limit: 100 })).data.filter((b) => b.input_file_id === file.id)).toEqual([]);
  });

  it('a line whose url is not the batch’s endpoint fails validation with invalid_url', async () => {
    const file = await client.files.create({
      file: await batchFile([{ ...imageLine('u'), url: '/v1/images/edits' }]),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/images/generations' as never,
      completion_window: '24h',
    });
    const done = await finished(b.id);
    expect(done.status).toBe('failed');
    expect(done.errors?.data?.[0]).toMatchObject({ code: 'invalid_url', line: 1 });
  }, 30_000);

  it('a batch of edits (endpoint /v1/images/edits) edits vision files; a line without one fails', async () => {
    const vision = await client.files.create({ file: await toFile(PNG_1x1, 'edit-me.png'), purpose: 'vision' });
    const edit = (id: string, extra: Record<string, unknown>) => ({
      ...imageLine(id, 'make it blue', extra),
      url: '/v1/images/edits',
    });
    const good = await client.files.create({
      file: await batchFile([edit('e1', { image_file_ids: [vision.id] })]),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: good.id,
      endpoint: '/v1/images/edits' as never,
      completion_window: '24h',
    });
    const done = await finished(b.id);
    expect(done).toMatchObject({ status: 'completed', endpoint: '/v1/images/edits' });
    expect(done.request_counts).toMatchObject({ total: 1, completed: 1, failed: 0 });

    const bad = await client.files.create({ file: await batchFile([edit('e2', {})]), purpose: 'batch' });
    const failed = await finished(
      (
        await client.batches.create({
          input_file_id: bad.id,
          endpoint: '/v1/images/edits' as never,
          completion_window: '24h',
        })
      ).id,
    );
    expect(failed.status).toBe('failed');
    expect(failed.errors?.data?.[0]).toMatchObject({ code: 'missing_required_parameter', line: 1 });
  }, 60_000);

  it('multipart uploads accept the form of curl as well (expires_after[...] fields)', async () => {
    const a = await call(`${svc.url}/v1/files`, {
      method: 'POST',
      key: user.apiKey,
      body: form([
        ['purpose', 'batch'],
        ['expires_after[anchor]', 'created_at'],
        ['expires_after[seconds]', '86400'],
        ['file', { data: jsonl([imageLine('f')]), filename: 'f.jsonl' }],
      ]),
    });
    expect(a.status).toBe(200);
    expect(a.body.expires_at - a.body.created_at).toBe(86400);
  });
});
