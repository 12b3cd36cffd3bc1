import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { decodePng, download, eventually, ledger, uploadBatch, waitForBatch } from '../support/batches.ts';
import { call, expectEnvelope, form, imageLine, PNG_1x1 } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

// gemini-2.5-flash-image: 5,000 quota units per image, batch ratio 0.5 → 2,500 per image.
const PER_IMAGE = 2500;
let svc: TestService;

beforeAll(async () => {
  svc = await startTestService({ SHARD_MAX_REQUESTS: '2', VERTEX_EMULATOR_SLOW_MS: '1500' });
});
afterAll(async () => {
  await svc?.stop();
});

describe('the batch pipeline', () => {
  it('runs a batch end to end: images decode, output in input order, bill exact', async () => {
    const user = await svc.createUser(100_000);
    const ref = await call(`${svc.url}/v1/image-files`, {
      method: 'POST',
      key: user.apiKey,
      body: form([
        ['purpose', 'vision'],
        ['file', { data: PNG_1x1, filename: 'ref.png' }],
      ]),
    });
    const lines = [
      imageLine('first', 'a red cube'),
      {
        custom_id: 'second',
        body: { model: 'gemini-2.5-flash-image', prompt: 'two blue spheres', n: 2, size: '1536x1024' },
      },
      imageLine('third', 'a cat in the style of the reference', { image_file_id: ref.body.id }),
      imageLine('fourth', 'a wide landscape', { image_config: { aspect_ratio: '16:9', image_size: '1K' } }),
      imageLine('fifth', 'a green pyramid'),
      imageLine('sixth', 'a jpeg please', { output_format: 'jpeg', output_compression: 80 }),
    ];
    const created = await uploadBatch(svc, user.apiKey, lines);
    expect(created.status).toBe(200);
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 6, completed: 6, failed: 0 });
    expect(done.billing).toEqual({ pre_deducted: 7 * PER_IMAGE, settled: 7 * PER_IMAGE, refunded: 0 });
    expect(done.error_file_id).toBeNull();
    for (const k of ['in_progress_at', 'finalizing_at', 'completed_at']) expect(done[k]).not.toBeNull();

    const out = await download(svc, user.apiKey, done.output_file_id);
    expect(out.map((l) => l.custom_id)).toEqual(['first', 'second', 'third', 'fourth', 'fifth', 'sixth']);
    expect(Buffer.from(out[5].response.body.data[0].b64_json, 'base64').subarray(0, 3)).toEqual(
      Buffer.from([0xff, 0xd8, 0xff]),
    );
    for (const l of out) {
      expect(l.id).toMatch(/^batch_req_/);
      expect(l.error).toBeNull();
      expect(l.response.status_code).toBe(200);
      expect(typeof l.response.request_id).toBe('string');
      expect(l.response.body.usage).toBeDefined();
    }
    expect(out[1].response.body.data).toHaveLength(2);
    expect(decodePng(out[0].response.body.data[0].b64_json)).toEqual({ width: 1024, height: 1024 });
    const wide = decodePng(out[3].response.body.data[0].b64_json);
    expect(wide.width).toBeGreaterThan(wide.height);
    expect(out[0].response.body.data[0].b64_json).not.toBe(out[4].response.body.data[0].b64_json);

    // staging inputs and Vertex's outputs go right after settlement: the output file is all that stays
    const left = await eventually(async () => {
      const objects = await svc.runtime.services.store.list(`tenants/${user.id}/batches/${done.id}/`);
      return objects.length === 1 ? objects : null;
    });
    expect(left[0].key).toMatch(/output-[a-z0-9]+\.jsonl$/);
    const l = await ledger(svc, user.id);
    expect(l.logs.map((x) => x.type)).toEqual(['topup', 'pre_deduction']);
    expect(l.quota).toBe(100_000 - 7 * PER_IMAGE);
    expect(l.sum).toBe(l.quota);
  });

  it('bills only successful images when some lines fail, with an exact refund and one difference row', async () => {
    const user = await svc.createUser(100_000);
    const lines = [
      imageLine('ok-1', 'a house'),
      imageLine('fails', 'a house [emulate:fail]'),
      imageLine('ok-2', 'a boat', { n: 3 }),
      imageLine('blocked', 'something [emulate:block]', { n: 2 }),
    ];
    const created = await uploadBatch(svc, user.apiKey, lines);
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 4, completed: 2, failed: 2 });
    expect(done.billing).toEqual({ pre_deducted: 7 * PER_IMAGE, settled: 4 * PER_IMAGE, refunded: 3 * PER_IMAGE });
    const out = await download(svc, user.apiKey, done.output_file_id);
    expect(out.map((l) => l.custom_id)).toEqual(['ok-1', 'ok-2']);
    expect(out[1].response.body.data).toHaveLength(3);
    const errors = await download(svc, user.apiKey, done.error_file_id);
    expect(errors.map((l) => l.custom_id)).toEqual(['fails', 'blocked']);
    expect(errors[0].error.code).toBe('image_generation_failed');
    expect(errors[1].error.code).toBe('content_blocked');
    const l = await ledger(svc, user.id);
    expect(l.logs.map((x) => [x.type, x.quota_delta])).toEqual([
      ['topup', 100_000],
      ['pre_deduction', -7 * PER_IMAGE],
      ['difference', 3 * PER_IMAGE],
    ]);
    expect(l.quota).toBe(100_000 - 4 * PER_IMAGE);
    expect(l.used).toBe(4 * PER_IMAGE);
    expect(l.sum).toBe(l.quota);
  });

  it('refunds everything when every line fails, and still says where the errors are', async () => {
    const user = await svc.createUser(100_000);
    const created = await uploadBatch(svc, user.apiKey, [
      imageLine('a', 'x [emulate:fail]'),
      imageLine('b', 'y [emulate:fail]'),
      imageLine('c', 'z [emulate:block]'),
    ]);
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('completed');
    expect(done.output_file_id).toBeNull();
    expect(done.error_file_id).toMatch(/^file_/);
    expect(done.request_counts).toEqual({ total: 3, completed: 0, failed: 3 });
    expect(done.billing).toEqual({ pre_deducted: 3 * PER_IMAGE, settled: 0, refunded: 3 * PER_IMAGE });
    expect((await download(svc, user.apiKey, done.error_file_id)).map((l) => l.custom_id)).toEqual(['a', 'b', 'c']);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000);
    expect(l.sum).toBe(l.quota);
  });

  it('fails a batch with invalid lines, listing them, and charges nothing', async () => {
    const user = await svc.createUser(100_000);
    const content = [
      JSON.stringify(imageLine('a')),
      '{not json',
      JSON.stringify(imageLine('a')),
      JSON.stringify({ custom_id: 'c', body: { model: 'no-such-model', prompt: 'x' } }),
      JSON.stringify(imageLine('d', 'x', { n: 11 })),
    ].join('\r\n');
    const created = await uploadBatch(svc, user.apiKey, `\uFEFF${content}\n\n`);
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('failed');
    expect(done.failed_at).not.toBeNull();
    const byLine = Object.fromEntries(done.errors.data.map((e: { line: number; code: string }) => [e.line, e.code]));
    expect(byLine).toMatchObject({ 2: 'invalid_json', 3: 'duplicate_custom_id', 4: 'model_not_found' });
    expect(byLine[5]).toBeDefined();
    for (const e of done.errors.data) expect(Object.keys(e).sort()).toEqual(['code', 'line', 'message', 'param']);
    expect(done.billing).toEqual({ pre_deducted: 0, settled: 0, refunded: 0 });
    const l = await ledger(svc, user.id);
    expect(l.logs.map((x) => x.type)).toEqual(['topup']);
  });

  it('fails with insufficient_quota and charges nothing', async () => {
    const user = await svc.createUser(PER_IMAGE * 2);
    const created = await uploadBatch(svc, user.apiKey, [imageLine('a', 'x', { n: 3 })]);
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('failed');
    expect(done.errors.data[0].code).toBe('insufficient_quota');
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(PER_IMAGE * 2);
    expect(l.logs.map((x) => x.type)).toEqual(['topup']);
  });

  it('never lets concurrent batches of one user overdraw', async () => {
    const user = await svc.createUser(PER_IMAGE * 5);
    // five batches of two images each, for quota worth five images: at most two can run
    const created = await Promise.all(
      Array.from({ length: 5 }, (_, i) => uploadBatch(svc, user.apiKey, [imageLine(`r${i}`, 'x', { n: 2 })])),
    );
    const done = await Promise.all(created.map((c) => waitForBatch(svc, user.apiKey, c.body.id)));
    const ran = done.filter((b) => b.status === 'completed');
    const refused = done.filter((b) => b.status === 'failed');
    expect(ran).toHaveLength(2);
    expect(refused.every((b) => b.errors.data[0].code === 'insufficient_quota')).toBe(true);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(PER_IMAGE);
    expect(l.sum).toBe(l.quota);
  });

  it('cancels a running batch: stitches what finished, bills only that, ends cancelled', async () => {
    const user = await svc.createUser(100_000);
    // The first shard (two lines) is fast; the other three hang until cancelled, so
    // however slow the machine, the cancel lands with some images done and others not.
    const lines = Array.from({ length: 8 }, (_, i) =>
      imageLine(`c${i}`, i < 2 ? `quick picture ${i}` : `slow picture ${i} [emulate:slow]`),
    );
    svc.runtime.emulators!.vertex.setSlowMs(10 * 60_000);
    let done: Awaited<ReturnType<typeof waitForBatch>>;
    try {
      const created = await uploadBatch(svc, user.apiKey, lines);
      await waitForBatch(svc, user.apiKey, created.body.id, (b) => b.request_counts.completed >= 2);
      const cancelled = await call(`${svc.url}/v1/image-batches/${created.body.id}/cancel`, {
        method: 'POST',
        key: user.apiKey,
      });
      expect(cancelled.status).toBe(200);
      expect(['cancelling', 'cancelled']).toContain(cancelled.body.status);
      done = await waitForBatch(svc, user.apiKey, created.body.id);
    } finally {
      svc.runtime.emulators!.vertex.setSlowMs(1500);
    }
    expect(done.status).toBe('cancelled');
    expect(done.cancelled_at).not.toBeNull();
    const { completed, failed, total } = done.request_counts;
    expect(total).toBe(8);
    expect(completed + failed).toBe(8);
    expect(completed).toBe(2);
    expect(done.billing.settled).toBe(completed * PER_IMAGE);
    expect(done.billing.pre_deducted - done.billing.refunded).toBe(done.billing.settled);
    const errors = await download(svc, user.apiKey, done.error_file_id);
    expect(errors).toHaveLength(failed);
    const l = await ledger(svc, user.id);
    expect(l.sum).toBe(l.quota);
    // a finished batch can be cancelled no more, and can be deleted
    const again = await call(`${svc.url}/v1/image-batches/${done.id}/cancel`, {
      method: 'POST',
      key: user.apiKey,
    });
    expect(again.body.status).toBe('cancelled');
    expect((await call(`${svc.url}/v1/image-batches/${done.id}`, { method: 'DELETE', key: user.apiKey })).status).toBe(
      200,
    );
    expect((await call(`${svc.url}/v1/files/${done.error_file_id}`, { key: user.apiKey })).status).toBe(404);
  });

  it('cancels a batch before anything was sent: every request reported, everything refunded', async () => {
    const user = await svc.createUser(100_000);
    const created = await uploadBatch(svc, user.apiKey, [
      imageLine('a', 'x [emulate:slow]'),
      imageLine('b', 'y [emulate:slow]'),
    ]);
    await waitForBatch(svc, user.apiKey, created.body.id, (b) => b.status !== 'validating');
    await call(`${svc.url}/v1/image-batches/${created.body.id}/cancel`, { method: 'POST', key: user.apiKey });
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('cancelled');
    expect(done.billing.pre_deducted - done.billing.refunded).toBe(done.billing.settled);
    const errors = done.error_file_id ? await download(svc, user.apiKey, done.error_file_id) : [];
    expect(errors.length).toBe(done.request_counts.failed);
    expect(done.request_counts.completed + done.request_counts.failed).toBe(2);
    const l = await ledger(svc, user.id);
    expect(l.sum).toBe(l.quota);
  });

  it('refuses to cancel a completed batch', async () => {
    const user = await svc.createUser(100_000);
    const created = await uploadBatch(svc, user.apiKey, [imageLine('a')]);
    await waitForBatch(svc, user.apiKey, created.body.id);
    const a = await call(`${svc.url}/v1/image-batches/${created.body.id}/cancel`, { method: 'POST', key: user.apiKey });
    expect(a.status).toBe(409);
    expect(expectEnvelope(a).code).toBe('batch_not_cancellable');
  });
});
