import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { v1 } from '@google-cloud/aiplatform';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { GoogleAuth, PassThroughClient } from 'google-auth-library';
import pg from 'pg';
import { download, eventually, ledger, uploadBatch, waitForBatch } from '../support/batches.ts';
import { imageLine } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

const PER_IMAGE = 2500;

/**
 * The API in this process (ROLE=api, with the emulators), the pipeline in separate worker
 * processes (ROLE=worker) against the same Postgres: two at once on one batch, one of them
 * killed mid-pipeline and replaced. The batch still finishes, with one Vertex job per shard
 * and an exact bill.
 */
let svc: TestService;
const workers = new Set<ChildProcess>();

beforeAll(async () => {
  svc = await startTestService({ ROLE: 'api', VERTEX_EMULATOR_SLOW_MS: '700' });
});
afterAll(async () => {
  for (const w of workers) w.kill('SIGKILL');
  await svc?.stop();
});

function startWorker(): ChildProcess {
  const emulators = svc.runtime.emulators!;
  const child = spawn(process.execPath, ['src/main.ts'], {
    env: {
      ...process.env,
      ...svc.env,
      ROLE: 'worker',
      GCS_API_ENDPOINT: emulators.gcs.url,
      VERTEX_API_ENDPOINT: emulators.vertex.url,
      SHARD_MAX_REQUESTS: '2',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
    },
    stdio: ['ignore', 'inherit', 'inherit'], // logs (errors only) on stdout, anything else on stderr
  });
  workers.add(child);
  child.on('exit', () => workers.delete(child));
  return child;
}

describe('worker processes', () => {
  it('finish a batch after one of two workers is killed mid-pipeline', async () => {
    const a = startWorker();
    startWorker();
    const user = await svc.createUser(100_000);
    const lines = Array.from({ length: 8 }, (_, i) => imageLine(`w${i}`, `picture ${i} [emulate:slow]`));
    const created = await uploadBatch(svc, user.apiKey, lines);
    const batchId = created.body.id;

    const db = new pg.Pool({ connectionString: svc.databaseUrl, max: 1 });
    try {
      // wait until the shards are out at Vertex, then kill one worker without warning
      await eventually(async () => {
        const { rows } = await db.query(
          "SELECT count(*)::int AS n FROM shards WHERE batch_id = $1 AND status = 'submitted'",
          [batchId],
        );
        return rows[0].n >= 2 ? true : null;
      }, 30_000);
      a.kill('SIGKILL');
      await once(a, 'exit');
      startWorker();

      const done = await waitForBatch(svc, user.apiKey, batchId, undefined, 90_000);
      expect(done.status).toBe('completed');
      expect(done.request_counts).toEqual({ total: 8, completed: 8, failed: 0 });
      expect(done.billing).toEqual({ pre_deducted: 8 * PER_IMAGE, settled: 8 * PER_IMAGE, refunded: 0 });
      const out = await download(svc, user.apiKey, done.output_file_id);
      expect(out.map((l) => l.custom_id)).toEqual(lines.map((l) => l.custom_id));

      // exactly one Vertex job per shard
      const { rows: shards } = await db.query('SELECT id, vertex_job FROM shards WHERE batch_id = $1', [batchId]);
      expect(shards).toHaveLength(4);
      const url = new URL(svc.runtime.emulators!.vertex.url);
      const client = new v1.JobServiceClient({
        apiEndpoint: url.hostname,
        port: Number(url.port),
        protocol: 'http',
        fallback: true,
        auth: new GoogleAuth({ authClient: new PassThroughClient() }),
      } as never);
      const [jobs] = await client.listBatchPredictionJobs({
        parent: 'projects/local-project/locations/us-central1',
        filter: `labels.ibg_batch="${batchId.toLowerCase()}"`,
      });
      await client.close();
      expect(jobs).toHaveLength(4);
      expect(new Set(jobs.map((j) => j.labels!.ibg_shard))).toEqual(new Set(shards.map((s) => s.id)));

      const l = await ledger(svc, user.id);
      expect(l.logs.filter((x) => x.batch_id === batchId).map((x) => x.type)).toEqual(['pre_deduction']);
      expect(l.sum).toBe(l.quota);
    } finally {
      await db.end();
    }
  }, 120_000);
});
