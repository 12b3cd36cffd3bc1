/**
 * Many batches in flight at once, and how quickly a small one goes through, on the service's
 * default configuration.
 *
 * Processes: a real Postgres (embedded, started here); the service (`src/main.ts` as `npm start`
 * runs it, defaults untouched, its log to a file); two emulator processes (startEmulatorProcess):
 * Cloud Storage with a Vertex AI emulator on the default settings, and a slow Vertex AI emulator on
 * the same storage, whose jobs wait QUEUE_MS in its queue. The service reaches Vertex through a small
 * proxy in this process that records every call, so GetBatchPredictionJob calls are counted per job
 * as Vertex would see them; this process is also the client.
 *
 * 1. Latency, on the default emulator (2 s in the queue): one 1-line batch to warm up (shown apart:
 *    the first batch after a start), then LATENCY_RUNS 1-line batches through the gateway, from the
 *    upload to the first GET that answers `completed` (polled every 50 ms), alternating with the
 *    baseline: the same request, as the stager writes it, run as a Vertex job directly through the
 *    official client, from create to the first GET that sees it ended (polled every 50 ms).
 *    Target: median < 5 s. The pipeline steps of the last batch are shown with their times.
 * 2. In flight, on the slow emulator: the service's CPU while idle (the baseline), then BATCHES
 *    batches of 1–2 lines from USERS users, uploaded CONCURRENCY at a time. While every Vertex job
 *    waits in the queue, from the moment all are submitted until the first leaves the queue: the
 *    service process's CPU and Postgres's, and GetBatchPredictionJob calls, in the first minute
 *    (when the youngest jobs are still looked at every few seconds: reported) and after it (target:
 *    service CPU < 10 % of a core). Throughout: every gap between two GetBatchPredictionJob calls for
 *    one job (target ≥ POLL_INTERVAL_MS: at most one call per job per poll interval), and the
 *    service's Postgres connections (target: within its pool, 20, plus pg-boss's, 5, and the two
 *    LISTEN connections, pg-boss's and the caches'). At the end every batch must be `completed` and settled exactly: all lines made,
 *    `pre_deducted − refunded = settled` with nothing refunded, one Vertex job per shard, and for
 *    every user quota = Σ its billing log rows.
 *
 *   npm run bench:inflight
 *   BATCHES=200 QUEUE_MS=120000 npm run bench:inflight
 *
 * Variables: BATCHES (1000), USERS (10), QUEUE_MS (the slow emulator's queue time, 240000: room for
 * the submissions, the first minute and a minute or two of waiting),
 * LATENCY_RUNS (5), CONCURRENCY (uploads at once, 32), LOG_LEVEL (the service's; unset: its
 * default), KEEP_LOG=1 (print where the service log is and keep it).
 * The figures and a one-line summary (PASS/FAIL) are printed last; the exit code is 1 on a FAIL.
 */

import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Storage } from '@google-cloud/storage';
import pg from 'pg';
import { listModels } from '../src/billing/model-catalog.ts';
import { loadConfig, loadEmulatorConfig } from '../src/config.ts';
import { type EmbeddedDatabase, freePort, startEmbeddedPostgres } from '../src/db/embedded.ts';
import { randomToken } from '../src/ids.ts';
import { setLogLevel } from '../src/logger.ts';
import { BatchJobs } from '../src/vertex/batch-jobs.ts';
import { createJobClient } from '../src/vertex/job-client.ts';
import { toGeminiLines } from '../src/vertex/translate.ts';
import {
  type Child,
  callJson,
  envInt,
  makeTempDir,
  median,
  postgresCpuMs,
  postmasterPid,
  processCpuMs,
  runMain,
  serviceCommand,
  startChild,
  startEmulatorProcess,
  stopChild,
  waitHttp,
} from './bench-lib.ts';

const ADMIN_TOKEN = `bench-admin-${randomToken(16)}`;
const PROJECT = 'local-project';
const LOCATION = 'us-central1';
const MODEL = 'gemini-2.5-flash-image';
/**
 * The service's connections by application_name, and how many each may hold: its pool (no name;
 * src/runtime.ts), pg-boss's pool and LISTEN connection (src/pipeline/job-queue.ts), and the
 * LISTEN connection of its caches (src/db/notifications.ts).
 */
