/**
 * One big batch end to end through the real service: a JSONL of LINES requests (default
 * 1,000,000) is generated on disk, uploaded as one multipart stream, validated, charged, staged
 * into shards, run by the Vertex emulator, stitched and settled, and the output is checked.
 *
 * The service runs as a child process on its embedded defaults (embedded Postgres, the emulators
 * in-process: their memory counts in its RSS), with these overrides only:
 *   VERTEX_EMULATOR_IMAGE=tiny       every image is one small precomputed PNG (no rendering per image)
 *   VERTEX_EMULATOR_LINE_MS=0        the emulated model takes no time per line
 *   VERTEX_EMULATOR_QUEUE_MS=200     and jobs wait 0.2 s in the emulated queue instead of 2 s
 *   POLL_INTERVAL_MS=500, POLL_MAX_INTERVAL_MS=2s   Vertex jobs are looked at often
 *   BATCH_MAX_REQUESTS=LINES (when above the default)
 *   EMBEDDED_POSTGRES_PORT=a free port, so that this script can read Postgres's statistics
 * SHARD_MAX_REQUESTS keeps its default (10,000): a million lines run as 100 Vertex jobs.
 *
 * Reported per run: the time of each phase (upload as the client saw it; the others from the
 * database: validate, stage and finalize are the pg-boss jobs' start and end, Vertex from the
 * first submission until the last shard ended, stitch until the settling transaction began,
 * settle from then to the end of the finalize step, which deletes the staging objects), lines/s
 * end to end, the service process's RSS (sampled every 200 ms, per phase, and its high-water mark
 * VmHWM), the CPU it used, the Postgres rows written (inserted, updated, deleted: the service's
 * tables and pg-boss's queue apart, from pg_stat_user_tables), and a check of the results
 * (streamed): every custom_id exactly once over the output and error files, each file in input
 * order, every image a PNG, the lines meant to fail (one in 1,000 carries `[emulate:fail]`) and
 * only those in the error file, and the bill (settled = images made × price, pre-deducted −
 * refunded = settled).
 *
 * A reference run of REFERENCE_LINES (default LINES / 10; 0 for none) goes first, so that the
 * growth of memory and Postgres rows from one size to the other can be seen. The emulators run
 * in a process of their own (as `npm run emulators`, with the same overrides) and the service is
 * pointed at them, so that the service's RSS is the gateway's alone, as deployed against Google
 * (the emulators answer a million predictions from memory they would add to it);
 * EMULATORS=in-service runs them inside the service as `npm start` does. The last line is one
 * summary line.
 *
 *   LINES=1000000 REFERENCE_LINES=100000 npm run bench:scale
 */

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { freePort } from '../src/db/embedded.ts';
import { randomToken } from '../src/ids.ts';
import {
  type Child,
  callJson,
  closeStream,
  type EmulatorProcess,
  envInt,
  makeTempDir,
  processCpuMs,
  procStatusKb,
  runMain,
  serviceCommand,
  startChild,
  startEmulatorProcess,
  stopChild,
  tail,
  waitHttp,
  writeAll,
} from './bench-lib.ts';

const MODEL = 'gemini-2.5-flash-image';
/** Sync price of a 1K image on this model (5,000) × the batch ratio (0.5). */
const IMAGE_PRICE = 2500;
/** Goals of the issue this benchmark answers. */
const RSS_GOAL_MB = 300;
const SAMPLE_MS = 200;
/** Postgres writes a backend's statistics at most every second, and an idle one's within 10 s. */
const STATS_FLUSH_MS = 11_000;
const RUN_TIMEOUT_MS = 60 * 60_000;

const fmtInt = (n: number) => n.toLocaleString('en-US');
const sec = (ms: number) => (ms / 1000).toFixed(1);

// ---------------------------------------------------------------------------------------------
// The input

