import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SELF), '..');

/** What a measuring child process reports on its last stdout line. */
export interface RunReport {
  seconds: number;
  bytes: number;
  /** The child's own peak RSS (VmHWM; getrusage's maxRSS where there is no /proc), in MB. */
  peakRssMb: number;
  /** CPU seconds of the child (user, system): where the wall time went. */
  cpuUser: number;
  cpuSys: number;
  /** Anything the child wants to show (counts, checks). */
  detail?: unknown;
}

/**
 * Run `script child …args` in a fresh Node process (the same binary as this one) and read its
 * report. BENCH_CHILD_FLAGS adds Node flags to it (e.g. `--cpu-prof --cpu-prof-dir=DIR` to see
 * where a measured run spends its time).
 */
export async function runChild(script: string, args: string[]): Promise<RunReport> {
  const flags = (process.env.BENCH_CHILD_FLAGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...flags, '--no-warnings', script, 'child', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => (out += d));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0) throw new Error(`child ${args.join(' ')} exited with ${code}: ${out}`);
  const last = out.trim().split('\n').pop()!;
  return JSON.parse(last) as RunReport;
}

/** Print a child's report as its last line (the parent parses it). */
export function report(startNs: bigint, bytes: number, detail?: unknown): void {
  const seconds = Number(process.hrtime.bigint() - startNs) / 1e9;
  // Not getrusage's maxRSS alone: it starts from the parent's size at fork, which can be the larger.
  const peakRssMb = (procStatusKb(process.pid, 'VmHWM') ?? process.resourceUsage().maxRSS) / 1024;
  const cpu = process.cpuUsage();
  const r: RunReport = { seconds, bytes, peakRssMb, cpuUser: cpu.user / 1e6, cpuSys: cpu.system / 1e6, detail };
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function mbPerSecond(r: RunReport): number {
  return r.bytes / 1e6 / r.seconds;
}

export function makeTempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A small deterministic PRNG (mulberry32): the same input files on every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Wait for a write stream's buffer when it is full. */
export async function writeAll(ws: fs.WriteStream, data: string | Buffer): Promise<void> {
  if (!ws.write(data)) await new Promise<void>((resolve) => ws.once('drain', resolve));
}

export async function closeStream(ws: NodeJS.WritableStream & { once: fs.WriteStream['once'] }): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    ws.once('error', reject);
    ws.once('finish', resolve);
    ws.end();
  });
}

export interface Comparison {
  title: string;
  baselineName: string;
  subjectName: string;
  baseline: RunReport[];
  subject: RunReport[];
  ratioTarget: number;
  rssTargetMb: number;
  notes: string[];
}

/** The block to paste into a report. */
export function summary(c: Comparison): string {
  const b = median(c.baseline.map(mbPerSecond));
  const s = median(c.subject.map(mbPerSecond));
  const ratio = s / b;
  const bRss = median(c.baseline.map((r) => r.peakRssMb));
  const sRss = median(c.subject.map((r) => r.peakRssMb));
  const sRssMax = Math.max(...c.subject.map((r) => r.peakRssMb));
  const pass = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
  return [
    `==== ${c.title} ====`,
    `node ${process.version}, ${os.cpus().length} cpus, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, rounds: ${c.baseline.length} + ${c.subject.length} (alternating, fresh process each)`,
    ...c.notes,
    `${c.baselineName.padEnd(22)} median ${b.toFixed(1)} MB/s  (${c.baseline.map((r) => mbPerSecond(r).toFixed(0)).join(', ')})  peak RSS median ${bRss.toFixed(0)} MB`,
    `${c.subjectName.padEnd(22)} median ${s.toFixed(1)} MB/s  (${c.subject.map((r) => mbPerSecond(r).toFixed(0)).join(', ')})  peak RSS median ${sRss.toFixed(0)} MB, max ${sRssMax.toFixed(0)} MB`,
    `ratio ${c.subjectName}/${c.baselineName}: ${ratio.toFixed(2)} (target ≥ ${c.ratioTarget}) ${pass(ratio >= c.ratioTarget)}`,
    `peak RSS ${c.subjectName}: ${sRssMax.toFixed(0)} MB (target < ${c.rssTargetMb} MB) ${pass(sRssMax < c.rssTargetMb)}`,
    '='.repeat(c.title.length + 10),
  ].join('\n');
}

