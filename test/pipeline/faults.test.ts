import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { download, ledger, uploadBatch, waitForBatch } from '../support/batches.ts';
import { imageLine } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

const PER_IMAGE = 2500;

describe('Vertex faults', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService();
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('ends a batch whose Vertex job FAILED as failed, refunding everything', async () => {
    svc.runtime.emulators!.vertex.setFaults({ jobFault: 'fail' });
    try {
      const user = await svc.createUser(100_000);
      const created = await uploadBatch(svc, user.apiKey, [imageLine('a'), imageLine('b', 'y', { n: 2 })]);
      const done = await waitForBatch(svc, user.apiKey, created.body.id);
      expect(done.status).toBe('failed');
      expect(done.errors.data[0].code).toBe('vertex_job_failed');
      expect(done.billing).toEqual({ pre_deducted: 3 * PER_IMAGE, settled: 0, refunded: 3 * PER_IMAGE });
      expect(done.output_file_id).toBeNull();
      const errors = await download(svc, user.apiKey, done.error_file_id);
      expect(errors.map((l) => l.custom_id)).toEqual(['a', 'b']);
      const l = await ledger(svc, user.id);
      expect(l.quota).toBe(100_000);
      expect(l.sum).toBe(l.quota);
    } finally {
      svc.runtime.emulators!.vertex.setFaults({ jobFault: 'none' });
    }
  });

  it('retries transient 429 and 503 answers instead of failing the batch', async () => {
    svc.runtime.emulators!.vertex.setFaults({
      transportFaults: [
        { method: 'ListBatchPredictionJobs', call: 1, status: 503 },
        { method: 'CreateBatchPredictionJob', call: 1, status: 429 },
        { method: 'GetBatchPredictionJob', call: 1, status: 503 },
        { method: 'GetBatchPredictionJob', call: 2, status: 429 },
      ],
    });
    const user = await svc.createUser(100_000);
    const created = await uploadBatch(svc, user.apiKey, [imageLine('a'), imageLine('b')]);
    const done = await waitForBatch(svc, user.apiKey, created.body.id, undefined, 60_000);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 2, completed: 2, failed: 0 });
    expect(done.billing).toEqual({ pre_deducted: 2 * PER_IMAGE, settled: 2 * PER_IMAGE, refunded: 0 });
  });
});

describe('expiry', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService({ BATCH_COMPLETION_WINDOW: '3s', VERTEX_EMULATOR_JOB_FAULT: 'stuck' });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('expires a batch stuck in the Vertex queue past its window, refunding what never ran', async () => {
    const user = await svc.createUser(100_000);
    const created = await uploadBatch(svc, user.apiKey, [imageLine('a'), imageLine('b')]);
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('expired');
    expect(done.expired_at).not.toBeNull();
    expect(done.request_counts).toEqual({ total: 2, completed: 0, failed: 2 });
    expect(done.billing).toEqual({ pre_deducted: 2 * PER_IMAGE, settled: 0, refunded: 2 * PER_IMAGE });
    const errors = await download(svc, user.apiKey, done.error_file_id);
    expect(errors.map((l) => l.error.code)).toEqual(['missing_prediction', 'missing_prediction']);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000);
    expect(l.sum).toBe(l.quota);
  });
});

describe("Vertex's own queue expiry", () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService({ VERTEX_EMULATOR_JOB_FAULT: 'stuck', VERTEX_EMULATOR_QUEUE_EXPIRE_MS: '500ms' });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('fails a batch whose Vertex job expired in the queue, refunding everything', async () => {
    const user = await svc.createUser(100_000);
    const created = await uploadBatch(svc, user.apiKey, [imageLine('a'), imageLine('b')]);
    const done = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(done.status).toBe('failed');
    expect(done.errors.data.map((e: { code: string }) => e.code)).toEqual(['vertex_job_expired']);
    expect(done.billing).toEqual({ pre_deducted: 2 * PER_IMAGE, settled: 0, refunded: 2 * PER_IMAGE });
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000);
    expect(l.sum).toBe(l.quota);
  });
});