/** Line i: n = 2 on every 100th line, `[emulate:fail]` on every 1,000th (those fail in Vertex). */
const imagesOf = (i: number) => (i % 100 === 50 ? 2 : 1);
const failsAt = (i: number) => i % 1000 === 999;

async function generateInput(file: string, lines: number): Promise<{ bytes: number; images: number }> {
  const ws = fs.createWriteStream(file, { highWaterMark: 1 << 20 });
  let images = 0;
  let chunk = '';
  for (let i = 0; i < lines; i++) {
    const n = imagesOf(i);
    images += n;
    const prompt = `a watercolor lighthouse at dusk, study ${i}${failsAt(i) ? ' [emulate:fail]' : ''}`;
    chunk += `{"custom_id":"req-${i}","method":"POST","url":"/v1/images/generations","body":{"model":"${MODEL}","prompt":"${prompt}","size":"1024x1024"${n > 1 ? `,"n":${n}` : ''}}}\n`;
    if (chunk.length >= 1 << 16) {
      await writeAll(ws, chunk);
      chunk = '';
    }
  }
  await writeAll(ws, chunk);
  await closeStream(ws);
  return { bytes: fs.statSync(file).size, images };
}

// ---------------------------------------------------------------------------------------------
// The service

interface Service extends Child {
  url: string;
  databaseUrl: string;
  startedAt: number;
}

async function startService(dir: string, env: Record<string, string>): Promise<Service> {
  const [port, pgPort] = [await freePort(), await freePort()];
  const startedAt = Date.now();
  const child = startChild(
    'service',
    serviceCommand(),
    {
      PORT: String(port),
      HOST: '127.0.0.1',
      DATA_DIR: path.join(dir, 'data'),
      EMBEDDED_POSTGRES_PORT: String(pgPort),
      LOG_LEVEL: 'warn',
      ...env,
    },
    dir,
    // Debugging aid: everything the service prints, kept in this file.
    { logFile: process.env.BENCH_SCALE_SERVICE_LOG || undefined },
  );
  const service: Service = {
    ...child,
    url: `http://127.0.0.1:${port}`,
    databaseUrl: `postgres://gateway:gateway@127.0.0.1:${pgPort}/gateway`,
    startedAt,
  };
  await waitHttp(service, `${service.url}/readyz`);
  return service;
}

function api<T>(s: Service, method: string, p: string, key: string, body?: unknown): Promise<T> {
  return callJson<T>(s.url, method, p, key, body);
}

/** The JSONL as one multipart/form-data stream (purpose, then the file), never in memory. */
async function upload(s: Service, key: string, file: string): Promise<{ id: string; status: string }> {
  const boundary = `----bench-scale-${randomToken(12)}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nimage_batch\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="scale.jsonl"\r\n` +
      'Content-Type: application/jsonl\r\n\r\n',
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const req = http.request(`${s.url}/v1/image-files`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': `multipart/form-data; boundary=${boundary}`,
      'content-length': head.length + fs.statSync(file).size + tail.length,
    },
  });
  const answered = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
  const body = Readable.from(
    (async function* () {
      yield head;
      yield* fs.createReadStream(file, { highWaterMark: 1 << 20 });
      yield tail;
    })(),
  );
  await pipeline(body, req);
  const res = await answered;
  let text = '';
  for await (const chunk of res) text += chunk;
  if (res.statusCode !== 200 && res.statusCode !== 201) throw new Error(`upload: HTTP ${res.statusCode} ${text}`);
  return JSON.parse(text) as { id: string; status: string };
}

// ---------------------------------------------------------------------------------------------
// Watching the service process

interface RssSample {
  at: number;
  mb: number;
  /** CPU ms the service had used by then. */
  cpu: number | null;
}

