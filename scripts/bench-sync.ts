/**
 * The gateway's overhead on sync generations: `POST /v1/images/generations` through the whole
 * service (HTTP, API key, Postgres reserve and settle, the official PredictionServiceClient to the
 * emulator) against direct `generateContent` calls to the same emulator with the same official
 * client and the same request body (built by the service's own translator from the same
 * model/prompt/size), so the image work is identical and the difference is the gateway.
 *
 * Processes: a real Postgres (embedded, or a scratch database on --database-url's server), the
 * emulators (startEmulatorProcess, online latency --latency-ms) and the service (`src/main.ts`,
 * pointed at both) each in a process of their own; this process is the load generator. Both sides
 * run closed loops of --concurrency workers (each sends its next request when the previous one
 * answered), --requests requests each per round after --warmup requests each. Rounds alternate
 * direct/gateway in ABBA order (the machine is shared and noisy); the summary gives medians over
 * rounds. Latency is measured here, from the call to the parsed answer. The CPU ms per request of
 * each process (from /proc, Linux only) and how many cores were busy show where the time went: the
 * emulator renders and deflates a real PNG per call (several ms of CPU at 1K), so on a small
 * machine both sides are CPU-bound and the gateway's own CPU (service + Postgres) is its overhead.
 *
 * It is also a correctness check under load: every gateway answer must be 200 with one image, and
 * each user's quota must end at its start minus its requests × the sync price (exit code 1 if not).
 *
 *   node_modules/.bin/node scripts/bench-sync.ts [--rounds 5] [--requests 300] [--warmup 50]
 *     [--concurrency 32] [--latency-ms 100] [--users 1] [--size 1024x1024] [--format b64_json|url]
 *     [--model gemini-2.5-flash-image] [--probe] [--database-url postgres://…] [--json]
 *
 * Every flag has an environment twin: BENCH_SYNC_ROUNDS, BENCH_SYNC_REQUESTS, … (flag wins).
 * --probe samples Postgres every 50 ms during gateway rounds (busy connections, lock waits, the
 * timing of the per-user concurrency count) to show where the gateway's time goes.
 */

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { listModels, type ModelInfo } from '../src/billing/model-catalog.ts';
import { type EmbeddedDatabase, freePort, startEmbeddedPostgres } from '../src/db/embedded.ts';
import { randomToken } from '../src/ids.ts';
import { countOpenSyncJobs } from '../src/images/image-job-queries.ts';
import { checkImageRequest } from '../src/images/image-request.ts';
import { setLogLevel } from '../src/logger.ts';
import { createPredictionClient, type PredictionServiceClient } from '../src/vertex/job-client.ts';
import { toGeminiRequest } from '../src/vertex/translate.ts';
import {
  type Child,
  callJson,
  machineTicks,
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
  wholeNumber,
} from './bench-lib.ts';

const ADMIN_TOKEN = `bench-admin-${randomToken(16)}`;
const PROJECT = 'local-project';
const LOCATION = 'us-central1';
const PROMPT = 'a cinematic photo of a quiet harbour at dawn, fishing boats, mist, soft golden light';
const PROBE_MS = 50;

