import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from '@jest/globals';

/**
 * `npm start` as a newcomer runs it: no settings but a data directory, so an embedded
 * Postgres and the emulators start; SIGTERM stops everything, Postgres last.
 */
describe('npm start', () => {
  it('starts on embedded defaults, serves, and stops cleanly on SIGTERM', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ibg-start-'));
    const child = spawn(process.execPath, ['src/main.ts'], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        DATA_DIR: dataDir,
        PORT: '0',
        ADMIN_TOKEN: 'start-test-admin-token',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      let stdout = '';
      const url = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (d) => {
          stdout += d;
          const m = /Listening on (http:\/\/\S+)/.exec(stdout);
          if (m) resolve(m[1]);
        });
        child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
      });
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const created = await fetch(`${url}/admin/users`, {
        method: 'POST',
        headers: { authorization: 'Bearer start-test-admin-token', 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'newcomer', quota: 10 }),
      });
      expect(created.status).toBe(201);
      const pgPid = Number(
        (await fs.readFile(path.join(dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0],
      );
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
      expect(stderr).not.toMatch(/"level":"(error|warn)"/);
      expect(() => process.kill(pgPid, 0)).toThrow();
    } finally {
      child.kill('SIGKILL');
      await fs.rm(dataDir, { recursive: true, force: true });
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