/** V8's heap (used, total) and external memory of the service in MB, from its /metrics when it answers. */
async function heapOf(s: Service): Promise<string> {
  try {
    const res = await fetch(`${s.url}/metrics`);
    if (!res.ok) return '';
    const text = await res.text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? Number.NaN) / 2 ** 20;
    const [used, total, external] = [
      value('nodejs_heap_size_used_bytes'),
      value('nodejs_heap_size_total_bytes'),
      value('nodejs_external_memory_bytes'),
    ];
    if (Number.isNaN(used)) return '';
    return ` (heap ${used.toFixed(0)}/${total.toFixed(0)} MB, external ${external.toFixed(0)} MB)`;
  } catch {
    return '';
  }
}

/** Where a process's resident memory is, by mapping (debugging aid: BENCH_SCALE_SMAPS=1). */
function smapsSummary(pid: number): string {
  const text = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const by = new Map<string, number>();
  let name = '';
  let size = 0;
  for (const line of text.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const [a, b] = line
        .split(' ')[0]
        .split('-')
        .map((x) => Number.parseInt(x, 16));
      size = (b - a) / 2 ** 20;
      name = head[1] || `anon ${size >= 64 ? '≥64MB' : size >= 1 ? '1-64MB' : '<1MB'}`;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) by.set(name, (by.get(name) ?? 0) + Number(rss[1]) / 1024);
    const lazy = /^LazyFree:\s+(\d+) kB/.exec(line);
    if (lazy) by.set('(of which LazyFree)', (by.get('(of which LazyFree)') ?? 0) + Number(lazy[1]) / 1024);
  }
  return [...by]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 12)
    .map(([k, v]) => `    ${v.toFixed(0).padStart(5)} MB ${k}`)
    .join('\n');
}

function sampleRss(pid: number): { samples: RssSample[]; stop(): void } {
  const samples: RssSample[] = [];
  const take = () => {
    const kb = procStatusKb(pid, 'VmRSS');
    if (kb !== null) samples.push({ at: Date.now(), mb: kb / 1024, cpu: processCpuMs(pid) });
  };
  take();
  const timer = setInterval(take, SAMPLE_MS);
  return { samples, stop: () => clearInterval(timer) };
}

// ---------------------------------------------------------------------------------------------
// Postgres: statistics and the pipeline's timestamps

interface RowCounts {
  public: { ins: number; upd: number; del: number; byTable: Record<string, number> };
  pgboss: { ins: number; upd: number; del: number };
}

async function rowCounts(db: pg.Client): Promise<RowCounts> {
  const { rows } = await db.query<{ schema: string; table: string; ins: string; upd: string; del: string }>(
    `SELECT schemaname AS schema, relname AS table, n_tup_ins AS ins, n_tup_upd AS upd, n_tup_del AS del
       FROM pg_stat_user_tables`,
  );
  const out: RowCounts = { public: { ins: 0, upd: 0, del: 0, byTable: {} }, pgboss: { ins: 0, upd: 0, del: 0 } };
  for (const r of rows) {
    const target = r.schema === 'pgboss' ? out.pgboss : r.schema === 'public' ? out.public : null;
    if (!target) continue;
    target.ins += Number(r.ins);
    target.upd += Number(r.upd);
    target.del += Number(r.del);
    if (r.schema === 'public') {
      out.public.byTable[r.table] = Number(r.ins) + Number(r.upd) + Number(r.del);
    }
  }
  return out;
}

function rowDelta(a: RowCounts, b: RowCounts) {
  const byTable: Record<string, number> = {};
  for (const [t, n] of Object.entries(b.public.byTable)) {
    const d = n - (a.public.byTable[t] ?? 0);
    if (d) byTable[t] = d;
  }
  const d = (x: { ins: number; upd: number; del: number }, y: { ins: number; upd: number; del: number }) => ({
    ins: y.ins - x.ins,
    upd: y.upd - x.upd,
    del: y.del - x.del,
    total: y.ins - x.ins + (y.upd - x.upd) + (y.del - x.del),
  });
  return { public: { ...d(a.public, b.public), byTable }, pgboss: d(a.pgboss, b.pgboss) };
}

interface Phase {
  name: string;
  start: number;
  end: number;
}

