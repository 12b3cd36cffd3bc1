import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { fileStem } from '../../src/cli/output-writer.ts';
import { decodePng, download, uploadBatch, waitForBatch } from '../support/batches.ts';
import { call, imageLine, jsonl } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

// The CLI runs as users run it: a child process of the real entry file, talking HTTP to a whole
// service. `[emulate:slow]` lines take 10 minutes here, so a batch holding one stays running
// until it is cancelled.
const CLI = path.resolve('src/cli/main.ts');
let svc: TestService;
let alice: { id: number; apiKey: string };
/** The child's working directory (no .env there) and where relative --out paths land. */
let work: string;

beforeAll(async () => {
  svc = await startTestService({ VERTEX_EMULATOR_SLOW_MS: '600000' });
  alice = await svc.createUser(10_000_000);
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'ibg-cli-'));
});
afterAll(async () => {
  await svc?.stop();
  if (work) await fs.rm(work, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function start(
  args: string[],
  opts: { key?: string | null; base?: string; nodeArgs?: string[] } = {},
): { child: ChildProcess; done: Promise<Run> } {
  const env: NodeJS.ProcessEnv = { ...process.env, IBG_BASE_URL: opts.base ?? svc.url };
  delete env.IBG_API_KEY;
  delete env.PORT;
  if (opts.key !== null) env.IBG_API_KEY = opts.key ?? alice.apiKey;
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), CLI, ...args], {
    cwd: work,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { child, done };
}

const ibg = (args: string[], opts: Parameters<typeof start>[1] = {}) => start(args, opts).done;

async function writeInput(name: string, content: string): Promise<string> {
  const file = path.join(work, name);
  await fs.writeFile(file, content);
  return file;
}

const PROGRESS_LINE = /^batch_\w+ (validating|in_progress|finalizing|completed) \d+\/\d+ \(\d+%\)(, \d+ failed)?$/;

describe('submit --wait --out', () => {
  const odd = '../up/and\\away:*?';
  let run: Run;
  let batchId: string;
  let dir: string;

  beforeAll(async () => {
    const file = await writeInput(
      'mixed.jsonl',
      jsonl([
        imageLine('two-pngs', 'a red cube', { n: 2 }),
        imageLine('a-jpeg', 'a green cone', { output_format: 'jpeg' }),
        imageLine('linked', 'a blue sphere', { response_format: 'url', output_format: 'webp' }),
        imageLine(odd, 'a yellow torus'),
        imageLine('broken', 'this one fails [emulate:fail]'),
      ]),
    );
    dir = path.join(work, 'results');
    run = await ibg(['submit', file, '--wait', '--out', dir]);
    batchId = run.stdout.split(' ')[0];
  });

  it('ends with exit 0 and a summary on stdout, plain progress lines on stderr', () => {
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^batch_\w+ completed: 4 of 5 requests succeeded, 1 failed; charged \d+/);
    const progress = run.stderr.split('\n').filter((l) => l.startsWith('batch_'));
    expect(progress.length).toBeGreaterThan(0);
    for (const line of progress) expect(line).toMatch(PROGRESS_LINE);
    expect(progress.at(-1)).toBe(`${batchId} completed 5/5 (100%), 1 failed`);
    expect(run.stderr).not.toContain('\x1b['); // not a terminal: no bar, no cursor codes
    expect(run.stderr).toContain(`wrote 5 images of 4 lines to ${dir}; 1 line in ${dir}/errors.jsonl`);
  });

  it('writes every image as <custom_id>_<index>.<ext>, the bytes of the output file', async () => {
    const batch = await waitForBatch(svc, alice.apiKey, batchId);
    const output = await download(svc, alice.apiKey, batch.output_file_id);
    const oddStem = fileStem(odd);
    expect(oddStem).toMatch(/^_\._up_and_away___~[0-9a-f]{8}$/);
    expect((await fs.readdir(dir)).sort()).toEqual(
      ['a-jpeg_0.jpg', 'errors.jsonl', 'linked_0.webp', `${oddStem}_0.png`, 'two-pngs_0.png', 'two-pngs_1.png'].sort(),
    );
    for (const line of output) {
      for (const [i, image] of line.response.body.data.entries()) {
        const ext = { 'a-jpeg': 'jpg', linked: 'webp' }[line.custom_id as string] ?? 'png';
        const bytes = await fs.readFile(path.join(dir, `${fileStem(line.custom_id)}_${i}.${ext}`));
        if (image.b64_json) expect(bytes.equals(Buffer.from(image.b64_json, 'base64'))).toBe(true);
        else expect(bytes.equals(Buffer.from(await (await fetch(image.url)).arrayBuffer()))).toBe(true);
      }
    }
    const png = decodePng((await fs.readFile(path.join(dir, 'two-pngs_1.png'))).toString('base64'));
    expect(png.width).toBe(1024);
    expect((await fs.readFile(path.join(dir, 'a-jpeg_0.jpg'))).subarray(0, 3)).toEqual(Buffer.from([0xff, 0xd8, 0xff]));
    const webp = await fs.readFile(path.join(dir, 'linked_0.webp'));
    expect(webp.subarray(0, 4).toString('latin1') + webp.subarray(8, 12).toString('latin1')).toBe('RIFFWEBP');
  });

  it('puts the failed line in errors.jsonl', async () => {
    const errors = (await fs.readFile(path.join(dir, 'errors.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ custom_id: 'broken', error: { code: 'image_generation_failed' } });
  });

  it('status, status --json and list show the batch', async () => {
    const status = await ibg(['status', batchId]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`${batchId} completed`);
    expect(status.stdout).toMatch(/requests\s+5 total: 4 completed, 1 failed/);
    const raw = await ibg(['status', batchId, '--json']);
    expect(JSON.parse(raw.stdout)).toEqual(await waitForBatch(svc, alice.apiKey, batchId));
    const list = await ibg(['list', '--status', 'completed']);
    expect(list.code).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(/^ID\s+STATUS\s+DONE\/TOTAL\s+FAILED\s+CREATED$/);
    expect(list.stdout).toMatch(new RegExp(`${batchId}\\s+completed\\s+5/5\\s+1\\s+\\d{4}-\\d\\d-\\d\\d `));
    const json = JSON.parse((await ibg(['list', '--limit', '1', '--json'])).stdout);
    expect(json.data).toHaveLength(1);
  });

  it('download writes the same files again, into ./ID by default', async () => {
    const again = await ibg(['download', batchId]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`wrote 5 images of 4 lines to ${batchId}`);
    const files = (await fs.readdir(path.join(work, batchId))).sort();
    expect(files).toEqual((await fs.readdir(dir)).sort());
    for (const f of files) {
      expect((await fs.readFile(path.join(work, batchId, f))).equals(await fs.readFile(path.join(dir, f)))).toBe(true);
    }
  });

  it('refuses to cancel a finished batch (409: exit 3)', async () => {
    const r = await ibg(['cancel', batchId]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^ibg: .*\(batch_not_cancellable, HTTP 409\)\n$/);
  });
});

describe('a running batch', () => {
  it('is cancelled by `cancel ID`, and `submit --wait` then ends with exit 4', async () => {
    const user = await svc.createUser(1_000_000);
    const file = await writeInput(
      'slow.jsonl',
      jsonl([imageLine('quick'), imageLine('slow', 'a slow one [emulate:slow]')]),
    );
    const submit = start(['submit', file, '--wait'], { key: user.apiKey });
    const running = await eventuallyListed(user.apiKey);
    await waitForBatch(svc, user.apiKey, running, (b) => b.status === 'in_progress');
    const download = await ibg(['download', running], { key: user.apiKey });
    expect(download.code).toBe(3);
    expect(download.stderr).toBe(
      `ibg: ${running} is in_progress: its results come when it has finished (add --wait)\n`,
    );

    const cancel = await ibg(['cancel', running], { key: user.apiKey });
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toBe(`${running} cancelling\n`);
    const waited = await submit.done;
    expect(waited.code).toBe(4);
    expect(waited.stdout).toMatch(new RegExp(`^${running} cancelled: \\d of 2 requests succeeded`));
    expect(waited.stderr).toContain(`ibg: ${running} cancelled\n`);
    expect(waited.stderr).toMatch(new RegExp(`^${running} in_progress \\d/2`, 'm'));

    // What finished before the cancel is written; the rest is in errors.jsonl. Exit 4 all the same.
    const partial = await ibg(['download', running, '--out', 'partial'], { key: user.apiKey });
    expect(partial.code).toBe(4);
    expect(partial.stderr).toBe(`ibg: ${running} cancelled\n`);
    const errors = (await fs.readFile(path.join(work, 'partial', 'errors.jsonl'), 'utf8')).trim().split('\n');
    const slow = errors.map((l) => JSON.parse(l)).find((l) => l.custom_id === 'slow');
    expect(slow.error.code).toBe('missing_prediction');
    const written = await fs.readdir(path.join(work, 'partial'));
    expect(written.filter((f) => f.endsWith('.png'))).toEqual(errors.length === 1 ? ['quick_0.png'] : []);
  });

  it('`cancel ID --wait` waits until it is cancelled', async () => {
    const user = await svc.createUser(1_000_000);
    const res = await uploadBatch(svc, user.apiKey, [imageLine('slow', 'slow [emulate:slow]')]);
    await waitForBatch(svc, user.apiKey, res.body.id, (b) => b.status === 'in_progress');
    const r = await ibg(['cancel', res.body.id, '--wait', '--json'], { key: user.apiKey });
    expect(r.code).toBe(0);
    const batch = JSON.parse(r.stdout);
    expect(batch).toMatchObject({ id: res.body.id, status: 'cancelled' });
    expect(batch.billing.pre_deducted - batch.billing.refunded).toBe(batch.billing.settled);
  });
});

/** The one batch of a fresh user, once the CLI has created it. */
async function eventuallyListed(key: string): Promise<string> {
  for (;;) {
    const r = await ibg(['list', '--json'], { key });
    const ids = JSON.parse(r.stdout).data.map((b: { id: string }) => b.id);
    if (ids.length) return ids[0];
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('errors', () => {
  it('a wrong key: exit 2 and the API’s message', async () => {
    const r = await ibg(['status', 'batch_x'], { key: 'sk-wrong000000000000000000000000' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^ibg: .+ \(invalid_api_key, HTTP 401\)\n$/);
    const file = await writeInput('ok.jsonl', jsonl([imageLine('a')]));
    const submit = await ibg(['submit', file], { key: 'sk-wrong000000000000000000000000' });
    expect(submit.code).toBe(2);
    expect(submit.stderr).toContain('invalid_api_key');
  });

  it('no key at all: exit 2', async () => {
    const r = await ibg(['list'], { key: null });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('ibg: IBG_API_KEY is not set: export your API key (sk-...)\n');
  });

  it('the privacy policy not accepted: exit 2 pointing at accept-privacy, which fixes it', async () => {
    const user = await svc.createUser(1_000_000, { privacy: false });
    const file = await writeInput('private.jsonl', jsonl([imageLine('a')]));
    const refused = await ibg(['submit', file], { key: user.apiKey });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('ibg accept-privacy');
    expect((await ibg(['accept-privacy'], { key: user.apiKey })).stdout).toBe('privacy policy accepted\n');
    const ok = await ibg(['submit', file], { key: user.apiKey });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^batch_\w+ validating\n$/);
  });

  it('a missing file: exit 3 before anything is sent', async () => {
    const r = await ibg(['submit', 'no-such.jsonl']);
    expect(r.code).toBe(3);
    expect(r.stderr).toBe('ibg: cannot read no-such.jsonl: no such file\n');
    const dir = await ibg(['submit', work]);
    expect(dir.code).toBe(3);
    expect(dir.stderr).toBe(`ibg: ${work} is not a file\n`);
  });

  it('a file that is not JSONL: exit 3 with the invalid lines', async () => {
    const file = await writeInput('notes.txt', 'shopping list\n- milk\n');
    const r = await ibg(['submit', file, '--wait']);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/^batch_\w+ failed: 0 of 0 requests succeeded/);
    expect(r.stderr).toMatch(/^ {2}line 1: invalid_json: /m);
    expect(r.stderr).toMatch(/^ {2}line 2: invalid_json: /m);
    expect(r.stderr).toMatch(/ibg: batch_\w+ failed: the file has invalid lines\n$/);
  });

  it('a batch that fails (not enough quota): exit 4 with its error', async () => {
    const poor = await svc.createUser(1);
    const file = await writeInput('costly.jsonl', jsonl([imageLine('a')]));
    const r = await ibg(['submit', file, '--wait', '--out', 'nothing'], { key: poor.apiKey });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^ {2}insufficient_quota: /m);
    expect(r.stderr).toMatch(/ibg: batch_\w+ failed\n$/);
    await expect(fs.stat(path.join(work, 'nothing'))).rejects.toThrow(); // nothing to write
  });

  it('another user’s batch is not found: exit 3', async () => {
    const other = await svc.createUser(1_000_000);
    const res = await uploadBatch(svc, other.apiKey, [imageLine('a')]);
    const r = await ibg(['status', res.body.id]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('(batch_not_found, HTTP 404)');
  });

  it('the service unreachable: exit 5 naming the URL', async () => {
    const base = `http://127.0.0.1:${await closedPort()}`;
    const r = await ibg(['list'], { base });
    expect(r.code).toBe(5);
    expect(r.stderr).toBe(
      `ibg: cannot reach the service at ${base} (ECONNREFUSED); is it running, and is IBG_BASE_URL right?\n`,
    );
  });

  it('usage errors: exit 1; --help: exit 0', async () => {
    expect((await ibg(['frobnicate'])).code).toBe(1);
    const unknownOption = await ibg(['list', '--colour']);
    expect(unknownOption.code).toBe(1);
    expect(unknownOption.stderr).toContain('see ibg list --help');
    expect((await ibg(['status'])).stderr).toBe('ibg: usage: ibg status ID [--json]\n');
    const help = await ibg(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/exit codes:\n {2}0 {2}done\n {2}1 {2}usage error/);
  });
});

describe('npm run admin', () => {
  const admin = (args: string[], env: Record<string, string>) =>
    new Promise<Run>((resolve, reject) => {
      const base: NodeJS.ProcessEnv = { ...process.env, ADMIN_TOKEN: svc.env.ADMIN_TOKEN, ...env };
      if (!('GATEWAY_URL' in env)) delete base.GATEWAY_URL;
      const child = spawn(process.execPath, [path.resolve('scripts/admin.ts'), ...args], { cwd: work, env: base });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  it('follows PORT', async () => {
    const r = await admin(['user', String(alice.id)], { PORT: new URL(svc.url).port });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: alice.id, object: 'user' });
  });

  it('names the URL it tried when nothing answers there', async () => {
    const port = await closedPort();
    const r = await admin(['models'], { PORT: String(port) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot reach the service at http://127.0.0.1:${port}/admin/models (ECONNREFUSED)`);
    expect(r.stderr).toContain('Is it running?');
  });
});

/** A port nothing listens on: bound once by us, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('memory', () => {
  let big: TestService;
  afterAll(async () => {
    await big?.stop();
  });

  // The same download of 8 and of 40 lines of one 1 MiB image each (a 56 MB output file) must peak
  // at about the same size: memory follows the longest line, not the file. A 24 MB heap keeps V8
  // from letting garbage pile up before collecting it, which would otherwise add tens of MB of
  // noise; a client that kept the file's text would run out of heap, one that kept its bytes
  // would grow by the file's size.
  it('stays flat while downloading a large output', async () => {
    big = await startTestService({ VERTEX_EMULATOR_IMAGE_PAD_BYTES: String(1024 * 1024) });
    const user = await big.createUser(100_000_000);
    const lines = (count: number) => Array.from({ length: count }, (_, i) => imageLine(`line-${i}`, `picture ${i}`));
    const small = await uploadBatch(big, user.apiKey, lines(8));
    const large = await uploadBatch(big, user.apiKey, lines(40));
    await waitForBatch(big, user.apiKey, small.body.id, undefined, 240_000);
    const done = await waitForBatch(big, user.apiKey, large.body.id, undefined, 240_000);
    const peak = async (id: string, count: number) => {
      const r = await ibg(['download', id, '--out', `mem-${id}`], {
        key: user.apiKey,
        base: big.url,
        nodeArgs: ['--max-old-space-size=24', '--import', path.resolve('test/support/peak-rss.ts')],
      });
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`wrote ${count} images of ${count} lines`);
      return Number(/peak_rss=(\d+)/.exec(r.stderr)![1]);
    };
    const outputBytes: number = (await call(`${big.url}/v1/files/${done.output_file_id}`, { key: user.apiKey })).body
      .bytes;
    expect(outputBytes).toBeGreaterThan(50_000_000);
    const smallPeak = await peak(small.body.id, 8);
    const largePeak = await peak(large.body.id, 40);
    expect(largePeak - smallPeak).toBeLessThan(outputBytes / 3);
  }, 300_000);
});
