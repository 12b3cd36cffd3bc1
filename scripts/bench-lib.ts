import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** What a measuring child process reports on its last stdout line. */
export interface RunReport {
  seconds: number;
  bytes: number;
  /** process.resourceUsage().maxRSS of the child, in MB. */
  peakRssMb: number;
  /** CPU seconds of the child (user, system): where the wall time went. */
  cpuUser: number;
  cpuSys: number;
  /** Anything the child wants to show (counts, checks). */
  detail?: unknown;
}

/** Run `script child …args` in a fresh Node process (the same binary as this one) and read its report. */
export async function runChild(script: string, args: string[]): Promise<RunReport> {
  const child = spawn(process.execPath, ['--no-warnings', script, 'child', ...args], {
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
  const peakRssMb = process.resourceUsage().maxRSS / 1024;
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

// CPU accounting (Linux /proc; null elsewhere)

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