async function phasesFromDatabase(
  db: pg.Client,
  batchId: string,
): Promise<{ phases: Phase[]; shards: number; steps: string }> {
  // The batch is completed once settled; its finalize step goes on deleting the staging objects.
  for (let tries = 0; ; tries++) {
    const { rowCount } = await db.query(
      "SELECT 1 FROM pgboss.job WHERE name = 'batch-finalize' AND state = 'completed'",
    );
    if (rowCount) break;
    if (tries > 600) throw new Error('the finalize step did not end');
    await new Promise((r) => setTimeout(r, 100));
  }
  // A step's first run (the sweep queues a step again when it runs longer than SWEEP_INTERVAL_MS;
  // that second job then finds nothing to do); the first submission of all.
  const { rows: jobs } = await db.query<{ name: string; first: Date; last: Date }>(
    `SELECT DISTINCT ON (name) name, started_on AS first, completed_on AS last
       FROM pgboss.job WHERE state = 'completed' ORDER BY name, started_on`,
  );
  const job = (name: string) => {
    const j = jobs.find((x) => x.name === name);
    if (!j) throw new Error(`no completed ${name} job`);
    return { start: j.first.getTime(), end: j.last.getTime() };
  };
  const { rows: b } = await db.query<{ finalizing: Date }>(
    'SELECT finalizing_at AS finalizing FROM batches WHERE id = $1',
    [batchId],
  );
  const { rows: f } = await db.query<{ settling: Date }>(
    `SELECT min(created_at) AS settling FROM files WHERE purpose IN ('batch_output', 'batch_error')`,
  );
  const { rows: s } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM shards WHERE batch_id = $1', [
    batchId,
  ]);
  // Every run of every step: a retried step (a failure, or a worker taken for dead) shows here.
  const { rows: runs } = await db.query<{ name: string; jobs: number; retries: number; states: string }>(
    `SELECT name, count(*)::int AS jobs, sum(retry_count)::int AS retries, string_agg(DISTINCT state::text, ',') AS states
       FROM pgboss.job WHERE name LIKE 'batch-%' OR name LIKE 'shard-%' GROUP BY name ORDER BY min(created_on)`,
  );
  const steps = runs
    .map(
      (r) =>
        `${r.name} ${r.jobs}${r.retries ? ` (${r.retries} retries)` : ''}${r.states !== 'completed' ? ` [${r.states}]` : ''}`,
    )
    .join(', ');
  const finalize = job('batch-finalize');
  const settling = f[0].settling.getTime();
  return {
    phases: [
      { name: 'validate', ...job('batch-validate') },
      { name: 'stage', ...job('batch-stage') },
      { name: 'vertex', start: job('shard-submit').start, end: b[0].finalizing.getTime() },
      { name: 'stitch', start: finalize.start, end: settling },
      { name: 'settle', start: settling, end: finalize.end },
    ],
    shards: s[0].n,
    steps,
  };
}

// ---------------------------------------------------------------------------------------------
// Checking the output, streamed

interface OutputCheck {
  outputLines: number;
  errorLines: number;
  images: number;
  problems: string[];
}

async function* linesOf(s: Service, key: string, fileId: string | null): AsyncGenerator<string> {
  if (!fileId) return;
  const res = await fetch(`${s.url}/v1/files/${fileId}/content`, { headers: { authorization: `Bearer ${key}` } });
  if (!res.ok || !res.body) throw new Error(`download ${fileId}: HTTP ${res.status}`);
  let carry = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    const text = carry + decoder.decode(chunk as Uint8Array, { stream: true });
    const parts = text.split('\n');
    carry = parts.pop()!;
    yield* parts;
  }
  carry += decoder.decode();
  if (carry) yield carry;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