interface Options {
  rounds: number;
  requests: number;
  warmup: number;
  concurrency: number;
  latencyMs: number;
  users: number;
  size: string;
  format: 'b64_json' | 'url';
  model: string;
  probe: boolean;
  databaseUrl: string | null;
  json: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      requests: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string' },
      'latency-ms': { type: 'string' },
      users: { type: 'string' },
      size: { type: 'string' },
      format: { type: 'string' },
      model: { type: 'string' },
      probe: { type: 'boolean' },
      'database-url': { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const env = (flag: string) => process.env[`BENCH_SYNC_${flag.toUpperCase().replaceAll('-', '_')}`];
  const str = (flag: keyof typeof values, fallback: string) => String(values[flag] ?? env(flag) ?? fallback);
  const int = (flag: keyof typeof values, fallback: number, min: number) =>
    wholeNumber(`--${flag}`, str(flag, ''), fallback, min);
  const bool = (flag: keyof typeof values) => values[flag] === true || ['1', 'true'].includes(env(flag) ?? '');
  const format = str('format', 'b64_json');
  if (format !== 'b64_json' && format !== 'url') throw new Error('--format must be b64_json or url');
  return {
    rounds: int('rounds', 5, 1),
    requests: int('requests', 300, 1),
    warmup: int('warmup', 50, 0),
    concurrency: int('concurrency', 32, 1),
    latencyMs: int('latency-ms', 100, 0),
    users: int('users', 1, 1),
    size: str('size', '1024x1024'),
    format,
    model: str('model', 'gemini-2.5-flash-image'),
    probe: bool('probe'),
    databaseUrl: values['database-url'] ?? env('database-url') ?? null,
    json: bool('json'),
  };
}

interface CpuSnapshot {
  service: number | null;
  emulator: number | null;
  postgres: number | null;
  client: number;
  machine: { busy: number; total: number } | null;
}

interface CpuUse {
  /** CPU ms per request of each process. */
  perRequest: { service: number | null; emulator: number | null; postgres: number | null; client: number };
  /** How many of the machine's cores were busy on average (everything on it, not only ours). */
  coresBusy: number | null;
}

// ---------------------------------------------------------------------------------------------
// Load

interface RoundResult {
  side: 'direct' | 'gateway';
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  errors: Record<string, number>;
  cpu: CpuUse;
  probe?: ProbeSummary;
}

/** `total` requests by `concurrency` workers, each sending the next when its previous answered. */
async function closedLoop(
  total: number,
  concurrency: number,
  send: (i: number, worker: number) => Promise<void>,
): Promise<{ seconds: number; latencies: Float64Array; errors: Record<string, number> }> {
  const latencies = new Float64Array(total);
  const errors: Record<string, number> = {};
  let next = 0;
  const worker = async (w: number) => {
    for (let i = next++; i < total; i = next++) {
      const t0 = performance.now();
      try {
        await send(i, w);
      } catch (err) {
        const key = String((err as Error).message ?? err).slice(0, 160);
        errors[key] = (errors[key] ?? 0) + 1;
      }
      latencies[i] = performance.now() - t0;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, (_, w) => worker(w)));
  return { seconds: (performance.now() - start) / 1000, latencies, errors };
}

/** Nearest-rank percentile. */
function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

const PNG_SIGNATURE = '89504e470d0a1a0a';

function isPng(data: string | Uint8Array | null | undefined): boolean {
  if (!data) return false;
  const head = typeof data === 'string' ? Buffer.from(data.slice(0, 12), 'base64') : Buffer.from(data.slice(0, 8));
  return head.subarray(0, 8).toString('hex') === PNG_SIGNATURE;
}

// ---------------------------------------------------------------------------------------------
// Postgres probe (--probe)

interface ProbeSummary {
  samples: number;
  /** Connections of the service's database not idle (running, or idle in a transaction). */
  busyMedian: number;
  busyMax: number;
  /** Share of samples with at least one backend waiting on a lock, and the mean number waiting. */
  lockWaitShare: number;
  lockWaitMean: number;
  /** The service's per-user concurrency count, timed from here under the same load… */
  countQueryMsMedian: number;
  /** …and a bare `SELECT 1` just before it: what any round trip costs at that moment. */
  selectOneMsMedian: number;
}

function startProbe(databaseUrl: string, userIds: number[]): { stop(): Promise<ProbeSummary> } {
  const client = new pg.Client({ connectionString: databaseUrl });
  const busy: number[] = [];
  const waits: number[] = [];
  const countMs: number[] = [];
  const selectOneMs: number[] = [];
  let running = true;
  const loop = (async () => {
    await client.connect();
    while (running) {
      const { rows } = await client.query<{ busy: number; lock_waits: number }>(
        `SELECT count(*) FILTER (WHERE state <> 'idle')::int AS busy,
                count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS lock_waits
           FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`,
      );
      busy.push(rows[0].busy);
      waits.push(rows[0].lock_waits);
      const t0 = performance.now();
      await client.query('SELECT 1');
      const t1 = performance.now();
      await countOpenSyncJobs(client, userIds[0]);
      selectOneMs.push(t1 - t0);
      countMs.push(performance.now() - t1);
      await new Promise((r) => setTimeout(r, PROBE_MS));
    }
    await client.end();
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return {
        samples: busy.length,
        busyMedian: median(busy),
        busyMax: Math.max(...busy),
        lockWaitShare: waits.filter((w) => w > 0).length / waits.length,
        lockWaitMean: waits.reduce((a, b) => a + b, 0) / waits.length,
        countQueryMsMedian: median(countMs),
        selectOneMsMedian: median(selectOneMs),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = options();
  setLogLevel('warn');
  const say = (line: string) => (opts.json ? process.stderr : process.stdout).write(`${line}\n`);
  const dir = makeTempDir('ibg-bench-sync-');
  const children: Child[] = [];
  let embedded: EmbeddedDatabase | null = null;
  let postmaster: number | null = null;
  let scratch: { adminUrl: string; name: string } | null = null;
  let direct: PredictionServiceClient | null = null;
  let failed = false;
  try {
    // Postgres: embedded here, or a scratch database on the given server.
    const t0 = Date.now();
    let databaseUrl: string;
    if (opts.databaseUrl) {
      const name = `ibg_bench_${randomToken(10).toLowerCase()}`;
      const admin = new pg.Client({ connectionString: opts.databaseUrl });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      scratch = { adminUrl: opts.databaseUrl, name };
      const u = new URL(opts.databaseUrl);
      u.pathname = `/${name}`;
      databaseUrl = u.toString();
    } else {
      const pgDir = path.join(dir, 'pg', 'data');
      embedded = await startEmbeddedPostgres(pgDir);
      databaseUrl = embedded.connectionString('postgres');
      postmaster = postmasterPid(pgDir);
    }

    // The emulators, then the service pointed at them.
    const emulator = await startEmulatorProcess('emulators', dir, {
      env: { VERTEX_EMULATOR_ONLINE_MS: String(opts.latencyMs) },
    });
    children.push(emulator);
    const { vertexUrl, gcsUrl } = emulator;
    const servicePort = await freePort();
    const service = startChild(
      'service',
      serviceCommand(),
      {
        PORT: String(servicePort),
        HOST: '127.0.0.1',
        DATA_DIR: path.join(dir, 'service'),
        DATABASE_URL: databaseUrl,
        GCS_API_ENDPOINT: gcsUrl,
        VERTEX_API_ENDPOINT: vertexUrl,
        ADMIN_TOKEN,
        LOG_LEVEL: 'warn',
        USER_MAX_CONCURRENT_REQUESTS: String(Math.max(64, opts.concurrency * 4)),
      },
      dir,
    );
    children.push(service);
    const url = `http://127.0.0.1:${servicePort}`;
    await waitHttp(service, `${url}/readyz`);
    say(`started Postgres, emulators and service in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // The request: checked and translated exactly as the service does it.
    const catalog = new pg.Client({ connectionString: databaseUrl });
    await catalog.connect();
    const models: ModelInfo[] = await listModels(catalog, null, true);
    const rawBody = { model: opts.model, prompt: PROMPT, size: opts.size, n: 1, response_format: opts.format };
    const checked = checkImageRequest(rawBody, models);
    const price = checked.model.unitPrices[checked.tier];
    const vertexRequest = {
      model: `projects/${PROJECT}/locations/${LOCATION}/${checked.model.publisherModel}`,
      ...toGeminiRequest(checked.body, checked.model, [], { withText: true }),
    };
    const bodyText = JSON.stringify(rawBody);

    // Users, with quota for every request they could make.
    const perUserMax = opts.warmup + opts.rounds * opts.requests;
    const startQuota = perUserMax * price + 1_000_000;
    const admin = (method: string, p: string, body?: unknown) => callJson(url, method, p, ADMIN_TOKEN, body);
    const users: Array<{ id: number; key: string; ok: number }> = [];
    for (let u = 0; u < opts.users; u++) {
      const created = await admin('POST', '/admin/users', { name: `bench user ${u}`, quota: startQuota });
      users.push({ id: created.id, key: created.api_key, ok: 0 });
    }

    direct = createPredictionClient({ location: LOCATION, endpoint: vertexUrl });
    const client = direct;
    const sendDirect = async () => {
      const [response] = (await client.generateContent(vertexRequest as never, { timeout: 120_000 })) as unknown as [
        { candidates?: Array<{ content?: { parts?: Array<{ inlineData?: { data?: string | Uint8Array } }> } }> },
      ];
      // The text part (the gateway's revised_prompt) and one PNG.
      const images = (response.candidates?.[0]?.content?.parts ?? []).filter((p) => p.inlineData);
      if (images.length !== 1 || !isPng(images[0].inlineData?.data)) {
        throw new Error('direct: no PNG image in the answer');
      }
    };
    const sendGateway = async (_i: number, worker: number) => {
      const user = users[worker % users.length];
      const res = await fetch(`${url}/v1/images/generations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${user.key}`, 'content-type': 'application/json' },
        body: bodyText,
      });
      const body = (await res.json()) as {
        data?: Array<{ b64_json?: string; url?: string }>;
        error?: { code?: string };
      };
      if (res.status !== 200) throw new Error(`gateway: HTTP ${res.status} ${body.error?.code ?? ''}`);
      user.ok++; // charged: it answered 200
      const image = body.data?.length === 1 ? body.data[0] : null;
      const good = opts.format === 'url' ? typeof image?.url === 'string' : isPng(image?.b64_json);
      if (!good) throw new Error(`gateway: not one ${opts.format === 'url' ? 'link' : 'PNG image'} in the answer`);
    };

    const snapshot = (): CpuSnapshot => {
      const own = process.cpuUsage();
      return {
        service: processCpuMs(service.proc.pid!),
        emulator: processCpuMs(emulator.proc.pid!),
        postgres: postgresCpuMs(postmaster),
        client: (own.user + own.system) / 1000,
        machine: machineTicks(),
      };
    };
    const cpuUse = (a: CpuSnapshot, b: CpuSnapshot, requests: number): CpuUse => {
      const per = (x: number | null, y: number | null) => (x === null || y === null ? null : (y - x) / requests);
      const m =
        a.machine && b.machine
          ? { busy: b.machine.busy - a.machine.busy, total: b.machine.total - a.machine.total }
          : null;
      return {
        perRequest: {
          service: per(a.service, b.service),
          emulator: per(a.emulator, b.emulator),
          postgres: per(a.postgres, b.postgres),
          client: (b.client - a.client) / requests,
        },
        coresBusy: m && m.total > 0 ? (m.busy / m.total) * os.cpus().length : null,
      };
    };
    const round = async (side: RoundResult['side'], requests: number): Promise<RoundResult> => {
      const probe =
        side === 'gateway' && opts.probe
          ? startProbe(
              databaseUrl,
              users.map((u) => u.id),
            )
          : null;
      const before = snapshot();
      const run = await closedLoop(requests, opts.concurrency, side === 'direct' ? sendDirect : sendGateway);
      const after = snapshot();
      const sorted = run.latencies.slice().sort();
      return {
        side,
        requests,
        seconds: run.seconds,
        rps: requests / run.seconds,
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
        max: sorted[sorted.length - 1],
        errors: run.errors,
        cpu: cpuUse(before, after, requests),
        probe: probe ? await probe.stop() : undefined,
      };
    };

    const warmups: RoundResult[] = [];
    if (opts.warmup > 0) {
      warmups.push(await round('direct', opts.warmup), await round('gateway', opts.warmup));
      say(`warm-up: ${opts.warmup} requests each side`);
    }
    const directRuns: RoundResult[] = [];
    const gatewayRuns: RoundResult[] = [];
    const fmt = (r: RoundResult) =>
      `${r.side} ${r.rps.toFixed(0)} req/s p50 ${r.p50.toFixed(1)} p99 ${r.p99.toFixed(1)} ms` +
      (Object.keys(r.errors).length ? ` ERRORS ${JSON.stringify(r.errors)}` : '');
    for (let r = 0; r < opts.rounds; r++) {
      // ABBA: neither side always goes first into whatever the machine is doing.
      const order: Array<RoundResult['side']> = r % 2 === 0 ? ['direct', 'gateway'] : ['gateway', 'direct'];
      const results: RoundResult[] = [];
      for (const side of order) results.push(await round(side, opts.requests));
      const d = results.find((x) => x.side === 'direct')!;
      const g = results.find((x) => x.side === 'gateway')!;
      directRuns.push(d);
      gatewayRuns.push(g);
      say(
        `round ${r + 1}: ${fmt(d)} | ${fmt(g)} | overhead p50 ${(g.p50 - d.p50).toFixed(1)} p99 ${(g.p99 - d.p99).toFixed(1)} ms${g.probe ? ` | pg busy ${g.probe.busyMedian}/${g.probe.busyMax} lock-waits ${(g.probe.lockWaitShare * 100).toFixed(0)}%` : ''}`,
      );
    }

    // Correctness: every gateway answer 200 with one image; quota = start − 200s × price; jobs settled.
    const allGateway = [...warmups.filter((w) => w.side === 'gateway'), ...gatewayRuns];
    const allDirect = [...warmups.filter((w) => w.side === 'direct'), ...directRuns];
    const sent = allGateway.reduce((a, r) => a + r.requests, 0);
    const errorCount = (runs: RoundResult[]) =>
      runs.reduce((a, r) => a + Object.values(r.errors).reduce((x, y) => x + y, 0), 0);
    const gatewayErrors = errorCount(allGateway);
    const directErrors = errorCount(allDirect);
    const quotas = [];
    for (const u of users) {
      const now = (await admin('GET', `/admin/users/${u.id}`)).quota as number;
      quotas.push({ user: u.id, start: startQuota, ok: u.ok, expected: startQuota - u.ok * price, actual: now });
    }
    const { rows: jobRows } = await catalog.query<{ status: string; n: number; settled: number; refunded: number }>(
      `SELECT status, count(*)::int AS n, sum(settled)::bigint AS settled, sum(refunded)::bigint AS refunded
         FROM image_jobs WHERE user_id = ANY($1) GROUP BY status ORDER BY status`,
      [users.map((u) => u.id)],
    );
    await catalog.end();
    const succeeded = jobRows.find((j) => j.status === 'succeeded');
    const checks = {
      gatewayAnswers: { sent, errors: gatewayErrors, ok: gatewayErrors === 0 },
      directAnswers: {
        sent: allDirect.reduce((a, r) => a + r.requests, 0),
        errors: directErrors,
        ok: directErrors === 0,
      },
      quota: { price, users: quotas, ok: quotas.every((q) => q.actual === q.expected) },
      jobs: {
        byStatus: jobRows,
        ok:
          jobRows.length === 1 &&
          succeeded?.n === sent &&
          Number(succeeded.settled) === sent * price &&
          Number(succeeded.refunded) === 0,
      },
    };
    failed = !(checks.gatewayAnswers.ok && checks.directAnswers.ok && checks.quota.ok && checks.jobs.ok);

    // Medians over rounds; overhead and ratio are paired within each round first.
    const med = (runs: RoundResult[], f: (r: RoundResult) => number) => median(runs.map(f));
    const paired = (f: (d: RoundResult, g: RoundResult) => number) => directRuns.map((d, i) => f(d, gatewayRuns[i]));
    const overheadP50 = paired((d, g) => g.p50 - d.p50);
    const overheadP99 = paired((d, g) => g.p99 - d.p99);
    const ratios = paired((d, g) => g.rps / d.rps);
    const cpuMed = (runs: RoundResult[], k: keyof CpuUse['perRequest']) =>
      runs.every((r) => r.cpu.perRequest[k] !== null) ? med(runs, (r) => r.cpu.perRequest[k]!) : null;
    const sideSummary = (runs: RoundResult[]) => ({
      rps: med(runs, (r) => r.rps),
      p50Ms: med(runs, (r) => r.p50),
      p99Ms: med(runs, (r) => r.p99),
      cpuMsPerRequest: {
        service: cpuMed(runs, 'service'),
        emulator: cpuMed(runs, 'emulator'),
        postgres: cpuMed(runs, 'postgres'),
        client: cpuMed(runs, 'client'),
      },
      coresBusy: runs.every((r) => r.cpu.coresBusy !== null) ? med(runs, (r) => r.cpu.coresBusy!) : null,
    });
    const summary = {
      config: { ...opts, databaseUrl: opts.databaseUrl ? '(external)' : '(embedded)', prompt: PROMPT },
      machine: { node: process.version, cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30) },
      direct: sideSummary(directRuns),
      gateway: sideSummary(gatewayRuns),
      overheadMs: {
        p50: median(overheadP50),
        p99: median(overheadP99),
        perRound: { p50: overheadP50, p99: overheadP99 },
      },
      rpsRatio: { median: median(ratios), perRound: ratios },
      probe: opts.probe ? gatewayRuns.map((r) => r.probe) : undefined,
      rounds: { direct: directRuns, gateway: gatewayRuns },
      checks,
      ok: !failed,
    };

    if (opts.json) {
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    } else {
      const n1 = (v: number | null) => (v === null ? '   –' : v.toFixed(2).padStart(5));
      const row = (name: string, s: ReturnType<typeof sideSummary>) =>
        `${name.padEnd(8)} ${s.rps.toFixed(1).padStart(7)} ${s.p50Ms.toFixed(1).padStart(8)} ${s.p99Ms.toFixed(1).padStart(8)}` +
        `    ${n1(s.cpuMsPerRequest.service)}   ${n1(s.cpuMsPerRequest.emulator)}   ${n1(s.cpuMsPerRequest.postgres)}   ${n1(s.cpuMsPerRequest.client)}` +
        `   ${s.coresBusy === null ? '–' : s.coresBusy.toFixed(2)}`;
      const list = (xs: number[], digits = 1) => xs.map((x) => x.toFixed(digits)).join(', ');
      const ok = (b: boolean) => (b ? 'OK' : 'FAIL');
      const probes = gatewayRuns.map((r) => r.probe!);
      const probeLine = () =>
        `postgres during gateway rounds (every ${PROBE_MS} ms): busy connections median ${list(
          probes.map((p) => p.busyMedian),
          0,
        )}, ` +
        `max ${list(
          probes.map((p) => p.busyMax),
          0,
        )}; samples with lock waits ${probes.map((p) => `${(p.lockWaitShare * 100).toFixed(0)}%`).join(', ')} ` +
        `(mean waiting ${list(probes.map((p) => p.lockWaitMean))}); per-user count query ${list(
          probes.map((p) => p.countQueryMsMedian),
          2,
        )} ms ` +
        `vs SELECT 1 ${list(
          probes.map((p) => p.selectOneMsMedian),
          2,
        )} ms`;
      const wrong = quotas.filter((q) => q.actual !== q.expected);
      const quotaLine =
        quotas.length <= 2
          ? quotas
              .map((q) => `user ${q.user} ${q.start} − ${q.ok} × ${price} = ${q.expected}, is ${q.actual}`)
              .join('; ')
          : `${quotas.length} users, each ${startQuota} − its ${quotas.map((q) => q.ok).join('/')} × ${price}; ${wrong.length} differ${wrong.length ? ` (${JSON.stringify(wrong.slice(0, 3))})` : ''}`;
      const title = 'bench-sync: sync POST /v1/images/generations through the gateway vs direct generateContent';
      say(
        [
          `==== ${title} ====`,
          `node ${process.version}, ${os.cpus().length} cpus, ${summary.machine.memGiB} GiB RAM; ${opts.rounds} rounds (ABBA), ${opts.requests} requests per side per round after ${opts.warmup} warm-up, concurrency ${opts.concurrency} (closed loop)`,
          `emulator latency ${opts.latencyMs} ms; ${checked.model.id} ${opts.size} (${checked.tier}) n=1 ${opts.format}; ${opts.users} user(s); Postgres ${opts.databaseUrl ? 'external' : 'embedded'}; emulators, service and Postgres in their own processes, load from this one`,
          `side       req/s  p50 ms   p99 ms    cpu ms/req: service emulator postgres client   cores busy`,
          row('direct', summary.direct),
          row('gateway', summary.gateway),
          `overhead per request (gateway − direct, paired per round, median): p50 ${summary.overheadMs.p50.toFixed(1)} ms, p99 ${summary.overheadMs.p99.toFixed(1)} ms  (per round p50 ${list(overheadP50)}; p99 ${list(overheadP99)})`,
          `req/s ratio gateway/direct: ${summary.rpsRatio.median.toFixed(2)}  (per round ${list(ratios, 2)})`,
          ...(opts.probe ? [probeLine()] : []),
          `check: ${sent} gateway requests answered 200 with one image each: ${ok(checks.gatewayAnswers.ok)}${gatewayErrors ? ` (${gatewayErrors} did not)` : ''}; direct answers with an image: ${ok(checks.directAnswers.ok)}`,
          `check: final quota = start − requests answered × price (${price}): ${quotaLine}: ${ok(checks.quota.ok)}`,
          `check: image jobs ${jobRows.map((j) => `${j.status} ${j.n} (settled ${j.settled}, refunded ${j.refunded})`).join(', ')}: ${ok(checks.jobs.ok)}`,
          '='.repeat(title.length + 10),
        ].join('\n'),
      );
    }
  } finally {
    await direct?.close().catch(() => {});
    for (const child of children.reverse()) await stopChild(child).catch(() => {});
    await embedded?.stop().catch(() => {});
    if (scratch) {
      const admin = new pg.Client({ connectionString: scratch.adminUrl });
      await admin
        .connect()
        .then(() => admin.query(`DROP DATABASE IF EXISTS ${scratch!.name} WITH (FORCE)`))
        .finally(() => admin.end())
        .catch(() => {});
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failed) process.exitCode = 1;
}

await runMain(main);