export interface Contender {
  name: string;
  runs: RunReport[];
  /** Throughput as a share of the baseline's that counts as a pass; none: reported only. */
  ratioTarget?: number;
}

export interface MultiComparison {
  title: string;
  notes: string[];
  baseline: Contender;
  subjects: Contender[];
  rssTargetMb: number;
}

/** The block to paste into a report: medians of every contender against one baseline. */
export function multiSummary(c: MultiComparison): string {
  const base = median(c.baseline.runs.map(mbPerSecond));
  const width = Math.max(...[c.baseline, ...c.subjects].map((x) => x.name.length)) + 2;
  const row = (x: Contender) => {
    const mbps = x.runs.map(mbPerSecond);
    const rss = x.runs.map((r) => r.peakRssMb);
    return (
      `${x.name.padEnd(width)} median ${median(mbps).toFixed(1).padStart(6)} MB/s (${mbps.map((v) => v.toFixed(0)).join(', ')})` +
      `  ratio ${(median(mbps) / base).toFixed(2)}  peak RSS median ${median(rss).toFixed(0)} MB, max ${Math.max(...rss).toFixed(0)} MB`
    );
  };
  const pass = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
  // The disk's speed drifts between rounds: the ratio within each round shows how much.
  const paired = (x: Contender) => x.runs.map((r, i) => mbPerSecond(r) / mbPerSecond(c.baseline.runs[i]));
  const verdicts = c.subjects.map((x) => {
    const ratio = median(x.runs.map(mbPerSecond)) / base;
    const rounds = paired(x);
    const rss = Math.max(...x.runs.map((r) => r.peakRssMb));
    const target =
      x.ratioTarget === undefined ? '(no target)' : `(target ≥ ${x.ratioTarget}) ${pass(ratio >= x.ratioTarget)}`;
    return `${x.name}: ratio ${ratio.toFixed(2)} ${target} (per round ${rounds.map((v) => v.toFixed(2)).join(', ')}; median ${median(rounds).toFixed(2)}); peak RSS ${rss.toFixed(0)} MB (target < ${c.rssTargetMb} MB) ${pass(rss < c.rssTargetMb)}`;
  });
  return [
    `==== ${c.title} ====`,
    `node ${process.version}, ${os.cpus().length} cpus, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${c.baseline.runs.length} rounds (alternating, fresh process each)`,
    ...c.notes,
    row(c.baseline),
    ...c.subjects.map(row),
    ...verdicts,
    '='.repeat(c.title.length + 10),
  ].join('\n');
}

// Settings

/**
 * A whole-number setting: `fallback` when unset or blank; `_` may group digits (1_000_000).
 * Anything else that is not a whole number ≥ `min` stops the benchmark with a message naming it.
 */