async function checkOutput(
  s: Service,
  key: string,
  lines: number,
  files: { output: string | null; errors: string | null },
): Promise<OutputCheck> {
  const seen = new Uint8Array(lines);
  const problems: string[] = [];
  const problem = (p: string) => {
    if (problems.length < 10) problems.push(p);
  };
  const check: OutputCheck = { outputLines: 0, errorLines: 0, images: 0, problems };
  const indexOf = (customId: unknown): number => {
    const m = typeof customId === 'string' ? /^req-(\d+)$/.exec(customId) : null;
    return m && Number(m[1]) < lines ? Number(m[1]) : -1;
  };
  let last = -1;
  for await (const text of linesOf(s, key, files.output)) {
    const line = JSON.parse(text) as {
      custom_id: string;
      response: { status_code: number; body: { data: Array<{ b64_json: string }> } };
    };
    const i = indexOf(line.custom_id);
    check.outputLines++;
    if (i < 0) {
      problem(`output: unknown custom_id ${line.custom_id}`);
      continue;
    }
    if (i <= last) problem(`output: ${line.custom_id} out of order (after req-${last})`);
    last = i;
    if (seen[i]++) problem(`output: ${line.custom_id} twice`);
    if (failsAt(i)) problem(`output: ${line.custom_id} should have failed`);
    const data = line.response?.body?.data ?? [];
    if (line.response?.status_code !== 200 || data.length !== imagesOf(i)) {
      problem(`output: ${line.custom_id} has ${data.length} image(s), not ${imagesOf(i)}`);
    }
    for (const image of data) {
      check.images++;
      if (!Buffer.from(image.b64_json, 'base64').subarray(0, 8).equals(PNG_SIGNATURE)) {
        problem(`output: an image of ${line.custom_id} is not a PNG`);
      }
    }
  }
  last = -1;
  for await (const text of linesOf(s, key, files.errors)) {
    const line = JSON.parse(text) as { custom_id: string; error: { code: string } };
    const i = indexOf(line.custom_id);
    check.errorLines++;
    if (i < 0) {
      problem(`errors: unknown custom_id ${line.custom_id}`);
      continue;
    }
    if (i <= last) problem(`errors: ${line.custom_id} out of order (after req-${last})`);
    last = i;
    if (seen[i]++) problem(`errors: ${line.custom_id} also in the output or twice`);
    if (!failsAt(i) || line.error?.code !== 'image_generation_failed') {
      problem(`errors: ${line.custom_id} failed unexpectedly (${line.error?.code})`);
    }
  }
  const missing = seen.reduce((sum, v) => sum + (v === 0 ? 1 : 0), 0);
  if (missing) problem(`${missing} custom_id(s) in neither file (first: req-${seen.indexOf(0)})`);
  return check;
}

// ---------------------------------------------------------------------------------------------
// One run

interface RunResult {
  lines: number;
  inputBytes: number;
  shards: number;
  totalMs: number;
  phases: Array<Phase & { peakRssMb: number; cpuSeconds: number | null }>;
  uploadMs: number;
  peakRssMb: number;
  hwmMb: number;
  /** Peak RSS of the emulators' own process, or null with EMULATORS=in-service (they are in the service's). */
  emulatorsHwmMb: number | null;
  cpuSeconds: number | null;
  rows: ReturnType<typeof rowDelta>;
  steps: string;
  check: OutputCheck;
  billing: { pre_deducted: number; settled: number; refunded: number };
  expectedSettled: number;
  ok: boolean;
}

