import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { listShards } from '../../src/pipeline/shard-queries.ts';
import { stageBatch } from '../../src/pipeline/stage.ts';
import { submitShard } from '../../src/pipeline/submit.ts';
import { validateBatch } from '../../src/pipeline/validate.ts';
import { uploadBatch } from '../support/batches.ts';
import { imageLine } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * submitShard run twice at once (a redelivered job, or two worker processes): run A is held
 * between creating the Vertex job and committing. Run B must neither create a second job nor
 * leave A to cancel the job the shard ends up recording.
 */
let svc: TestService;
beforeAll(async () => {
  // ROLE=api: no workers, so the steps are driven by hand.
  svc = await startTestService({ ROLE: 'api', VERTEX_EMULATOR_QUEUE_MS: '3000' });
});
afterAll(async () => {
  await svc?.stop();
});

describe('submitShard run concurrently', () => {
  it('never cancels the Vertex job the shard has recorded', async () => {
    const s = svc.runtime.services;
    const user = await svc.createUser(100_000);
    const created = await uploadBatch(svc, user.apiKey, [imageLine('a'), imageLine('b')]);
    const batchId = created.body.id;
    await validateBatch(s, batchId);
    await stageBatch(s, batchId);
    const [shard] = await listShards(s.pool, batchId);
    expect(shard.status).toBe('staged');

    // Hold run A between "job created" and its commit, as a slow process would be.
    const origCreate = s.vertex.create.bind(s.vertex);
    let signalCreated!: () => void;
    const createdByA = new Promise<void>((r) => (signalCreated = r));
    s.vertex.create = async (job) => {
      const snap = await origCreate(job);
      signalCreated();
      await new Promise((r) => setTimeout(r, 1000));
      return snap;
    };
    const runA = submitShard(s, shard.id);
    await createdByA;
    s.vertex.create = origCreate;
    const runB = submitShard(s, shard.id);
    await Promise.all([runA, runB]);

    const [after] = await listShards(s.pool, batchId);
    expect(after.status).toBe('submitted');
    const job = await s.vertex.get(after.vertexJob!);
    expect(['JOB_STATE_CANCELLING', 'JOB_STATE_CANCELLED']).not.toContain(job.state);
    const again = await s.vertex.findByLabel('ibg_shard', shard.id);
    expect(again?.name).toBe(after.vertexJob);
  });
});