export function wholeNumber(name: string, raw: string | undefined, fallback: number, min = 1): number {
  if (raw === undefined || raw.trim() === '') return fallback;
  const v = Number(raw.replaceAll('_', ''));
  if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be a whole number ≥ ${min} (got '${raw}')`);
  return v;
}

/** The whole number in environment variable `name` (see wholeNumber). */
export function envInt(name: string, fallback: number, min = 1): number {
  return wholeNumber(name, process.env[name], fallback, min);
}

// Child processes: the service, the emulators, a bare handler

export interface Child {
  name: string;
  proc: ChildProcess;
  /** Everything it prints, stdout and stderr. */
  logFile: string;
  /** Its exit code (null when a signal ended it). */
  exited: Promise<number | null>;
}

/**
 * The service's process as `npm start` runs it: the Node flags of its script (`node [flags]
 * src/main.ts`) and the entry point, so that the process measured is the one deployed (the V8
 * flags change its speed and memory); SERVICE_NODE_FLAGS replaces the flags (experiments).
 */
export function serviceCommand(): string[] {
  const override = process.env.SERVICE_NODE_FLAGS;
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const words = pkg.scripts.start.split(/\s+/);
  const flags =
    override === undefined
      ? words.slice(words.indexOf('node') + 1, words.indexOf('src/main.ts'))
      : override.split(/\s+/).filter(Boolean);
  return [...flags, path.join(ROOT, 'src/main.ts')];
}

/**
 * `node --no-warnings …args` with the same binary as this process, `env` over this process's
 * environment, in `dir`: not the checkout, since the service reads ./.env, which must not steer a
 * benchmark. Its output goes to `<dir>/<name>.log` (or `logFile`, appended), as a deployment's
 * would: a pipe read here would cost the measuring process CPU. Whatever ends this process (a
 * crash included), the child does not outlive it.
 */
export function startChild(
  name: string,
  args: string[],
  env: Record<string, string>,
  dir: string,
  opts: { logFile?: string } = {},
): Child {
  const logFile = opts.logFile ?? path.join(dir, `${name}.log`);
  const out = fs.openSync(logFile, 'a');
  const proc = spawn(process.execPath, ['--no-warnings', ...args], {
    cwd: dir,
    env: { ...process.env, ...env },
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  const kill = () => proc.kill('SIGKILL');
  process.once('exit', kill);
  const exited = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => {
      process.off('exit', kill);
      resolve(code);
    }),
  );
  return { name, proc, logFile, exited };
}

/** The last lines of a child's log: why it failed. */
export function tail(child: Child, lines = 30): string {
  try {
    return fs.readFileSync(child.logFile, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Polls `url` every 100 ms until it answers 200, or any HTTP status with `anyStatus` (an emulator's
 * root answers 404); fails early, with the child's last log lines, when the child exits, and after
 * `timeoutMs`.
 */
export async function waitHttp(
  child: Child,
  url: string,
  opts: { anyStatus?: boolean; timeoutMs?: number } = {},
): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const until = Date.now() + timeoutMs;
  let dead = false;
  void child.exited.then(() => (dead = true));
  while (Date.now() < until) {
    if (dead) throw new Error(`${child.name} exited while starting:\n${tail(child)}`);
    const status = await fetch(url).then(
      (r) => r.arrayBuffer().then(() => r.status),
      () => 0,
    );
    if (status === 200 || (status && opts.anyStatus)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${child.name} did not answer ${url} within ${timeoutMs / 1000} s:\n${tail(child)}`);
}

/** SIGTERM, then SIGKILL if it has not exited after `killAfterMs`; resolves once it has. */
export async function stopChild(child: Child, killAfterMs = 15_000): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.kill('SIGTERM');
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), killAfterMs);
  await child.exited;
  clearTimeout(timer);
}

export interface EmulatorProcess extends Child {
  /** Its Cloud Storage emulator, or the one it was given. */
  gcsUrl: string;
  vertexUrl: string;
  vertexPort: number;
}

/**
 * The emulators in a process of their own, so that neither they nor the measuring process slow the
 * other down, and the service's RSS and CPU are its own (production has no emulators in it). They
 * start as `npm run emulators` starts them, with its settings (the VERTEX_EMULATOR_* variables of
 * this process's environment with `env` over it, read by the same parser), on free ports, their
 * data under `<dir>/<name>`. With `gcsUrl`: a Vertex emulator alone, reading and writing through
 * that Cloud Storage (a second Vertex, with other settings, on the same storage). Stop with stopChild.
 */