async function run(lines: number, say: (line: string) => void): Promise<RunResult> {
  const dir = makeTempDir('ibg-bench-scale-');
  let service: Service | null = null;
  let emulators: EmulatorProcess | null = null;
  let db: pg.Client | null = null;
  try {
    const inputFile = path.join(dir, 'input.jsonl');
    let t = Date.now();
    const input = await generateInput(inputFile, lines);
    say(`${fmtInt(lines)} lines: input ${(input.bytes / 1e6).toFixed(0)} MB generated in ${sec(Date.now() - t)} s`);

    t = Date.now();
    const adminToken = `bench-admin-${randomToken(16)}`;
    const emulatorEnv = {
      VERTEX_EMULATOR_IMAGE: 'tiny',
      VERTEX_EMULATOR_LINE_MS: '0',
      VERTEX_EMULATOR_QUEUE_MS: '200',
      VERTEX_EMULATOR_MAX_RUNNING_JOBS: process.env.VERTEX_EMULATOR_MAX_RUNNING_JOBS ?? '4',
    };
    if (process.env.EMULATORS !== 'in-service')
      emulators = await startEmulatorProcess('emulators', dir, { env: emulatorEnv });
    service = await startService(dir, {
      ADMIN_TOKEN: adminToken,
      ...emulatorEnv,
      ...(emulators ? { GCS_API_ENDPOINT: emulators.gcsUrl, VERTEX_API_ENDPOINT: emulators.vertexUrl } : {}),
      POLL_INTERVAL_MS: '500',
      POLL_MAX_INTERVAL_MS: '2s',
      ...(lines > 200_000 ? { BATCH_MAX_REQUESTS: String(lines) } : {}),
    });
    const user = await api<{ id: number; api_key: string }>(service, 'POST', '/admin/users', adminToken, {
      name: 'bench-scale',
      quota: input.images * IMAGE_PRICE,
    });
    const key = user.api_key;
    await api(service, 'PUT', '/api/image-batch-privacy', key, { accept: true });
    db = new pg.Client({ connectionString: service.databaseUrl });
    await db.connect();
    const pid = service.proc.pid!;
    say(`  service started in ${sec(Date.now() - t)} s (pid ${pid}), RSS ${procStatusKb(pid, 'VmRSS')! >> 10} MB`);

    // Statistics before: the start's own writes (migrations, models) are not the batch's.
    await new Promise((r) => setTimeout(r, STATS_FLUSH_MS));
    const rowsBefore = await rowCounts(db);
    const cpuBefore = processCpuMs(pid);
    const rss = sampleRss(pid);
    const t0 = Date.now();
    if (process.env.BENCH_SCALE_SMAPS)
      say(`  upload starts ${sec(t0 - service.startedAt)} s after the service was spawned`);
    const created = await upload(service, key, inputFile);
    const uploadMs = Date.now() - t0;
    say(`  uploaded in ${sec(uploadMs)} s: ${created.id} ${created.status}`);

    type Batch = {
      status: string;
      output_file_id: string | null;
      error_file_id: string | null;
      request_counts: { total: number; completed: number; failed: number };
      billing: { pre_deducted: number; settled: number; refunded: number };
    };
    let batch: Batch;
    let lastStatus = '';
    let lastSaid = 0;
    for (;;) {
      batch = await api<Batch>(service, 'GET', `/v1/image-batches/${created.id}`, key);
      if (batch.status !== lastStatus || Date.now() - lastSaid > 15_000) {
        const c = batch.request_counts;
        say(
          `  ${sec(Date.now() - t0).padStart(6)} s  ${batch.status.padEnd(11)} ${fmtInt(c.completed)} completed, ${fmtInt(c.failed)} failed of ${fmtInt(c.total)}; RSS ${rss.samples.at(-1)?.mb.toFixed(0)} MB${await heapOf(service)}`,
        );
        lastStatus = batch.status;
        lastSaid = Date.now();
      }
      if (['completed', 'failed', 'expired', 'cancelled'].includes(batch.status)) break;
      if (Date.now() - t0 > RUN_TIMEOUT_MS) throw new Error(`no end after ${RUN_TIMEOUT_MS / 60_000} minutes`);
      if (service.proc.exitCode !== null) throw new Error(`the service died:\n${tail(service)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const doneAt = Date.now();
    rss.stop();
    if (process.env.BENCH_SCALE_SMAPS) {
      say(smapsSummary(pid));
      const metrics = await fetch(`${service.url}/metrics`).then(
        (r) => r.text(),
        () => '',
      );
      say(
        metrics
          .split('\n')
          .filter((l) => /^nodejs_heap_space_size_(total|used)_bytes\{space="(new|old|code|large_object)"\}/.test(l))
          .map((l) => `    ${l}`)
          .join('\n'),
      );
    }
    const cpuAfter = processCpuMs(pid);
    const hwmMb = (procStatusKb(pid, 'VmHWM') ?? 0) / 1024;
    const emulatorsHwmMb = emulators ? (procStatusKb(emulators.proc.pid!, 'VmHWM') ?? 0) / 1024 : null;
    if (batch.status !== 'completed') throw new Error(`the batch ended ${batch.status}:\n${tail(service)}`);

    const { phases, shards, steps } = await phasesFromDatabase(db, created.id);
    const all: Phase[] = [{ name: 'upload', start: t0, end: t0 + uploadMs }, ...phases];
    const withRss = all.map((p) => {
      const within = rss.samples.filter((x) => x.at >= p.start && x.at <= p.end);
      const first = within[0]?.cpu;
      const last = within.at(-1)?.cpu;
      return {
        ...p,
        peakRssMb: Math.max(0, ...within.map((x) => x.mb)),
        cpuSeconds: first != null && last != null ? (last - first) / 1000 : null,
      };
    });

    t = Date.now();
    const check = await checkOutput(service, key, lines, { output: batch.output_file_id, errors: batch.error_file_id });
    say(`  output checked in ${sec(Date.now() - t)} s`);
    const failing = Math.floor(lines / 1000);
    const expectedImages = input.images - imagesOfFailing(lines);
    const expectedSettled = expectedImages * IMAGE_PRICE;
    if (check.errorLines !== failing) check.problems.push(`${check.errorLines} error lines, expected ${failing}`);
    if (check.images !== expectedImages) check.problems.push(`${check.images} images, expected ${expectedImages}`);
    const bill = batch.billing;
    if (bill.settled !== expectedSettled || bill.pre_deducted - bill.refunded !== bill.settled) {
      check.problems.push(`billing ${JSON.stringify(bill)}, expected settled ${expectedSettled}`);
    }

    // Statistics after: wait until every backend has flushed its counters.
    const wait = STATS_FLUSH_MS - (Date.now() - doneAt);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const rows = rowDelta(rowsBefore, await rowCounts(db));
    return {
      lines,
      inputBytes: input.bytes,
      shards,
      totalMs: doneAt - t0,
      uploadMs,
      phases: withRss,
      peakRssMb: Math.max(...rss.samples.map((x) => x.mb)),
      hwmMb,
      emulatorsHwmMb,
      cpuSeconds: cpuBefore !== null && cpuAfter !== null ? (cpuAfter - cpuBefore) / 1000 : null,
      rows,
      steps,
      check,
      billing: bill,
      expectedSettled,
      ok: check.problems.length === 0,
    };
  } finally {
    await db?.end().catch(() => {});
    if (service) await stopChild(service, 30_000);
    if (emulators) await stopChild(emulators);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Images asked for by the lines that fail: what is refunded. */
function imagesOfFailing(lines: number): number {
  let images = 0;
  for (let i = 999; i < lines; i += 1000) images += imagesOf(i);
  return images;
}

function report(r: RunResult, say: (line: string) => void): void {
  const t0 = r.phases[0].start;
  say(
    `---- ${fmtInt(r.lines)} lines, ${(r.inputBytes / 1e6).toFixed(0)} MB, ${r.shards} shards: ${sec(r.totalMs)} s end to end, ${fmtInt(Math.round(r.lines / (r.totalMs / 1000)))} lines/s ----`,
  );
  say('  phase       from s   took s   lines/s   service CPU s   peak RSS MB');
  for (const p of r.phases) {
    say(
      `  ${p.name.padEnd(10)} ${sec(p.start - t0).padStart(7)} ${sec(p.end - p.start).padStart(8)} ${fmtInt(Math.round(r.lines / Math.max((p.end - p.start) / 1000, 0.001))).padStart(9)}   ${(p.cpuSeconds?.toFixed(1) ?? '?').padStart(13)}   ${p.peakRssMb.toFixed(0).padStart(11)}`,
    );
  }
  say(`  pipeline steps (pg-boss jobs): ${r.steps}`);
  say(
    `  service process${r.emulatorsHwmMb === null ? ' (the emulators in it)' : ''}: peak RSS ${r.peakRssMb.toFixed(0)} MB sampled, VmHWM ${r.hwmMb.toFixed(0)} MB (goal < ${RSS_GOAL_MB} MB), CPU ${r.cpuSeconds?.toFixed(0) ?? '?'} s`,
  );
  if (r.emulatorsHwmMb !== null) say(`  emulators' own process: VmHWM ${r.emulatorsHwmMb.toFixed(0)} MB`);
  const pub = r.rows.public;
  say(
    `  Postgres rows written: service tables ${fmtInt(pub.total)} (${fmtInt(pub.ins)} inserted, ${fmtInt(pub.upd)} updated, ${fmtInt(pub.del)} deleted: ${Object.entries(
      pub.byTable,
    )
      .sort((a, b) => b[1] - a[1])
      .map(([t, n]) => `${t} ${n}`)
      .join(', ')}); pg-boss ${fmtInt(r.rows.pgboss.total)} (${fmtInt(r.rows.pgboss.ins)} inserted)`,
  );
  say(
    `  output: ${fmtInt(r.check.outputLines)} lines with ${fmtInt(r.check.images)} images + ${fmtInt(r.check.errorLines)} error lines; billing ${JSON.stringify(r.billing)}`,
  );
  say(
    `  check: every custom_id once, each file in input order, PNGs, failures and bill as expected: ${r.ok ? 'OK' : `FAIL ${r.check.problems.join('; ')}`}`,
  );
}

async function main(): Promise<void> {
  const lines = envInt('LINES', 1_000_000, 0);
  const reference = envInt('REFERENCE_LINES', Math.floor(lines / 10), 0);
  if (lines < 1000) throw new Error('LINES must be at least 1000');
  const say = (line: string) => process.stdout.write(`${line}\n`);
  say(
    `bench-scale: node ${process.version}, ${os.cpus().length} cpus, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM; ` +
      `runs: ${reference >= 1000 && reference < lines ? `${fmtInt(reference)} (reference), ` : ''}${fmtInt(lines)} lines`,
  );
  const results: RunResult[] = [];
  if (reference >= 1000 && reference < lines) {
    const r = await run(reference, say);
    report(r, say);
    results.push(r);
  }
  const main = await run(lines, say);
  report(main, say);
  results.push(main);
  const ref = results.length > 1 ? results[0] : null;
  const took = (name: string) =>
    sec(main.phases.find((p) => p.name === name)!.end - main.phases.find((p) => p.name === name)!.start);
  const ok = results.every((r) => r.ok);
  say(
    `SUMMARY bench-scale lines=${main.lines} ok=${ok} total_s=${sec(main.totalMs)} lines_per_s=${Math.round(main.lines / (main.totalMs / 1000))} ` +
      `upload_s=${took('upload')} validate_s=${took('validate')} stage_s=${took('stage')} vertex_s=${took('vertex')} stitch_s=${took('stitch')} settle_s=${took('settle')} ` +
      `peak_rss_mb=${main.hwmMb.toFixed(0)}${ref ? ` ref_lines=${ref.lines} ref_peak_rss_mb=${ref.hwmMb.toFixed(0)}` : ''} ` +
      `emulators=${main.emulatorsHwmMb === null ? 'in-service' : `process(${main.emulatorsHwmMb.toFixed(0)}MB)`} pg_rows=${main.rows.public.total}${ref ? ` ref_pg_rows=${ref.rows.public.total}` : ''} pgboss_rows=${main.rows.pgboss.total} shards=${main.shards}`,
  );
  if (!ok) process.exitCode = 1;
}

await runMain(main);
