/**
 * The read path at scale: the service's GET routes over a user with ROWS batches (default
 * 1,000,000), against a bare Express handler answering the same JSON, in the same run.
 *
 * Processes: a real Postgres (embedded, started here), the service (`src/main.ts` as `npm start`
 * runs it: ROLE=all, the in-process emulators, LOG_LEVEL as given or its default, its log to a
 * file), and the bare handler (this script with `bare`: `express()` and one `res.json(body)` of
 * the body the service answered for that URL, looked up in a Map) each in a process of their own;
 * autocannon runs in this one.
 *
 * Data: ROWS batches for one user and OTHER_ROWS (default ROWS / 2) for a second, interleaved in
 * time and on disk, each with its input file; finished statuses only (completed ~88 %, cancelled
 * ~8 %, expired ~4 %, never `failed`, so `status=failed` is the empty scan; no open batch, which the
 * sweep would pick up), a model snapshot and metadata as real batches have. One
 * `INSERT … SELECT generate_series` per table, then VACUUM ANALYZE and a CHECKPOINT.
 *
 * Cases (each against the bare handler answering the same URLs): GET one batch (rotating over a
 * sample of the user's ids), the first page (`limit=20`) on both list paths, a deep cursor
 * (`limit=100&after=` the batch halfway down), status filters (none, many, few with a cursor), the
 * file list, and `GET /v1/models`, which queries nothing (key and catalog come from memory): the
 * ceiling of the service's HTTP stack, shown but not judged. The batch cases are mostly answered
 * from the service's read cache (nothing changes the rows while they run; the summary counts hits,
 * misses and bypasses); READ_CACHE_BYTES=0 measures every read through Postgres. Each round measures every case, bare
 * and service alternating (ABBA); ratios are paired within a round, and the summary gives medians
 * over rounds. Targets: GET one ≥ 0.6 × bare req/s, every list ≥ 0.5 ×, p99 within 2 × the bare
 * p99, no errors and no non-2xx answers. The machine is measured too: how many cores other
 * processes kept busy during the measurements (the figures mean little when that is high).
 *
 *   npm run bench:api
 *   ROWS=100000 DURATION=3 ROUNDS=3 npm run bench:api
 *
 * Variables: ROWS (1000000), OTHER_ROWS (ROWS/2), CONNECTIONS (64), DURATION (seconds per
 * measurement, 4), ROUNDS (3), WARMUP (seconds per case and side before round 1, 2), LOG_LEVEL
 * (the service's; unset: its default, info), CASES (comma-separated case names, default all),
 * KEEP_LOG=1 (print where the service log is and keep it).
 */

import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import express from 'express';
import pg from 'pg';
import { listModels } from '../src/billing/model-catalog.ts';
import { type EmbeddedDatabase, freePort, startEmbeddedPostgres } from '../src/db/embedded.ts';
import { randomToken } from '../src/ids.ts';
import { setLogLevel } from '../src/logger.ts';
import {
  type Child,
  callJson,
  envInt,
  machineTicks,
  makeTempDir,
  median,
  postgresCpuMs,
  postmasterPid,
  processCpuMs,
  runMain,
  serviceCommand,
  startChild,
  stopChild,
  waitHttp,
} from './bench-lib.ts';

const SELF = fileURLToPath(import.meta.url);
const ADMIN_TOKEN = `bench-admin-${randomToken(16)}`;
/** Distinct ids the GET-one case rotates over (each connection walks the list). */
const GET_SAMPLE = 500;

interface Options {
  rows: number;
  otherRows: number;
  connections: number;
  duration: number;
  rounds: number;
  warmup: number;
  logLevel: string | null;
  cases: string[] | null;
  keepLog: boolean;
}

function options(): Options {
  const rows = envInt('ROWS', 1_000_000, 200);
  return {
    rows,
    otherRows: envInt('OTHER_ROWS', Math.floor(rows / 2), 0),
    connections: envInt('CONNECTIONS', 64),
    duration: envInt('DURATION', 4),
    rounds: envInt('ROUNDS', 3),
    warmup: envInt('WARMUP', 2, 0),
    logLevel: process.env.LOG_LEVEL || null,
    cases: process.env.CASES ? process.env.CASES.split(',').map((s) => s.trim()) : null,
    keepLog: ['1', 'true'].includes(process.env.KEEP_LOG ?? ''),
  };
}

// ---------------------------------------------------------------------------------------------
// The bare handler (child process)