const APP_POOL_MAX = 20;
const NAMED_MAX: Record<string, number> = { 'image-batch-gateway-queue': 5 + 1, 'ibg-notifications': 1 };
const CLIENT_POLL_MS = 50;
const IDLE_SECONDS = 20;
/** The waiting window measured against the target starts this long after the last job was submitted. */
const SETTLE_MS = 60_000;
const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// A recording proxy in front of the Vertex emulators

interface VertexCall {
  method: 'get' | 'create' | 'list' | 'other';
  /** The job's id, for calls on one job. */
  job: string | null;
  at: number;
}

function classify(method: string, url: string): Omit<VertexCall, 'at'> {
  const pathname = url.split('?')[0];
  const one = /\/batchPredictionJobs\/([^/:]+)$/.exec(pathname);
  if (one && method === 'GET') return { method: 'get', job: one[1] };
  if (/\/batchPredictionJobs$/.test(pathname)) return { method: method === 'POST' ? 'create' : 'list', job: null };
  return { method: 'other', job: null };
}

async function startProxy(upstream: () => number, record: (call: VertexCall) => void) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const server = http.createServer((req, res) => {
    record({ ...classify(req.method ?? 'GET', req.url ?? '/'), at: Date.now() });
    const up = http.request(
      { host: '127.0.0.1', port: upstream(), method: req.method, path: req.url, headers: req.headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const batchesWanted = envInt('BATCHES', 1000);
  const userCount = Math.min(envInt('USERS', 10), batchesWanted);
  const queueMs = envInt('QUEUE_MS', 240_000);
  const latencyRuns = envInt('LATENCY_RUNS', 5);
  const concurrency = envInt('CONCURRENCY', 32);
  const defaults = loadConfig({});
  const { pollIntervalMs, pollMaxIntervalMs, workerConcurrency } = defaults.pipeline;
  setLogLevel('warn');
  const say = (line: string) => process.stdout.write(`${line}\n`);
  const dir = makeTempDir('ibg-bench-inflight-');
  const stops: Array<() => Promise<unknown>> = [];
  let service: Child | null = null;
  let failed = false;
  try {
    const t0 = Date.now();
    const pgDir = path.join(dir, 'pg', 'data');
    const embedded: EmbeddedDatabase = await startEmbeddedPostgres(pgDir);
    stops.push(() => embedded.stop());
    const postmaster = postmasterPid(pgDir);
    const dbName = 'gateway';
    const admin = new pg.Client({ connectionString: embedded.connectionString('postgres') });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${dbName}`);
    await admin.end();
    const databaseUrl = embedded.connectionString(dbName);

    // Emulators: Cloud Storage with a default Vertex, and a slow Vertex on the same storage.
    const emulatorDefaults = loadEmulatorConfig({}).emulator;
    const fast = await startEmulatorProcess('emulators', dir, {
      env: { VERTEX_EMULATOR_QUEUE_MS: String(emulatorDefaults.queueMs) },
    });
    stops.push(() => stopChild(fast));
    const slow = await startEmulatorProcess('slow-vertex', dir, {
      env: { VERTEX_EMULATOR_QUEUE_MS: String(queueMs) },
      gcsUrl: fast.gcsUrl,
    });
    stops.push(() => stopChild(slow));
    const emulators = [fast, slow];
    const gcsUrl = fast.gcsUrl;
    let upstream = fast.vertexPort;
    type Phase = 'latency' | 'inflight';
    let phase: Phase = 'latency';
    const calls: Record<Phase, VertexCall[]> = { latency: [], inflight: [] };
    const proxy = await startProxy(
      () => upstream,
      (c) => calls[phase].push(c),
    );
    stops.push(() => proxy.close());
    const vertexUrl = `http://127.0.0.1:${proxy.port}`;

    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    service = startChild(
      'service',
      serviceCommand(),
      {
        PORT: String(port),
        HOST: '127.0.0.1',
        DATA_DIR: path.join(dir, 'service'),
        DATABASE_URL: databaseUrl,
        GCS_API_ENDPOINT: gcsUrl,
        VERTEX_API_ENDPOINT: vertexUrl,
        ADMIN_TOKEN,
        ...(process.env.LOG_LEVEL ? { LOG_LEVEL: process.env.LOG_LEVEL } : {}),
      },
      dir,
    );
    const svc = service;
    await waitHttp(svc, `${url}/readyz`);
    const servicePid = svc.proc.pid!;
    say(`started Postgres, emulators and service in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const db = new pg.Client({ connectionString: databaseUrl, application_name: 'bench' });
    await db.connect();
    stops.push(() => db.end());

    const api = (method: string, p: string, key: string, body?: unknown) => callJson(url, method, p, key, body);
    const newUser = async (name: string, quota: number) => {
      const user = await api('POST', '/admin/users', ADMIN_TOKEN, { name, quota });
      await api('PUT', '/api/image-batch-privacy', user.api_key, { accept: true });
      return { id: user.id as number, key: user.api_key as string };
    };
    const upload = async (key: string, lines: number, tag: string): Promise<string> => {
      const text = Array.from(
        { length: lines },
        (_, j) =>
          `${JSON.stringify({ custom_id: `${tag}-${j}`, body: { model: MODEL, prompt: `a red cube, ${tag}/${j}` } })}\n`,
      ).join('');
      const form = new FormData();
      form.append('purpose', 'image_batch');
      form.append('file', new Blob([text], { type: 'application/jsonl' }), `${tag}.jsonl`);
      const res = await fetch(`${url}/v1/image-files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}` },
        body: form,
      });
      const json = (await res.json()) as Record<string, any>;
      if (res.status !== 200) throw new Error(`upload: ${res.status} ${JSON.stringify(json)}`);
      return json.id as string;
    };

    // ---- 1. Latency of a 1-line batch on the defaults, against the same Vertex job run directly.
    const latencyUser = await newUser('latency', 1_000_000_000);
    const gatewayRun = async (tag: string) => {
      const start = Date.now();
      const id = await upload(latencyUser.key, 1, tag);
      for (;;) {
        const b = await api('GET', `/v1/image-batches/${id}`, latencyUser.key);
        if (TERMINAL.includes(b.status)) {
          if (b.status !== 'completed') throw new Error(`latency batch ${id} ended ${b.status}`);
          return { id, ms: Date.now() - start };
        }
        await sleep(CLIENT_POLL_MS);
      }
    };
    const cold = await gatewayRun('cold');
    // The baseline's input: the line the stager writes for the same request (a finished batch's own is deleted).
    const model = (await listModels(db, null, true)).find((m) => m.id === MODEL)!;
    const directInput = `gs://${defaults.google.bucket}/bench-direct/input.jsonl`;
    const storage = new Storage({ apiEndpoint: gcsUrl, projectId: PROJECT });
    const geminiLines = toGeminiLines(
      { model: MODEL, prompt: 'a red cube, direct' },
      { lineIndex: 0, model, references: [] },
    );
    await storage
      .bucket(defaults.google.bucket)
      .file('bench-direct/input.jsonl')
      .save(geminiLines.map((l) => `${JSON.stringify(l)}\n`).join(''));
    const jobClient = createJobClient({ location: LOCATION, endpoint: fast.vertexUrl });
    stops.push(() => jobClient.close());
    const direct = new BatchJobs(jobClient, PROJECT, LOCATION);
    const directRun = async (i: number) => {
      const start = Date.now();
      const job = await direct.create({
        displayName: `bench-direct-${i}`,
        model: model.publisherModel,
        inputUri: directInput,
        outputPrefix: `gs://image-batch-gateway/bench-direct/${i}`,
        labels: {},
      });
      for (;;) {
        const seen = await direct.get(job.name);
        if (seen.terminal) return Date.now() - start;
        await sleep(CLIENT_POLL_MS);
      }
    };
    const gatewayMs: number[] = [];
    const directMs: number[] = [];
    let lastGatewayId = cold.id;
    for (let i = 0; i < latencyRuns; i++) {
      // Alternating, so that neither side always meets the machine in the same mood.
      if (i % 2 === 0) directMs.push(await directRun(i));
      const run = await gatewayRun(`run${i}`);
      gatewayMs.push(run.ms);
      lastGatewayId = run.id;
      if (i % 2 === 1) directMs.push(await directRun(i));
    }
    const timeline = await stepTimeline(db, lastGatewayId);
    const latencyMedian = median(gatewayMs);
    const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    say(
      `latency: 1-line batch upload → completed, median ${s(latencyMedian)} (${gatewayMs.map(s).join(', ')}); ` +
        `first batch after start ${s(cold.ms)}; the same job on Vertex directly ${s(median(directMs))} (${directMs.map(s).join(', ')})`,
    );
    say(`latency: steps of the last batch (ms from its creation): ${timeline}`);

    // ---- 2. In flight, on the slow emulator.
    upstream = slow.vertexPort;
    phase = 'inflight';
    await sleep(5000); // the latency batches' last steps and timers, out of the idle figure
    /** The service's and Postgres's CPU so far, and when. */
    const point = (at = Date.now()): CpuPoint => ({ cpu: processCpuMs(servicePid), pg: postgresCpuMs(postmaster), at });
    const idleStart = point();
    await sleep(IDLE_SECONDS * 1000);
    const idle = cpuShare(idleStart, point());
    say(
      `idle (baseline): service ${pct(idle.service)} of a core, Postgres ${pct(idle.postgres)} over ${IDLE_SECONDS} s`,
    );

    const users: Array<{ id: number; key: string }> = [];
    for (let u = 0; u < userCount; u++) users.push(await newUser(`inflight-${u}`, 1_000_000_000));
    const userIds = users.map((u) => u.id);
    const { rows: quotaRows } = await db.query<{ id: number; quota: number }>(
      'SELECT id, quota FROM users WHERE id = ANY($1)',
      [userIds],
    );
    const startQuota = new Map(quotaRows.map((r) => [Number(r.id), Number(r.quota)]));

    // Connections: sampled throughout; the window is marked when every job waits in the queue.
    const connections = { app: 0, named: {} as Record<string, number>, total: 0, samples: 0 };
    let sampling = true;
    const sampler = (async () => {
      const probe = new pg.Client({ connectionString: databaseUrl, application_name: 'bench' });
      await probe.connect();
      while (sampling) {
        const { rows } = await probe.query<{ app: string; n: number }>(
          `SELECT coalesce(application_name, '') AS app, count(*)::int AS n FROM pg_stat_activity
            WHERE datname = $1 AND application_name <> 'bench' GROUP BY 1`,
          [dbName],
        );
        let app = 0;
        for (const { app: name, n } of rows) {
          if (name in NAMED_MAX) connections.named[name] = Math.max(connections.named[name] ?? 0, n);
          else app += n;
        }
        connections.app = Math.max(connections.app, app);
        connections.total = Math.max(
          connections.total,
          rows.reduce((a, r) => a + r.n, 0),
        );
        connections.samples++;
        await sleep(250);
      }
      await probe.end();
    })();

    const createStart = Date.now();
    const allStart = point(createStart);
    // Where else the time went: the emulators' processes, and this one (client and proxy).
    const othersCpu = () => {
      const own = process.cpuUsage();
      return {
        emulators: emulators.reduce((a, c) => a + (processCpuMs(c.proc.pid!) ?? 0), 0),
        bench: (own.user + own.system) / 1000,
      };
    };
    const othersStart = othersCpu();
    const ids: string[] = [];
    const lineCount = new Map<string, number>();
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(concurrency, batchesWanted) }, async () => {
        while (next < batchesWanted) {
          const i = next++;
          const lines = 1 + (i % 2);
          const id = await upload(users[i % users.length].key, lines, `b${i}`);
          ids.push(id);
          lineCount.set(id, lines);
        }
      }),
    );
    const uploadedAt = Date.now();
    say(
      `in flight: ${batchesWanted} batches (${[...lineCount.values()].reduce((a, b) => a + b, 0)} lines) from ${userCount} users uploaded in ${s(uploadedAt - createStart)}`,
    );
    // Every shard submitted: from then on until the first job leaves the queue, all of them wait.
    for (;;) {
      const { rows } = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM shards s JOIN batches b ON b.id = s.batch_id
          WHERE b.user_id = ANY($1) AND s.status <> 'staged'`,
        [userIds],
      );
      if (rows[0].n >= batchesWanted) break;
      if (Date.now() - createStart > 15 * 60_000) throw new Error(`only ${rows[0].n} shards submitted after 15 min`);
      await sleep(250);
    }
    const submittedAt = Date.now();
    const firstCreate = Math.min(...calls.inflight.filter((c) => c.method === 'create').map((c) => c.at));
    const waitEnd = firstCreate + queueMs - 1000;
    say(`in flight: all ${batchesWanted} Vertex jobs submitted ${s(submittedAt - createStart)} after the first upload`);
    // Two windows while every job waits: the first minute after the last submission, when the
    // youngest jobs are looked at every few seconds (reported), then the rest until the first job
    // leaves the queue (the target).
    const getsBetween = (a: CpuPoint, b: CpuPoint) =>
      calls.inflight.filter((c) => c.method === 'get' && c.at >= a.at && c.at <= b.at).length;
    let settling: (ReturnType<typeof cpuShare> & { gets: number }) | null = null;
    let waiting: (ReturnType<typeof cpuShare> & { gets: number }) | null = null;
    const settledAt = submittedAt + SETTLE_MS;
    if (waitEnd - Date.now() >= 5000) {
      const a = point();
      await sleep(Math.min(settledAt, waitEnd) - Date.now());
      const b = point();
      settling = { ...cpuShare(a, b), gets: getsBetween(a, b) };
      if (waitEnd - Date.now() >= 10_000) {
        await sleep(waitEnd - Date.now());
        const c = point();
        waiting = { ...cpuShare(b, c), gets: getsBetween(b, c) };
      }
    }

    // The end: every batch finished.
    let finishedAt = 0;
    for (;;) {
      const { rows } = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM batches WHERE user_id = ANY($1) AND status = ANY($2)`,
        [userIds, TERMINAL],
      );
      if (rows[0].n >= batchesWanted) {
        finishedAt = Date.now();
        break;
      }
      if (Date.now() - createStart > 30 * 60_000) throw new Error(`only ${rows[0].n} batches finished after 30 min`);
      await sleep(500);
    }
    const all = cpuShare(allStart, point(finishedAt));
    const othersEnd = othersCpu();
    const share = (k: 'emulators' | 'bench') => (othersEnd[k] - othersStart[k]) / (finishedAt - createStart);
    sampling = false;
    await sampler;

    // Vertex calls of this phase: gaps between two looks at one job.
    const byJob = new Map<string, number[]>();
    for (const c of calls.inflight) {
      if (c.method !== 'get' || !c.job) continue;
      const list = byJob.get(c.job) ?? [];
      list.push(c.at);
      byJob.set(c.job, list);
    }
    let minGap = Number.POSITIVE_INFINITY;
    for (const times of byJob.values()) {
      times.sort((a, b) => a - b);
      for (let i = 1; i < times.length; i++) minGap = Math.min(minGap, times[i] - times[i - 1]);
    }
    const gets = calls.inflight.filter((c) => c.method === 'get').length;
    const creates = calls.inflight.filter((c) => c.method === 'create').length;
    const lists = calls.inflight.filter((c) => c.method === 'list').length;

    // Settlement, exactly.
    const { rows: batchRows } = await db.query<{
      id: string;
      status: string;
      pre: number;
      settled: number | null;
      refunded: number | null;
      completed: number;
      failedCount: number;
    }>(
      `SELECT id, status, pre_deducted AS pre, settled, refunded, request_completed AS completed,
              request_failed AS "failedCount" FROM batches WHERE user_id = ANY($1)`,
      [userIds],
    );
    const wrong = batchRows.filter(
      (b) =>
        b.status !== 'completed' ||
        b.settled === null ||
        Number(b.pre) - Number(b.refunded) !== Number(b.settled) ||
        Number(b.refunded) !== 0 ||
        b.completed !== lineCount.get(b.id) ||
        b.failedCount !== 0,
    );
    const { rows: ledgerRows } = await db.query<{ id: number; quota: number; logs: number; settled: number }>(
      `SELECT u.id, u.quota, (SELECT coalesce(sum(quota_delta), 0) FROM billing_logs l WHERE l.user_id = u.id) AS logs,
              (SELECT coalesce(sum(settled), 0) FROM batches b WHERE b.user_id = u.id) AS settled
         FROM users u WHERE u.id = ANY($1)`,
      [userIds],
    );
    const ledgerWrong = ledgerRows.filter(
      (u) =>
        Number(u.quota) !== Number(u.logs) || startQuota.get(Number(u.id))! - Number(u.quota) !== Number(u.settled),
    );
    const { rows: shardCount } = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM shards s JOIN batches b ON b.id = s.batch_id WHERE b.user_id = ANY($1)`,
      [userIds],
    );

    // ---- Figures and verdicts.
    const checks = {
      latency: latencyMedian < 5000,
      gets: minGap >= pollIntervalMs,
      cpu: waiting !== null && waiting.service !== null && waiting.service < 0.1,
      connections:
        connections.app <= APP_POOL_MAX && Object.entries(connections.named).every(([name, n]) => n <= NAMED_MAX[name]),
      settled:
        batchRows.length === batchesWanted &&
        wrong.length === 0 &&
        ledgerWrong.length === 0 &&
        creates === shardCount[0].n,
    };
    failed = Object.values(checks).some((ok) => !ok);
    const verdict = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
    type Window = NonNullable<typeof waiting>;
    /** Get calls per job per poll interval in a window, and the CPU above idle per Get call. */
    const perInterval = (w: Window) => (w.gets / batchesWanted / (w.seconds / (pollIntervalMs / 1000))).toFixed(3);
    const perGet = (w: Window, k: 'service' | 'postgres') => {
      const busy = w[k];
      const base = idle[k];
      return busy === null || base === null || !w.gets ? '–' : (((busy - base) * w.seconds * 1000) / w.gets).toFixed(2);
    };
    const describe = (w: Window) =>
      `${w.seconds.toFixed(0)} s: service CPU ${pct(w.service)} of a core, Postgres ${pct(w.postgres)}; ${w.gets} Get calls = ${perInterval(w)} per job per poll interval, ${perGet(w, 'service')} ms of service CPU and ${perGet(w, 'postgres')} ms of Postgres CPU each (above idle)`;
    const title = 'bench-inflight: batches in flight and small-batch latency, on the default configuration';
    say(
      [
        `==== ${title} ====`,
        `node ${process.version}, ${os.cpus().length} cpus, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, load ${os
          .loadavg()
          .map((l) => l.toFixed(1))
          .join(
            ' ',
          )}; service defaults: POLL_INTERVAL_MS ${pollIntervalMs}, POLL_MAX_INTERVAL_MS ${pollMaxIntervalMs}, WORKER_CONCURRENCY ${workerConcurrency}`,
        `latency (default emulator, queue ${emulatorDefaults.queueMs} ms): 1-line batch median ${s(latencyMedian)} over ${latencyRuns} runs (target < 5 s) ${verdict(checks.latency)}; the same Vertex job directly ${s(median(directMs))}; first batch after start ${s(cold.ms)}`,
        `in flight: ${batchesWanted} batches, ${userCount} users, slow emulator (queue ${queueMs / 1000} s); uploaded in ${s(uploadedAt - createStart)}, all submitted after ${s(submittedAt - createStart)}, all finished after ${s(finishedAt - createStart)}`,
        `idle (baseline, before any batch): service ${pct(idle.service)} of a core, Postgres ${pct(idle.postgres)}`,
        settling
          ? `all ${batchesWanted} queued, first ${describe(settling)}`
          : 'all queued: no time left (the first job left the queue before all were submitted; raise QUEUE_MS)',
        waiting
          ? `all ${batchesWanted} queued, from ${SETTLE_MS / 1000} s after the last submission on, ${describe(waiting)}: service CPU (target < 10 %) ${verdict(checks.cpu)}`
          : `all queued, from ${SETTLE_MS / 1000} s after the last submission on: less than 10 s left (raise QUEUE_MS) FAIL`,
        `GetBatchPredictionJob: ${gets} calls for ${byJob.size} jobs; shortest gap between two calls for one job ${(minGap / 1000).toFixed(2)} s (target ≥ ${pollIntervalMs / 1000} s, i.e. ≤ 1 per poll interval) ${verdict(checks.gets)}`,
        `other Vertex calls: ${creates} CreateBatchPredictionJob for ${shardCount[0].n} shards, ${lists} ListBatchPredictionJobs (a shard's job looked up before creating it)`,
        `Postgres connections of the service, max over ${connections.samples} samples: pool ${connections.app} (≤ ${APP_POOL_MAX})${Object.entries(
          connections.named,
        )
          .map(([name, n]) => `, ${name} ${n} (≤ ${NAMED_MAX[name]})`)
          .join('')}, total ${connections.total} ${verdict(checks.connections)}`,
        `CPU over the whole run (upload to last batch finished, ${all.seconds.toFixed(0)} s): service ${pct(all.service)} of a core = ${all.serviceMs === null ? '–' : (all.serviceMs / batchesWanted).toFixed(1)} ms per batch, Postgres ${pct(all.postgres)}; emulators ${pct(share('emulators'))}, this client and proxy ${pct(share('bench'))}`,
        `settlement: ${batchRows.length} batches, ${batchRows.length - wrong.length} completed with every line made and pre_deducted − refunded = settled, nothing refunded; ${ledgerRows.length - ledgerWrong.length}/${ledgerRows.length} users with quota = Σ log rows = start − Σ settled ${verdict(checks.settled)}${wrong.length ? ` (e.g. ${JSON.stringify(wrong.slice(0, 3))})` : ''}${ledgerWrong.length ? ` (e.g. ${JSON.stringify(ledgerWrong.slice(0, 3))})` : ''}`,
        '='.repeat(title.length + 10),
        `${failed ? 'FAIL' : 'PASS'}: 1-line latency ${s(latencyMedian)} (direct ${s(median(directMs))}); ${batchesWanted} in flight: ≤ 1 Get per job per ${pollIntervalMs / 1000} s (min gap ${(minGap / 1000).toFixed(2)} s), service CPU waiting ${pct(waiting?.service ?? null)} (idle ${pct(idle.service)}), connections ${connections.total} (≤ ${APP_POOL_MAX + Object.values(NAMED_MAX).reduce((a, b) => a + b, 0)}), ${batchRows.length - wrong.length}/${batchesWanted} settled exactly`,
      ].join('\n'),
    );
    if (process.env.KEEP_LOG === '1') say(`service log: ${svc.logFile}`);
  } finally {
    if (service) await stopChild(service, 20_000).catch(() => {});
    for (const stop of stops.reverse()) await stop().catch(() => {});
    if (process.env.KEEP_LOG !== '1') fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failed) process.exitCode = 1;
}

