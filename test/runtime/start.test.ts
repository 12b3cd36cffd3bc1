import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { eventually } from '../support/batches.ts';
import { call, form, imageLine, jsonl } from '../support/http.ts';

const ADMIN = 'start-test-admin-token';

interface Started {
  child: ChildProcessWithoutNullStreams;
  url: string;
  dataDir: string;
  stdout: () => string;
  stderr: () => string;
  /** The embedded Postgres server's pid. */
  pgPid: () => Promise<number>;
}

/**
 * `npm start` as a newcomer runs it: no settings but a data directory (and `env`), so an embedded
 * Postgres and the emulators start. `detached`: in a process group of its own, as in a terminal.
 */
async function start(env: Record<string, string> = {}): Promise<Started> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ibg-start-'));
  const child = spawn(process.execPath, ['src/main.ts'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, DATA_DIR: dataDir, PORT: '0', ADMIN_TOKEN: ADMIN, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      const m = /Listening on (http:\/\/\S+)/.exec(stdout);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}${stdout}`)));
  });
  const pgPid = async () =>
    Number((await fs.readFile(path.join(dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
  return { child, url, dataDir, stdout: () => stdout, stderr: () => stderr, pgPid };
}

/** Whatever happened, nothing is left running: the service's group, and its Postgres (a group of its own). */
async function cleanUp(s: Started | null, dataDir?: string) {
  if (s) {
    const pid = await s.pgPid().catch(() => 0);
    if (s.child.exitCode === null && s.child.signalCode === null) process.kill(-s.child.pid!, 'SIGKILL');
    if (pid) {
      try {
        process.kill(pid, 'SIGQUIT');
      } catch {
        // already stopped
      }
    }
  }
  await fs.rm(s?.dataDir ?? dataDir!, { recursive: true, force: true });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The service's log lines: JSON on stdout (the one other line is "Listening on …"). */
function logLines(stdout: string): Array<{ level: string; msg: string; [key: string]: unknown }> {
  return stdout
    .split('\n')
    .filter((l) => l && !l.startsWith('Listening on '))
    .map((l) => JSON.parse(l));
}

describe('npm start', () => {
  it('starts on embedded defaults, serves, and stops cleanly on SIGTERM', async () => {
    let s: Started | null = null;
    try {
      s = await start();
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
      const created = await call(`${s.url}/admin/users`, {
        method: 'POST',
        key: ADMIN,
        json: { name: 'newcomer', quota: 10 },
      });
      expect(created.status).toBe(201);
      const pgPid = await s.pgPid();
      s.child.kill('SIGTERM');
      const [code] = await once(s.child, 'exit');
      expect(code).toBe(0);
      const logs = logLines(s.stdout());
      expect(logs.filter((l) => l.level === 'error' || l.level === 'warn')).toEqual([]);
      expect(logs.map((l) => l.msg)).toEqual(expect.arrayContaining(['image batch gateway started', 'stopped']));
      expect(s.stderr()).toBe('');
      expect(alive(pgPid)).toBe(false);
    } finally {
      await cleanUp(s);
    }
  });

  it('stops quietly on a Ctrl-C in its terminal, finishing the work in flight', async () => {
    let s: Started | null = null;
    try {
      s = await start({
        VERTEX_EMULATOR_QUEUE_MS: '100',
        VERTEX_EMULATOR_ONLINE_MS: '2000',
        // Big images: reading predictions and output files takes many chunks each.
        VERTEX_EMULATOR_IMAGE_PAD_BYTES: '300000',
      });
      const { url } = s;
      const user = await call(`${url}/admin/users`, {
        method: 'POST',
        key: ADMIN,
        json: { name: 'a', quota: 100_000 },
      });
      const key = user.body.api_key as string;
      await call(`${url}/api/image-batch-privacy`, { method: 'PUT', key, json: { accept: true } });

      // A batch to the end, its output downloaded.
      const batch = await call(`${url}/v1/image-files`, {
        method: 'POST',
        key,
        body: form([
          ['purpose', 'image_batch'],
          ['file', { data: jsonl([imageLine('a'), imageLine('b', 'a blue cone')]), filename: 'b.jsonl' }],
        ]),
      });
      expect(batch.status).toBe(200);
      const done = await eventually(async () => {
        const b = (await call(`${url}/v1/image-batches/${batch.body.id}`, { key })).body;
        return b.status === 'completed' ? b : null;
      }, 60_000);
      const output = await fetch(`${url}/v1/files/${done.output_file_id}/content`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect((await output.text()).length).toBeGreaterThan(2 * 300_000);

      // A sync image call running when Ctrl-C comes: it still gets its image.
      const sync = call(`${url}/v1/images/generations`, { method: 'POST', key, json: { prompt: 'in flight' } });
      await eventually(async () => {
        const jobs = (await call(`${url}/v1/jobs?limit=1`, { key })).body;
        return ['queued', 'running'].includes(jobs.data?.[0]?.status) ? true : null;
      });
      const pgPid = await s.pgPid();
      // A terminal's Ctrl-C signals the whole foreground process group.
      process.kill(-s.child.pid!, 'SIGINT');
      const [code] = await once(s.child, 'exit');
      expect((await sync).status).toBe(200);
      expect(code).toBe(0);

      // Nothing but info lines on stdout; nothing at all on stderr (no warnings, no stack traces).
      const logs = logLines(s.stdout());
      expect(logs.filter((l) => l.level !== 'info')).toEqual([]);
      expect(logs.map((l) => l.msg).slice(-1)).toEqual(['stopped']);
      expect(logs.find((l) => l.msg === 'shutting down')).toMatchObject({ signal: 'SIGINT' });
      expect(s.stderr()).toBe('');
      expect(alive(pgPid)).toBe(false);
    } finally {
      await cleanUp(s);
    }
  });

  it('refuses bad configuration with one line per problem', async () => {
    const child = spawn(process.execPath, ['src/main.ts'], {
      env: { PATH: process.env.PATH, PORT: 'x', ROLE: 'everything' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(stderr).toContain('PORT must be');
    expect(stderr).toContain('ROLE must be');
  });
});