/** `bare <port> <bodies.json>`: answers each URL with the JSON the service answered for it. */
async function bare(port: number, bodiesFile: string): Promise<void> {
  const bodies = new Map<string, unknown>(Object.entries(JSON.parse(fs.readFileSync(bodiesFile, 'utf8'))));
  const app = express();
  app.use((req, res) => {
    const body = bodies.get(req.url);
    if (body === undefined) res.status(404).json({ error: { message: `no body for ${req.url}` } });
    else res.json(body);
  });
  const server = app.listen(port, '127.0.0.1', () => {
    process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

// ---------------------------------------------------------------------------------------------
// Data

/**
 * ROWS batches of `user`, OTHER_ROWS of `other`, interleaved: row g is `user`'s, and every few g
 * also `other`'s, at the same moment (two per minute, pairs of g sharing a created_at so the id
 * tie-break is exercised), so the heap is in time order as a live table's is. Each batch has its
 * own input file. Loaded the way bulk loads are: foreign keys unchecked (the rows are built
 * consistent) and the secondary indexes dropped and rebuilt after, exactly as the migrations
 * defined them. Ids look like the service's (24 characters after the prefix) but start with g in
 * hex, so the primary keys grow at their right edge instead of splitting pages all over: that
 * is what made a row-by-row load take many minutes, and no read depends on the ids' order.
 */
async function seed(db: pg.Client, opts: { user: number; other: number; rows: number; otherRows: number }) {
  const snapshot = JSON.stringify((await listModels(db, null, true))[0]);
  const every = opts.otherRows > 0 ? Math.max(1, Math.floor(opts.rows / opts.otherRows)) : 0;
  // The owners of row g: the user always, the other user on every `every`-th row (up to otherRows).
  const owners = `generate_series(1, $3::int) g
    CROSS JOIN LATERAL unnest(CASE WHEN $4::int > 0 AND g % $4::int = 0 AND g / $4::int <= $5::int
                                   THEN ARRAY[$1::bigint, $2::bigint] ELSE ARRAY[$1::bigint] END) AS u(owner)`;
  const at = `(now() - make_interval(secs => (($3::int - g) / 2) * 60))`;
  const id = (prefix: string, salt: string) =>
    `'${prefix}_' || lpad(to_hex(g), 7, '0') || CASE WHEN owner = $1 THEN 'a' ELSE 'b' END || left(md5('${salt}' || g), 16)`;
  const params = [opts.user, opts.other, opts.rows, every, opts.otherRows];
  await db.query('BEGIN');
  try {
    await db.query("SET LOCAL session_replication_role = 'replica'"); // no foreign-key triggers
    await db.query("SET LOCAL maintenance_work_mem = '256MB'");
    const { rows: indexes } = await db.query<{ name: string; definition: string }>(
      `SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relname IN ('files', 'batches') AND t.relnamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)`,
    );
    for (const index of indexes) await db.query(`DROP INDEX ${index.name}`);
    await db.query(
      `INSERT INTO files (id, user_id, purpose, filename, bytes, mime_type, object_key, created_at, expires_at)
       SELECT ${id('file', 'f')}, owner, 'image_batch', 'images-' || g || '.jsonl',
              2000 + g % 50000, 'application/jsonl', 'tenants/' || owner || '/files/' || ${id('file', 'f')},
              ${at} - interval '1 second', now() + interval '30 days'
         FROM ${owners}`,
      params,
    );
    await db.query(
      `INSERT INTO batches (id, user_id, status, outcome, endpoint, input_file_id, model, metadata,
                            request_total, request_completed, request_failed, image_total, image_succeeded,
                            model_snapshot, pre_deducted, settled, refunded, created_at, in_progress_at,
                            finalizing_at, completed_at, expired_at, cancelling_at, cancelled_at, expires_at)
       SELECT id, owner, status, status, '/v1/images/generations', input_file_id, 'gemini-2.5-flash-image',
              jsonb_build_object('project', 'campaign-' || (g % 40), 'owner', 'team-' || (g % 7)),
              total, done, total - done, total * 2, done * 2, $6::jsonb,
              total * 2 * 2500, done * 2 * 2500, (total - done) * 2 * 2500,
              created, created + interval '5 seconds', created + interval '20 minutes',
              CASE status WHEN 'completed' THEN created + interval '21 minutes' END,
              CASE status WHEN 'expired' THEN created + interval '24 hours' END,
              CASE status WHEN 'cancelled' THEN created + interval '10 minutes' END,
              CASE status WHEN 'cancelled' THEN created + interval '21 minutes' END,
              created + interval '24 hours'
         FROM (SELECT g, owner, ${id('batch', 'b')} AS id, ${id('file', 'f')} AS input_file_id,
                      ${at} AS created, 1 + g % 200 AS total,
                      CASE WHEN h < 88 THEN 'completed' WHEN h < 96 THEN 'cancelled' ELSE 'expired' END AS status,
                      CASE WHEN h < 88 THEN 1 + g % 200 WHEN h < 96 THEN (1 + g % 200) / 2 ELSE (1 + g % 200) / 3 END AS done
                 FROM (SELECT g, owner, abs(hashtext(g::text)) % 100 AS h FROM ${owners}) x) s`,
      [...params, snapshot],
    );
    for (const index of indexes) await db.query(index.definition);
    await db.query('COMMIT');
  } catch (err) {
    await db.query('ROLLBACK').catch(() => {});
    throw err;
  }
  await db.query('VACUUM ANALYZE files');
  await db.query('VACUUM ANALYZE batches');
  // The load dirtied gigabytes of pages: written out now, not by the checkpointer mid-measurement.
  await db.query('CHECKPOINT');
}

// ---------------------------------------------------------------------------------------------
// Load

interface Case {
  name: string;
  /** What it shows, for the report. */
  label: string;
  paths: string[];
  /** Service req/s as a share of bare req/s that passes; null: shown, not judged. */
  target: number | null;
}

interface Measure {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
  /** CPU ms per request of the side's own processes: [bare], or [service, Postgres]. */
  cpuMsPerRequest: number[] | null;
  /** Cores busy on the whole machine, and of those, not ours (other work on the machine). */
  coresBusy: number | null;
  coresOthers: number | null;
}

async function measure(
  base: string,
  c: Case,
  opts: Options,
  seconds: number,
  key: string,
  cpuOfSide: () => number[] | null,
  cpuOfOurs: () => number | null,
): Promise<Measure> {
  const before = { side: cpuOfSide(), ours: cpuOfOurs(), machine: machineTicks(), at: performance.now() };
  const result = await autocannon({
    url: base,
    connections: opts.connections,
    duration: seconds,
    timeout: 10,
    headers: { authorization: `Bearer ${key}` },
    requests: c.paths.map((p) => ({ method: 'GET', path: p })),
  });
  const after = { side: cpuOfSide(), ours: cpuOfOurs(), machine: machineTicks(), at: performance.now() };
  const done = result.latency.totalCount ?? result.requests.total;
  const cores = os.cpus().length;
  const wallMs = after.at - before.at;
  const machine =
    before.machine && after.machine && after.machine.total > before.machine.total
      ? ((after.machine.busy - before.machine.busy) / (after.machine.total - before.machine.total)) * cores
      : null;
  const ours =
    before.ours !== null && after.ours !== null
      ? (after.ours - before.ours + cpuDelta(process.cpuUsage())) / wallMs
      : null;
  return {
    rps: done / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    cpuMsPerRequest:
      before.side !== null && after.side !== null ? after.side.map((ms, i) => (ms - before.side![i]) / done) : null,
    coresBusy: machine,
    coresOthers: machine !== null && ours !== null ? Math.max(0, machine - ours) : null,
  };
}

/** This process's CPU since the previous call, in ms (autocannon's share of the machine). */
let lastOwnCpu = process.cpuUsage();
function cpuDelta(now: NodeJS.CpuUsage): number {
  const ms = (now.user - lastOwnCpu.user + now.system - lastOwnCpu.system) / 1000;
  lastOwnCpu = now;
  return ms;
}

// ---------------------------------------------------------------------------------------------

const say = (line: string) => process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  const opts = options();
  setLogLevel('warn');
  const dir = makeTempDir('ibg-bench-api-');
  const children: Child[] = [];
  let embedded: EmbeddedDatabase | null = null;
  let failed = false;
  try {
    const loadavg = os.loadavg();
    say(
      `bench-api: ${opts.rows.toLocaleString('en')} batches (+${opts.otherRows.toLocaleString('en')} of another user), ` +
        `${opts.connections} connections, ${opts.rounds} rounds of ${opts.duration} s per case and side; ` +
        `${os.cpus().length} cpus, load average ${loadavg.map((l) => l.toFixed(2)).join(' ')} before starting`,
    );
    const t0 = Date.now();
    const pgDir = path.join(dir, 'pg', 'data');
    embedded = await startEmbeddedPostgres(pgDir);
    const databaseUrl = embedded.connectionString('postgres');
    const postmaster = postmasterPid(pgDir);

    const servicePort = await freePort();
    const serviceEnv: Record<string, string> = {
      PORT: String(servicePort),
      HOST: '127.0.0.1',
      DATA_DIR: path.join(dir, 'service'),
      DATABASE_URL: databaseUrl,
      ADMIN_TOKEN,
    };
    if (opts.logLevel) serviceEnv.LOG_LEVEL = opts.logLevel;
    const service = startChild('service', serviceCommand(), serviceEnv, dir);
    children.push(service);
    const url = `http://127.0.0.1:${servicePort}`;
    await waitHttp(service, `${url}/readyz`);
    say(`started Postgres and the service in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const admin = (method: string, p: string, body?: unknown) => callJson(url, method, p, ADMIN_TOKEN, body);
    const user = await admin('POST', '/admin/users', { name: 'bench user', quota: 0 });
    const other = await admin('POST', '/admin/users', { name: 'bench neighbour', quota: 0 });
    const key = user.api_key as string;

    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    const t1 = Date.now();
    await seed(db, { user: user.id, other: other.id, rows: opts.rows, otherRows: opts.otherRows });
    const { rows: counts } = await db.query<{ userId: number; n: number; status: string }>(
      'SELECT user_id AS "userId", status, count(*)::int AS n FROM batches GROUP BY 1, 2 ORDER BY 1, 2',
    );
    say(
      `inserted in ${((Date.now() - t1) / 1000).toFixed(1)} s (with VACUUM ANALYZE and CHECKPOINT): ` +
        counts.map((c) => `user ${c.userId} ${c.status} ${c.n}`).join(', '),
    );

    // The cases' URLs: ids sampled from the user's batches, the cursor halfway down.
    const pct = Math.min(100, ((GET_SAMPLE * 4) / opts.rows) * 100);
    const { rows: sample } = await db.query<{ id: string }>(
      `SELECT id FROM batches TABLESAMPLE BERNOULLI (${pct.toFixed(4)}) WHERE user_id = $1 LIMIT ${GET_SAMPLE}`,
      [user.id],
    );
    const { rows: middle } = await db.query<{ id: string }>(
      `SELECT id FROM batches WHERE user_id = $1 AND deleted_at IS NULL
        ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1`,
      [user.id, Math.floor(opts.rows / 2)],
    );
    await db.end();
    const mid = middle[0].id;
    const allCases: Case[] = [
      {
        name: 'get',
        label: 'GET /v1/image-batches/{id}',
        paths: sample.map((s) => `/v1/image-batches/${s.id}`),
        target: 0.6,
      },
      { name: 'first', label: 'GET /v1/image-batches?limit=20', paths: ['/v1/image-batches?limit=20'], target: 0.5 },
      { name: 'openai', label: 'GET /v1/batches?limit=20', paths: ['/v1/batches?limit=20'], target: 0.5 },
      {
        name: 'cursor',
        label: 'GET /v1/image-batches?limit=100&after=<halfway>',
        paths: [`/v1/image-batches?limit=100&after=${mid}`],
        target: 0.5,
      },
      {
        name: 'failed',
        label: 'GET /v1/image-batches?limit=20&status=failed (none)',
        paths: ['/v1/image-batches?limit=20&status=failed'],
        target: 0.5,
      },
      {
        name: 'completed',
        label: 'GET /v1/image-batches?limit=20&status=completed',
        paths: ['/v1/image-batches?limit=20&status=completed'],
        target: 0.5,
      },
      {
        name: 'expired',
        label: 'GET /v1/batches?limit=20&status=expired&after=<halfway>',
        paths: [`/v1/batches?limit=20&status=expired&after=${mid}`],
        target: 0.5,
      },
      {
        name: 'files',
        label:
          'GET /v1/files?limit=20: not a batch list (the issue judges those); read from Postgres every time, as its answer changes with the clock (files expire); not judged',
        paths: ['/v1/files?limit=20'],
        target: null,
      },
      {
        name: 'nodb',
        label:
          'GET /v1/models: no query at all (key and catalog from memory), the ceiling of the HTTP stack; not judged',
        paths: ['/v1/models'],
        target: null,
      },
    ];
    const cases = opts.cases ? allCases.filter((c) => opts.cases!.includes(c.name)) : allCases;
    if (!cases.length) throw new Error(`CASES names none of ${allCases.map((c) => c.name).join(', ')}`);

    // What the service answers for each URL is what the bare handler answers.
    const bodies: Record<string, unknown> = {};
    for (const c of cases) {
      for (const p of c.paths) {
        const res = await fetch(url + p, { headers: { authorization: `Bearer ${key}` } });
        const body = (await res.json()) as { data?: unknown[] };
        if (res.status !== 200) throw new Error(`${p}: HTTP ${res.status} ${JSON.stringify(body)}`);
        bodies[p] = body;
      }
      const first = bodies[c.paths[0]] as { data?: unknown[] };
      const bytes = JSON.stringify(first).length;
      say(`case ${c.name}: ${c.label}: ${first.data ? `${first.data.length} items, ` : ''}${bytes} bytes`);
    }
    const bodiesFile = path.join(dir, 'bodies.json');
    fs.writeFileSync(bodiesFile, JSON.stringify(bodies));
    const barePort = await freePort();
    const bareChild = startChild('bare', [SELF, 'bare', String(barePort), bodiesFile], {}, dir);
    children.push(bareChild);
    const bareUrl = `http://127.0.0.1:${barePort}`;
    await waitHttp(bareChild, bareUrl + cases[0].paths[0]);

    const serviceCpu = () => {
      const a = processCpuMs(service.proc.pid!);
      const b = postgresCpuMs(postmaster);
      return a === null || b === null ? null : [a, b];
    };
    const bareCpu = () => {
      const a = processCpuMs(bareChild.proc.pid!);
      return a === null ? null : [a];
    };
    const oursCpu = () => {
      const a = serviceCpu();
      const b = bareCpu();
      return a === null || b === null ? null : a[0] + a[1] + b[0];
    };
    cpuDelta(process.cpuUsage());
    type Side = 'bare' | 'service';
    const run = (side: Side, c: Case, seconds: number) =>
      side === 'bare'
        ? measure(bareUrl, c, opts, seconds, key, bareCpu, oursCpu)
        : measure(url, c, opts, seconds, key, serviceCpu, oursCpu);

    if (opts.warmup > 0) {
      for (const c of cases) {
        await run('bare', c, opts.warmup);
        await run('service', c, opts.warmup);
      }
      say(`warm-up: ${opts.warmup} s per case and side`);
    }
    const results = new Map<string, { bare: Measure[]; service: Measure[] }>(
      cases.map((c) => [c.name, { bare: [], service: [] }]),
    );
    const fmt = (m: Measure) =>
      `${m.rps.toFixed(0).padStart(6)} req/s p50 ${m.p50.toFixed(0).padStart(4)} p99 ${m.p99.toFixed(0).padStart(4)} ms` +
      (m.errors || m.non2xx ? ` ERRORS ${m.errors} non-2xx ${m.non2xx}` : '');
    for (let r = 0; r < opts.rounds; r++) {
      for (const [i, c] of cases.entries()) {
        // ABBA over rounds and cases: neither side always goes first into whatever the machine is doing.
        const order: Side[] = (r + i) % 2 === 0 ? ['bare', 'service'] : ['service', 'bare'];
        const got: Partial<Record<Side, Measure>> = {};
        for (const side of order) got[side] = await run(side, c, opts.duration);
        results.get(c.name)!.bare.push(got.bare!);
        results.get(c.name)!.service.push(got.service!);
        say(
          `round ${r + 1} ${c.name.padEnd(9)} bare ${fmt(got.bare!)} | service ${fmt(got.service!)} | ratio ${(got.service!.rps / got.bare!.rps).toFixed(2)}` +
            (got.service!.coresOthers !== null ? ` | other load ${got.service!.coresOthers.toFixed(2)} cores` : ''),
        );
      }
    }

    // Medians over rounds; the ratio is paired within each round first.
    const title = 'bench-api: the read path against a bare Express handler answering the same JSON';
    const lines: string[] = [
      `==== ${title} ====`,
      `node ${process.version}, ${os.cpus().length} cpus, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM; ${opts.rows.toLocaleString('en')} batches of the user (+${opts.otherRows.toLocaleString('en')} of another); ` +
        `${opts.connections} connections, ${opts.rounds} rounds × ${opts.duration} s per case and side (ABBA), service LOG_LEVEL ${opts.logLevel ?? 'info (default)'}`,
      `case        bare req/s  service req/s  ratio (target)   p50 bare/service ms   p99 bare/service ms (≤ 2×)   cpu ms/req bare / service + pg   errors`,
    ];
    const verdicts: string[] = [];
    let allOk = true;
    const pass = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
    const others: number[] = [];
    for (const c of cases) {
      const { bare: b, service: s } = results.get(c.name)!;
      const med = (xs: Measure[], f: (m: Measure) => number) => median(xs.map(f));
      const ratio = median(s.map((m, i) => m.rps / b[i].rps));
      const bareP99 = med(b, (m) => m.p99);
      const serviceP99 = med(s, (m) => m.p99);
      const errors = [...s, ...b].reduce((a, m) => a + m.errors + m.non2xx, 0);
      const cpu = (xs: Measure[]) =>
        xs.every((m) => m.cpuMsPerRequest !== null)
          ? xs[0].cpuMsPerRequest!.map((_, i) => med(xs, (m) => m.cpuMsPerRequest![i]).toFixed(3)).join(' + ')
          : '–';
      for (const m of [...s, ...b]) if (m.coresOthers !== null) others.push(m.coresOthers);
      const judged = c.target !== null;
      const ok = {
        ratio: !judged || ratio >= c.target!,
        p99: !judged || serviceP99 <= 2 * bareP99,
        errors: errors === 0,
      };
      allOk &&= ok.ratio && ok.p99 && ok.errors;
      lines.push(
        `${c.name.padEnd(10)} ${med(b, (m) => m.rps)
          .toFixed(0)
          .padStart(11)} ${med(s, (m) => m.rps)
          .toFixed(0)
          .padStart(14)}` +
          `  ${ratio.toFixed(2)} ${judged ? `(≥ ${c.target}) ${pass(ok.ratio)}` : '(shown only)'}`.padEnd(19) +
          `${`${med(b, (m) => m.p50).toFixed(0)} / ${med(s, (m) => m.p50).toFixed(0)}`.padStart(18)}` +
          `${`${bareP99.toFixed(0)} / ${serviceP99.toFixed(0)} ${judged ? pass(ok.p99) : '    '}`.padStart(26)}` +
          `${`${cpu(b)} / ${cpu(s)}`.padStart(30)}   ${errors} ${pass(ok.errors)}`,
      );
      verdicts.push(
        judged
          ? `${c.name} ${ratio.toFixed(2)}/${c.target} p99 ${serviceP99.toFixed(0)}/${(2 * bareP99).toFixed(0)}ms${errors ? ` errors ${errors}` : ''} ${pass(ok.ratio && ok.p99 && ok.errors)}`
          : `(${c.name} ${ratio.toFixed(2)}${errors ? ` errors ${errors} FAIL` : ''})`,
      );
    }
    for (const c of cases) lines.push(`  ${c.name}: ${c.label}`);
    if (others.length) {
      lines.push(
        `other load on the machine during measurements (busy cores not ours or autocannon's): median ${median(others).toFixed(2)}, max ${Math.max(...others).toFixed(2)} of ${os.cpus().length}`,
      );
    }
    // Where the batch answers came from: with READ_CACHE_BYTES=0 every one is a bypass (Postgres).
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const reads = ['hit', 'miss', 'bypass'].map(
      (result) =>
        `${result} ${Number(new RegExp(`^ibg_read_cache_reads_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0)}`,
    );
    lines.push(`batch reads by where the answer came from (ibg_read_cache_reads_total): ${reads.join(', ')}`);
    lines.push('='.repeat(title.length + 10));
    say(lines.join('\n'));
    say(`bench-api ${pass(allOk)}: ${verdicts.join('; ')}`);
    failed = !allOk;
  } finally {
    for (const child of children.reverse()) await stopChild(child).catch(() => {});
    await embedded?.stop().catch(() => {});
    const log = children.find((c) => c.name === 'service')?.logFile;
    if (opts.keepLog && log && fs.existsSync(log)) {
      const kept = path.join(os.tmpdir(), `ibg-bench-api-service-${Date.now()}.log`);
      fs.copyFileSync(log, kept);
      say(`service log kept: ${kept}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failed) process.exitCode = 1;
}

if (process.argv[2] === 'bare') {
  await bare(Number(process.argv[3]), process.argv[4]);
} else {
  await runMain(main);
}