interface CpuPoint {
  cpu: number | null;
  pg: number | null;
  at: number;
}

/** Shares of one core between two points (null where /proc was not readable). */
function cpuShare(a: CpuPoint, b: CpuPoint) {
  const ms = b.at - a.at;
  const serviceMs = a.cpu === null || b.cpu === null ? null : b.cpu - a.cpu;
  const pgMs = a.pg === null || b.pg === null ? null : b.pg - a.pg;
  return {
    seconds: ms / 1000,
    serviceMs,
    service: serviceMs === null ? null : serviceMs / ms,
    postgres: pgMs === null ? null : pgMs / ms,
  };
}

function pct(share: number | null): string {
  return share === null ? '–' : `${(share * 100).toFixed(1)} %`;
}

/** When each pg-boss step of a batch was queued and started, in ms from the batch's creation. */
async function stepTimeline(db: pg.Client, batchId: string): Promise<string> {
  const { rows } = await db.query<{ name: string; created: number; started: number | null }>(
    `WITH b AS (SELECT id, created_at FROM batches WHERE id = $1)
     SELECT j.name, extract(epoch FROM j.created_on - b.created_at) * 1000 AS created,
            extract(epoch FROM j.started_on - b.created_at) * 1000 AS started
       FROM pgboss.job j, b
      WHERE j.data->>'batchId' = b.id OR j.data->>'shardId' IN (SELECT id FROM shards WHERE batch_id = b.id)
      ORDER BY j.created_on`,
    [batchId],
  );
  const { rows: end } = await db.query<{ done: number }>(
    'SELECT extract(epoch FROM completed_at - created_at) * 1000 AS done FROM batches WHERE id = $1',
    [batchId],
  );
  const ms = (v: number | null) => (v === null ? '–' : Math.round(Number(v)).toString());
  return [
    ...rows.map((r) => `${r.name.replace(/^(batch|shard)-/, '')} queued ${ms(r.created)} started ${ms(r.started)}`),
    `completed ${ms(end[0]?.done ?? null)}`,
  ].join('; ');
}

await runMain(main);
