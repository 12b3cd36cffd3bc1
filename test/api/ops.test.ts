import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { BATCH_STATUSES } from '../../src/batches/batch-states.ts';
import { setLogLevel } from '../../src/logger.ts';
import { finalizeJob } from '../../src/pipeline/finalize.ts';
import { pollJob } from '../../src/pipeline/poll.ts';
import { stageJob } from '../../src/pipeline/stage.ts';
import { submitJob } from '../../src/pipeline/submit.ts';
import { sweepJob } from '../../src/pipeline/sweep.ts';
import { validateJob } from '../../src/pipeline/validate.ts';
import { download, eventually, ledger, uploadBatch, waitForBatch } from '../support/batches.ts';
import { call, expectEnvelope, imageLine } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * The operators' side: health and readiness, request ids on every answer, access and state logs,
 * and `/metrics` after real work (a batch through the emulated Vertex, sync image calls).
 */

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus' text format, strictly: every line is a comment, blank, or `name{labels} value`. */
function parseMetrics(text: string) {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      types.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    // Prometheus reads floats as Go does: NaN in any case, ±Inf.
    const value = /^nan$/i.test(m[3]) ? Number.NaN : Number(m[3]);
    if (Number.isNaN(value) && !/^nan$/i.test(m[3])) throw new Error(`not a number: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  /** The one sample of `name` whose labels include `labels` (0 when there is none). */
  const value = (name: string, labels: Record<string, string> = {}) => {
    const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
    return found[0]?.value ?? 0;
  };
  return { samples, types, value };
}

type LogLine = { level: string; msg: string; [key: string]: unknown };

/** The service's log lines (JSON on stdout) while `fn` runs, at info level. */
async function captureLogs(fn: () => Promise<void>): Promise<LogLine[]> {
  const logged: LogLine[] = [];
  const write = process.stdout.write.bind(process.stdout);
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation(((chunk: unknown, ...rest: unknown[]) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString();
    if (!text.startsWith('{')) return (write as (...args: unknown[]) => boolean)(chunk, ...rest);
    for (const l of text.split('\n').filter(Boolean)) logged.push(JSON.parse(l) as LogLine);
    return true;
  }) as typeof process.stdout.write);
  setLogLevel('info');
  try {
    await fn();
  } finally {
    setLogLevel('silent');
    spy.mockRestore();
  }
  return logged;
}

const METRICS_TOKEN = 'metrics-token-for-the-ops-test';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('operations', () => {
  let svc: TestService;
  const users: number[] = [];

  beforeAll(async () => {
    // The second generateContent call answers 503: the client's retry succeeds, the counter shows both.
    svc = await startTestService({
      METRICS_TOKEN,
      VERTEX_EMULATOR_FAULTS: 'GenerateContent:2:503',
      VERTEX_EMULATOR_ONLINE_MS: '50',
      // Big images: every read of a prediction or output file takes many chunks.
      VERTEX_EMULATOR_IMAGE_PAD_BYTES: '300000',
    });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  const scrape = async () => {
    const a = await call(`${svc.url}/metrics`, { key: METRICS_TOKEN });
    expect(a.status).toBe(200);
    expect(a.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseMetrics(a.text);
  };

  it('answers /healthz and /readyz without a key', async () => {
    const health = await call(`${svc.url}/healthz`);
    expect([health.status, health.body]).toEqual([200, { ok: true }]);
    const ready = await call(`${svc.url}/readyz`);
    expect([ready.status, ready.body]).toEqual([200, { ok: true, database: true, queue: true }]);
  });

  it('sends a request id back on every answer: the client’s when sane, else a new one', async () => {
    const given = await call(`${svc.url}/healthz`, { headers: { 'x-request-id': 'trace-42.a:b' } });
    expect(given.headers.get('x-request-id')).toBe('trace-42.a:b');

    const made = await call(`${svc.url}/healthz`);
    expect(made.headers.get('x-request-id')).toMatch(UUID);
    const again = await call(`${svc.url}/healthz`);
    expect(again.headers.get('x-request-id')).not.toBe(made.headers.get('x-request-id'));

    for (const bad of ['x'.repeat(129), 'has space', 'quote"d', '']) {
      const a = await call(`${svc.url}/healthz`, { headers: { 'x-request-id': bad } });
      expect(a.headers.get('x-request-id')).toMatch(UUID);
    }

    // Errors of every kind, before and after routing, carry it too.
    const answers = [
      [await call(`${svc.url}/v1/no-such-route`, { headers: { 'x-request-id': 'r-no-key' } }), 401],
      [await call(`${svc.url}/nowhere`, { headers: { 'x-request-id': 'r-404' } }), 404],
      [await call(`${svc.url}/admin/users/1`, { headers: { 'x-request-id': 'r-admin' } }), 401],
      [
        await call(`${svc.url}/links/tenants/1/x.png?expires=1&signature=x`, { headers: { 'x-request-id': 'r-link' } }),
        403,
      ],
      [await call(`${svc.url}/metrics`, { headers: { 'x-request-id': 'r-metrics' } }), 401],
    ] as const;
    for (const [a, status] of answers) {
      expect(a.status).toBe(status);
      expectEnvelope(a);
    }
    expect(answers.map(([a]) => a.headers.get('x-request-id'))).toEqual([
      'r-no-key',
      'r-404',
      'r-admin',
      'r-link',
      'r-metrics',
    ]);
  });

  it('keeps /metrics behind METRICS_TOKEN', async () => {
    const none = await call(`${svc.url}/metrics`);
    expect([none.status, expectEnvelope(none).code, expectEnvelope(none).type]).toEqual([
      401,
      'invalid_metrics_token',
      'authentication_error',
    ]);
    const wrong = await call(`${svc.url}/metrics`, { key: `${METRICS_TOKEN}x` });
    expect([wrong.status, expectEnvelope(wrong).code]).toEqual([401, 'invalid_metrics_token']);
    const apiKey = await call(`${svc.url}/metrics`, { key: 'sk-not-the-metrics-token' });
    expect(apiKey.status).toBe(401);
    await scrape();
  });

  it('counts a batch, sync images, HTTP requests and quota in /metrics, and logs each state change once', async () => {
    const user = await svc.createUser(1_000_000);
    users.push(user.id);
    let batchId = '';
    let vertexJob = '';
    const logs = await captureLogs(async () => {
      const created = await uploadBatch(svc, user.apiKey, [
        imageLine('ok-1', 'a lighthouse'),
        imageLine('broken', 'this one fails [emulate:fail]'),
      ]);
      expect(created.status).toBe(200);
      batchId = created.body.id;
      const done = await waitForBatch(svc, user.apiKey, batchId);
      expect(done.status).toBe('completed');
      expect(done.billing).toEqual({ pre_deducted: 5000, settled: 2500, refunded: 2500 });
      expect((await download(svc, user.apiKey, done.output_file_id)).map((l) => l.custom_id)).toEqual(['ok-1']);

      for (const id of ['sync-a', 'sync-b']) {
        const sync = await call(`${svc.url}/v1/images/generations`, {
          method: 'POST',
          key: user.apiKey,
          headers: { 'x-request-id': id },
          json: { model: 'gemini-2.5-flash-image', prompt: `a ${id}` },
        });
        expect(sync.status).toBe(200);
        expect(sync.headers.get('x-request-id')).toBe(id);
      }
    });

    // One line per batch status change, in order, once each.
    const batchLines = logs.filter((l) => l.msg === 'batch status changed' && l.batchId === batchId);
    expect(batchLines.map((l) => [l.from, l.to])).toEqual([
      [null, 'validating'],
      ['validating', 'in_progress'],
      ['in_progress', 'finalizing'],
      ['finalizing', 'completed'],
    ]);
    expect(batchLines.every((l) => l.level === 'info' && l.userId === user.id)).toBe(true);
    // Vertex job state changes as the polls saw them: each a change, ending in partial success (one line failed).
    const jobLines = logs.filter((l) => l.msg === 'vertex job state changed' && l.batchId === batchId);
    expect(jobLines.length).toBeGreaterThan(0);
    vertexJob = String(jobLines[0].vertexJob);
    expect(vertexJob).toMatch(/batchPredictionJobs\//);
    expect(jobLines.at(-1)).toMatchObject({ level: 'info', to: 'JOB_STATE_PARTIALLY_SUCCEEDED', vertexJob });
    expect(jobLines[0].from).toBeNull();
    for (const [i, l] of jobLines.entries()) {
      expect(l.from).not.toBe(l.to);
      if (i > 0) expect(l.from).toBe(jobLines[i - 1].to);
    }
    // Access lines: one per request, with the request's id and what answered it.
    const access = logs.filter((l) => l.msg === 'request completed');
    const syncLine = access.find((l) => l.reqId === 'sync-a');
    expect(syncLine).toMatchObject({
      level: 'info',
      userId: user.id,
      route: '/v1/images/generations',
      req: { method: 'POST', url: '/v1/images/generations' },
      res: { statusCode: 200 },
      responseTime: expect.any(Number),
    });
    expect(JSON.stringify(syncLine)).not.toContain(user.apiKey);
    expect(access.filter((l) => l.reqId === 'sync-a')).toHaveLength(1);
    expect(logs.filter((l) => l.level === 'error' || l.level === 'warn')).toEqual([]);

    expect((await call(`${svc.url}/no/such/path/123`)).status).toBe(404);
    const m = await scrape();
    for (const [name, type] of [
      ['http_request_duration_seconds', 'histogram'],
      ['ibg_batches', 'gauge'],
      ['ibg_pipeline_step_duration_seconds', 'histogram'],
      ['ibg_vertex_requests_total', 'counter'],
      ['ibg_quota_units_total', 'counter'],
      ['ibg_queue_depth', 'gauge'],
      ['ibg_dead_jobs', 'gauge'],
      ['process_cpu_user_seconds_total', 'counter'],
      ['nodejs_eventloop_lag_seconds', 'gauge'],
      ['nodejs_heap_size_used_bytes', 'gauge'],
    ]) {
      expect([name, m.types.get(name)]).toEqual([name, type]);
    }

    // Every status has its series, zeros included.
    expect(
      m.samples
        .filter((s) => s.name === 'ibg_batches')
        .map((s) => [s.labels.status, s.value])
        .sort(),
    ).toEqual(BATCH_STATUSES.map((status) => [status, status === 'completed' ? 1 : 0]).sort());
    expect(m.samples.filter((s) => s.name === 'ibg_queue_depth' && s.labels.job.startsWith('__'))).toEqual([]);

    // Every Vertex call, by RPC and outcome: one job for the one shard, looked up by label first.
    expect(m.value('ibg_vertex_requests_total', { method: 'CreateBatchPredictionJob', code: 'OK' })).toBe(1);
    expect(m.value('ibg_vertex_requests_total', { method: 'ListBatchPredictionJobs', code: 'OK' })).toBe(1);
    expect(m.value('ibg_vertex_requests_total', { method: 'GetBatchPredictionJob', code: 'OK' })).toBeGreaterThan(0);
    expect(m.value('ibg_vertex_requests_total', { method: 'GenerateContent', code: 'OK' })).toBe(2);
    expect(m.value('ibg_vertex_requests_total', { method: 'GenerateContent', code: 'UNAVAILABLE' })).toBe(1);

    // Quota moved, by log type: the same as the ledger's rows (absolute values).
    const rows = (await Promise.all(users.map((id) => ledger(svc, id)))).flatMap((l) => l.logs);
    for (const type of ['topup', 'pre_deduction', 'difference']) {
      const moved = rows.filter((r) => r.type === type).reduce((sum, r) => sum + Math.abs(r.quota_delta), 0);
      expect([type, m.value('ibg_quota_units_total', { type })]).toEqual([type, moved]);
    }
    expect(m.value('ibg_quota_units_total', { type: 'pre_deduction' })).toBe(5000 + 2 * 5000);
    expect(m.value('ibg_quota_units_total', { type: 'difference' })).toBe(2500);

    // Each pipeline step ran, and was timed.
    for (const job of [validateJob, stageJob, submitJob, pollJob, finalizeJob]) {
      expect([job.name, m.value('ibg_pipeline_step_duration_seconds_count', { step: job.name }) > 0]).toEqual([
        job.name,
        true,
      ]);
    }
    for (const state of ['ready', 'active', 'deferred']) {
      expect(
        m.samples.some(
          (s) => s.name === 'ibg_queue_depth' && s.labels.job === validateJob.name && s.labels.state === state,
        ),
      ).toBe(true);
    }

    // HTTP timings by route pattern, never by raw path.
    const http = m.samples.filter((s) => s.name === 'http_request_duration_seconds_count');
    expect(
      m.value('http_request_duration_seconds_count', { method: 'GET', route: '/v1/image-batches/:id', status: '200' }),
    ).toBeGreaterThan(0);
    expect(
      m.value('http_request_duration_seconds_count', { method: 'GET', route: '/v1/files/:id/content', status: '200' }),
    ).toBe(1);
    expect(
      m.value('http_request_duration_seconds_count', {
        method: 'POST',
        route: '/v1/images/generations',
        status: '200',
      }),
    ).toBe(2);
    expect(
      m.value('http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status: '404' }),
    ).toBeGreaterThan(0);
    expect(http.filter((s) => /batch_|file_|\/\d+/.test(s.labels.route))).toEqual([]);
    expect(new Set(http.map((s) => s.labels.method))).toEqual(new Set(['GET', 'POST', 'PUT']));
  });
});

describe('operations without METRICS_TOKEN', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService({ ROLE: 'api' });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('serves /metrics to anyone who reaches it', async () => {
    const a = await call(`${svc.url}/metrics`);
    expect(a.status).toBe(200);
    const m = parseMetrics(a.text);
    expect(m.types.get('ibg_batches')).toBe('gauge');
    expect(m.value('process_start_time_seconds')).toBeGreaterThan(0);
  });
});

describe('a worker-only process', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService({ ROLE: 'worker' });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('serves the operators’ endpoints alone, with its pipeline metrics', async () => {
    expect((await call(`${svc.url}/healthz`)).body).toEqual({ ok: true });
    expect((await call(`${svc.url}/readyz`)).status).toBe(200);
    const api = await call(`${svc.url}/v1/nothing-here`, { headers: { 'x-request-id': 'r-worker' } });
    expect([api.status, expectEnvelope(api).code, api.headers.get('x-request-id')]).toEqual([
      404,
      'route_not_found',
      'r-worker',
    ]);
    // The sweep runs at start: a step this process ran, timed.
    await eventually(async () => {
      const m = parseMetrics((await call(`${svc.url}/metrics`)).text);
      return m.value('ibg_pipeline_step_duration_seconds_count', { step: sweepJob.name }) > 0 ? true : null;
    });
  });
});
