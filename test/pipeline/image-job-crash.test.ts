import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { eventually, ledger } from '../support/batches.ts';
import { call } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

const MODEL = 'gemini-2.5-flash-image';
const PRICE = 5000; // 1K, multiplier 1
/** More than one job runs at once (CALLS_PER_JOB = 4): images 0-3 land together, image 4 one call later. */
const N = 5;
const ONLINE_MS = 1500;

/**
 * An async image job whose worker process is killed (SIGKILL) mid-call: the API in this process
 * (ROLE=api, with the emulators), workers in separate processes (ROLE=worker) reaching Vertex
 * through a counting proxy. A second worker resumes the job; it makes only the missing image,
 * and the bill is exact.
 */
let svc: TestService;
let proxy: http.Server;
let proxyUrl: string;
const workers = new Set<ChildProcess>();
/** generateContent calls the workers made, and the ones answered 200 in full. */
const calls = { started: 0, answered: 0 };

beforeAll(async () => {
  svc = await startTestService({
    ROLE: 'api',
    VERTEX_EMULATOR_ONLINE_MS: String(ONLINE_MS),
    JOB_HEARTBEAT_SECONDS: '10',
    JOB_SUPERVISE_SECONDS: '1',
    SWEEP_INTERVAL_MS: '1000',
  });
  const target = new URL(svc.runtime.emulators!.vertex.url);
  proxy = http.createServer((req, res) => {
    const online = (req.url ?? '').includes(':generateContent');
    if (online) calls.started++;
    const upstream = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        answer.on('end', () => {
          if (online && answer.statusCode === 200 && !res.destroyed) calls.answered++;
        });
      },
    );
    upstream.on('error', () => res.destroy());
    // A killed worker's call ends at Vertex too.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const w of workers) w.kill('SIGKILL');
  await Promise.all([...workers].map((w) => once(w, 'exit')));
  proxy?.closeAllConnections();
  await new Promise((resolve) => proxy?.close(resolve));
  await svc?.stop();
});

function startWorker(): ChildProcess {
  const child = spawn(process.execPath, ['src/main.ts'], {
    env: {
      ...process.env,
      ...svc.env,
      ROLE: 'worker',
      GCS_API_ENDPOINT: svc.runtime.emulators!.gcs.url,
      VERTEX_API_ENDPOINT: proxyUrl,
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
    },
    stdio: ['ignore', 'inherit', 'inherit'], // logs (errors only) on stdout, anything else on stderr
  });
  workers.add(child);
  child.on('exit', () => workers.delete(child));
  return child;
}

describe('image job worker killed mid-call', () => {
  it('is resumed by another worker: n images, each made once, one charge', async () => {
    const a = startWorker();
    const user = await svc.createUser(100_000);
    const created = await call(`${svc.url}/v1/images/generations?async=true`, {
      method: 'POST',
      key: user.apiKey,
      json: { model: MODEL, prompt: 'a lighthouse at dusk', n: N },
    });
    expect(created.status).toBe(202);
    const id = created.body.id as string;
    const job = async () => (await call(`${svc.url}/v1/jobs/${id}`, { key: user.apiKey })).body;

    // Running, images 0-3 recorded and the call of image 4 out at Vertex: kill the worker.
    const before = await eventually(async () => {
      const j = await job();
      if (j.status !== 'queued' && j.status !== 'running') return j;
      return j.image_count >= 4 && calls.started === N ? j : null;
    }, 20_000);
    a.kill('SIGKILL');
    await once(a, 'exit');
    expect(before).toMatchObject({ status: 'running', image_count: 4 });
    const atKill = { ...calls };
    expect(atKill).toEqual({ started: N, answered: 4 });
    expect((await job()).status).toBe('running');

    startWorker();
    let last: any;
    const done = await eventually(async () => {
      last = await job();
      return last.status === 'queued' || last.status === 'running' ? null : last;
    }, 40_000).catch(() => {
      throw new Error(`job did not finish; last: ${JSON.stringify(last)}`);
    });
    expect(done).toMatchObject({
      status: 'succeeded',
      image_count: N,
      error: null,
      billing: { pre_deducted: N * PRICE, settled: N * PRICE, refunded: 0 },
      usage: { cost_credits: N * PRICE },
    });
    expect(new Set(done.unsigned_urls).size).toBe(N);
    for (const link of done.unsigned_urls as string[]) {
      const res = await fetch(link);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('image/png');
    }
    const stored = await svc.runtime.services.store.list(`tenants/${user.id}/jobs/${id}/images/`);
    expect(stored.map((o) => o.key.split('/').at(-1)).sort()).toEqual(['0.png', '1.png', '2.png', '3.png', '4.png']);

    // The second run made only the missing image: one call, answered once; nothing made twice.
    expect(calls.started - atKill.started).toBe(N - before.image_count);
    expect(calls.answered).toBe(N);

    // Exactly one reservation, no refund (every image made), and quota = Σ log deltas.
    const logs = (await svc.admin('GET', `/admin/logs?image_job_id=${id}`)).body.data;
    expect(logs.map((l: any) => [l.type, l.quota_delta])).toEqual([['pre_deduction', -N * PRICE]]);
    const l = await ledger(svc, user.id);
    expect(l.quota).toBe(100_000 - N * PRICE);
    expect(l.sum).toBe(l.quota);
  }, 60_000);
});