export async function startEmulatorProcess(
  name: string,
  dir: string,
  opts: { env?: Record<string, string>; gcsUrl?: string } = {},
): Promise<EmulatorProcess> {
  // Imported here: the measuring children of bench-validate and bench-stitch load this module too.
  const { freePort } = await import('../src/db/embedded.ts');
  const gcsPort = opts.gcsUrl ? 0 : await freePort();
  const vertexPort = await freePort();
  const child = startChild(
    name,
    [SELF, 'emulators', ...(opts.gcsUrl ? [opts.gcsUrl] : [])],
    {
      ...opts.env,
      DATA_DIR: path.join(dir, name),
      GCS_EMULATOR_PORT: String(gcsPort),
      VERTEX_EMULATOR_PORT: String(vertexPort),
    },
    dir,
  );
  const emulators: EmulatorProcess = {
    ...child,
    gcsUrl: opts.gcsUrl ?? `http://127.0.0.1:${gcsPort}`,
    vertexUrl: `http://127.0.0.1:${vertexPort}`,
    vertexPort,
  };
  try {
    await waitHttp(child, `${emulators.vertexUrl}/`, { anyStatus: true });
    if (!opts.gcsUrl) await waitHttp(child, `${emulators.gcsUrl}/`, { anyStatus: true });
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return emulators;
}

/** The child of startEmulatorProcess (`bench-lib.ts emulators [gcsUrl]`); stops on SIGTERM. */
async function emulatorsMain(gcsUrl: string | undefined): Promise<void> {
  const { loadEmulatorConfig } = await import('../src/config.ts');
  const { startEmulators, startVertexEmulator } = await import('../src/emulator/index.ts');
  const { dataDir, emulator } = loadEmulatorConfig(process.env);
  const { gcsPort, vertexPort, ...vertex } = emulator;
  const running = gcsUrl
    ? await startVertexEmulator({
        ...vertex,
        host: '127.0.0.1',
        port: vertexPort,
        dataDir: path.join(dataDir, 'vertex'),
        gcsEndpoint: gcsUrl,
      })
    : await startEmulators({ dataDir, gcsPort, vertexPort, vertex });
  process.once('SIGTERM', () => {
    void running.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}

// Process accounting (Linux /proc; null elsewhere)

const TICK_MS = 10; // USER_HZ is 100 on every Linux Node runs on

/** utime + stime (+ reaped children's, with `children`) of a process, in ms. */
export function processCpuMs(pid: number, children = false): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
    const own = Number(f[11]) + Number(f[12]);
    return (own + (children ? Number(f[13]) + Number(f[14]) : 0)) * TICK_MS;
  } catch {
    return null;
  }
}

/** The postmaster and its live backends, plus the backends it reaped: all of Postgres's CPU. */
export function postgresCpuMs(postmaster: number | null): number | null {
  if (postmaster === null) return null;
  let total = processCpuMs(postmaster, true);
  if (total === null) return null;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster) total += processCpuMs(Number(entry)) ?? 0;
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** A memory figure of a process in kB: VmRSS (now) or VmHWM (its high-water mark). */
export function procStatusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Busy and total jiffies of the whole machine. */
export function machineTicks(): { busy: number; total: number } | null {
  try {
    const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - cpu[3] - cpu[4], total }; // idle, iowait
  } catch {
    return null;
  }
}

if (import.meta.main && process.argv[2] === 'emulators') await emulatorsMain(process.argv[3]);

/**
 * Runs a benchmark's main and exits with its outcome: a failure is printed and exits 1. It exits
 * explicitly because the Google clients' and embedded Postgres's hooks may hold the loop open.
 */
export async function runMain(main: () => Promise<void>): Promise<never> {
  try {
    await main();
  } catch (err) {
    console.error(err);
    process.exitCode = 1;
  }
  process.exit(process.exitCode ?? 0);
}

/**
 * A JSON call to the service with a bearer key (an admin token or an API key); anything but 2xx
 * throws with the answer's start.
 */
export async function callJson<T = Record<string, any>>(
  baseUrl: string,
  method: string,
  p: string,
  key: string,
  body?: unknown,
): Promise<T> {
  const res = await fetch(baseUrl + p, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: HTTP ${res.status} ${text.slice(0, 500)}`);
  return JSON.parse(text) as T;
}

/** The postmaster's pid of an embedded Postgres data directory (to read its CPU). */
export function postmasterPid(pgDataDir: string): number {
  return Number(fs.readFileSync(path.join(pgDataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}
