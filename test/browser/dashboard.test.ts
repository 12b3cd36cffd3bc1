import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { type Browser, type BrowserContext, chromium, type Locator, type Page, type Response } from 'playwright-core';
import { eventually, FINISHED, ledger, uploadBatch, waitForBatch } from '../support/batches.ts';
import { ADMIN_TOKEN, startTestService, type TestService } from '../support/service.ts';

/**
 * The dashboard in a real headless Chromium (Debian's `chromium` package, or CHROMIUM_PATH),
 * against the whole service: sign-in, upload, live progress, the gallery, cancel and delete, and
 * the operator's pages. Every page must load without a console error, an uncaught exception or
 * a failed request. `UPDATE_SCREENSHOTS=1` writes the screenshots to docs/screenshots (the
 * README shows them); otherwise they go to a scratch directory.
 */

// What the functions run in the page use (the project's types are Node's, not the DOM's).
declare const document: any;
declare const window: any;
declare const sessionStorage: any;
declare const DataTransfer: any;

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// The machine may have no network: these keep Chromium from reaching for Google's hosts.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SHOTS =
  process.env.UPDATE_SCREENSHOTS === '1'
    ? fileURLToPath(new URL('../../docs/screenshots/', import.meta.url))
    : path.join(os.tmpdir(), 'image-batch-gateway-screenshots');
const SLOW_MS = 2500;
const MODEL = 'gemini-2.5-flash-image';
const fmt = (n: number) => n.toLocaleString('en-US');

let svc: TestService;
let browser: Browser;
const contexts: BrowserContext[] = [];
/** Console errors, page errors and failed requests of the current test. */
let problems: string[] = [];
/** Requests a test fails on purpose (URL fragment and status), not counted as problems. */
let expectedFailures: Array<{ url: string; status: number }> = [];

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(
      `No Chromium at ${CHROMIUM}: the browser tests need Debian's chromium package (apt-get install chromium), ` +
        'or CHROMIUM_PATH set to a Chromium or Chrome binary.',
    );
  }
  fs.mkdirSync(SHOTS, { recursive: true });
  // Small shards and slow lines: a batch runs in visible steps.
  svc = await startTestService({ SHARD_MAX_REQUESTS: '2', VERTEX_EMULATOR_SLOW_MS: String(SLOW_MS) });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}, 60_000);

afterEach(async () => {
  for (const c of contexts.splice(0)) await c.close();
  const seen = problems;
  problems = [];
  expectedFailures = [];
  expect(seen).toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await svc?.stop();
});

async function newPage(viewport = { width: 1280, height: 800 }): Promise<Page> {
  const context = await browser.newContext({ viewport, acceptDownloads: true, colorScheme: 'light' });
  contexts.push(context);
  const page = await context.newPage();
  const expected = (url: string, status: number) =>
    expectedFailures.some((f) => url.includes(f.url) && f.status === status);
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Chromium reports an HTTP error answer as a console error too; a wanted one is no problem.
    const failed = /status of (\d{3})/.exec(m.text());
    if (failed && expected(m.location().url, Number(failed[1]))) return;
    problems.push(`console error: ${m.text()} (${m.location().url})`);
  });
  page.on('requestfailed', (r) => {
    // A lazy image or a poll cut short by leaving the page is not a failure.
    if (r.failure()?.errorText === 'net::ERR_ABORTED') return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !expected(r.url(), r.status())) {
      problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
    }
  });
  return page;
}

async function shot(page: Page, name: string, fullPage = true) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage, animations: 'disabled' });
}

async function signInUser(page: Page, key: string) {
  await page.goto(svc.url);
  await page.getByLabel('API key', { exact: true }).fill(key);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('heading', { name: 'Batches', exact: true }).waitFor();
}

async function signInAdmin(page: Page) {
  await page.goto(svc.url);
  await page.getByLabel('Admin token', { exact: true }).fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Sign in as operator' }).click();
  await page.getByRole('heading', { name: 'Users', exact: true }).waitFor();
}

async function acceptPrivacy(page: Page) {
  await page.getByRole('button', { name: 'Accept the privacy policy' }).click();
  await page.getByText('Privacy policy accepted').waitFor();
}

const dropZone = (page: Page) => page.getByLabel('Drop a JSONL file here, or choose one');

function line(customId: string, prompt: string, n = 1) {
  return JSON.stringify({ custom_id: customId, body: { model: MODEL, prompt, n } });
}

/** The row of a batch in the list, once it shows. */
async function batchRow(page: Page, batchId: string): Promise<Locator> {
  const row = page.locator(`tr[data-batch="${batchId}"]`);
  await row.waitFor();
  return row;
}

/** The id of the batch the upload just created, from the page's notice. */
async function createdBatchId(page: Page): Promise<string> {
  const notice = page.getByText(/^Created batch_\w+ from /);
  await notice.waitFor();
  return /^Created (batch_\w+)/.exec((await notice.textContent())!)![1];
}

/** Waits until the page's main status badge says `status`. */
async function badge(page: Page, scope: string, status: string, timeout = 60_000) {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent?.trim() === want,
    [scope, status.replace('_', ' ')] as const,
    { polling: 100, timeout },
  );
}

describe('dashboard', () => {
  it('serves one page with a strict CSP and under 200 KB of JavaScript; signs in with the keyboard', async () => {
    // The page: no inline script but the import map, no other origin.
    const res = await fetch(svc.url);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/=]+';/);
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const vendorPath = /"preact": "\.(\/dashboard\/vendor\/[0-9a-f]+\/preact\.mjs)"/.exec(await res.text())![1];
    const vendor = await fetch(svc.url + vendorPath);
    expect(vendor.status).toBe(200);
    expect(vendor.headers.get('content-type')).toMatch(/javascript/);
    expect(vendor.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`${svc.url}/dashboard/index.html`)).status).toBe(404);

    const user = await svc.createUser(100_000, { privacy: false });
    const page = await newPage();
    const scripts = new Map<string, number>();
    const measure = async (r: Response) => {
      if (r.request().resourceType() === 'script' && r.status() === 200) scripts.set(r.url(), (await r.body()).length);
    };
    page.on('response', measure);
    await page.goto(svc.url);
    await page.getByLabel('API key', { exact: true }).waitFor();
    await page.waitForLoadState('networkidle');
    page.off('response', measure);
    const jsBytes = [...scripts.values()].reduce((a, b) => a + b, 0);
    expect(scripts.size).toBeGreaterThanOrEqual(4); // preact, hooks, htm, the app's modules
    expect(jsBytes).toBeLessThan(200 * 1024);
    console.info(`dashboard: first page loads ${scripts.size} scripts, ${jsBytes} bytes of JavaScript`);
    await shot(page, 'sign-in', false);

    // A wrong key is refused in place, and the key is not kept.
    expectedFailures.push({ url: '/api/image-batch-privacy', status: 401 });
    await page.getByLabel('API key', { exact: true }).fill('sk-not-a-key');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('alert').filter({ hasText: 'Incorrect or revoked API key' }).waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);

    // Keyboard only: Tab to the field, type, Enter.
    await page.reload();
    await page.getByLabel('API key', { exact: true }).waitFor();
    for (let i = 0; i < 10; i++) {
      await page.keyboard.press('Tab');
      if (await page.evaluate(() => document.activeElement?.id === 'signin-user')) break;
    }
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('signin-user');
    await page.keyboard.type(user.apiKey);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Batches', exact: true }).waitFor();
    // The key is in this tab's session storage only: not in the URL, not in a cookie.
    expect(page.url()).not.toContain(user.apiKey);
    expect(await page.context().cookies()).toEqual([]);
    expect(await page.evaluate(() => JSON.stringify(sessionStorage))).toContain(user.apiKey);
    // The privacy policy comes first; its button is reachable with the keyboard too.
    const accept = page.getByRole('button', { name: 'Accept the privacy policy' });
    await accept.focus();
    await page.keyboard.press('Enter');
    await dropZone(page).waitFor({ state: 'attached' });
    // Signing out forgets the key.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key', { exact: true }).waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
  }, 60_000);

  it('uploads a JSONL, shows its progress moving live, and opens the finished batch with its gallery', async () => {
    const user = await svc.createUser(2_000_000, { privacy: false });
    const page = await newPage();
    await signInUser(page, user.apiKey);
    await acceptPrivacy(page);
    // Two earlier batches, for the list: one refused at validation, one with a failed request.
    const earlier = [
      await uploadBatch(svc, user.apiKey, `${line('x', 'A typo')}\n{"custom_id": "y"}\n`),
      await uploadBatch(
        svc,
        user.apiKey,
        `${line('ok', 'A green hill')}\n${line('no', 'A rejected one [emulate:fail]')}\n`,
      ),
    ];
    for (const b of earlier) await waitForBatch(svc, user.apiKey, b.body.id);

    // Two quick requests of ten images (one shard), then four slow ones in two more shards: the
    // bar stops at about two thirds, then climbs as each slow line finishes.
    const lines = [
      line('quick-0', 'A lighthouse at dawn', 10),
      line('quick-1', 'A lighthouse at dusk', 10),
      ...[2, 3, 4, 5].map((i) => line(`slow-${i}`, `A slow sailing boat ${i} [emulate:slow]`, 2)),
    ];
    await dropZone(page).setInputFiles({
      name: 'lighthouses.jsonl',
      mimeType: 'application/jsonl',
      buffer: Buffer.from(`${lines.join('\n')}\n`),
    });
    const id = await createdBatchId(page);
    const row = await batchRow(page, id);
    const bar = row.getByRole('progressbar', { name: `Progress of ${id}` });
    expect(await bar.getAttribute('aria-valuemin')).toBe('0');
    expect(await bar.getAttribute('aria-valuemax')).toBe('100');

    const value = async () => Number(await bar.getAttribute('aria-valuenow'));
    const runningValue = await page.waitForFunction(
      (batchId) => {
        const tr = document.querySelector(`tr[data-batch="${batchId}"]`);
        const v = Number(tr?.querySelector('[role=progressbar]')?.getAttribute('aria-valuenow'));
        return tr?.querySelector('.badge')?.textContent === 'in progress' && v > 0 && v < 100 ? v : false;
      },
      id,
      { polling: 100, timeout: 60_000 },
    );
    const first = (await runningValue.jsonValue()) as number;
    await shot(page, 'batches');
    // It moves on by itself (the page polls), past the first value, to 100 and completed.
    await page.waitForFunction(
      ([batchId, seen]) =>
        Number(
          document.querySelector(`tr[data-batch="${batchId}"] [role=progressbar]`)?.getAttribute('aria-valuenow'),
        ) > seen,
      [id, first] as const,
      { polling: 100, timeout: 60_000 },
    );
    await badge(page, `tr[data-batch="${id}"] .badge`, 'completed');
    expect(await value()).toBe(100);

    // The batch page: counts and billing as the API says.
    const api = await waitForBatch(svc, user.apiKey, id);
    await row.getByRole('link', { name: id }).click();
    await page.getByRole('heading', { name: `Batch ${id}` }).waitFor();
    const facts = page.locator('.fact');
    const fact = (term: string) => facts.filter({ has: page.locator('dt', { hasText: term }) }).locator('dd');
    expect(await fact('Total').textContent()).toBe('6');
    expect(await fact('Completed').first().textContent()).toBe('6');
    expect(await fact('Pre-deducted').textContent()).toBe(fmt(api.billing.pre_deducted));
    expect(await fact('Settled').textContent()).toBe(fmt(api.billing.settled));
    expect(await fact('Refunded').textContent()).toBe('0');
    // The gallery: 28 images, 24 at first, then the rest; every thumbnail loads.
    const thumbs = page.locator('.gallery img');
    await settle(
      () => thumbs.count(),
      (v) => v === 24,
    );
    await page.getByRole('button', { name: 'Load more images' }).click();
    await settle(
      () => thumbs.count(),
      (v) => v === 28,
    );
    await expect(page.getByRole('button', { name: 'Load more images' }).count()).resolves.toBe(0);
    await allImagesLoaded(page, '.gallery img');
    await page.locator('.gallery-section').scrollIntoViewIfNeeded();
    await shot(page, 'batch');

    // By custom_id: that request's images only.
    await page.getByLabel('custom_id').fill('slow-3');
    await page.getByRole('button', { name: 'Show', exact: true }).click();
    await settle(
      () => thumbs.count(),
      (v) => v === 2,
    );
    await allImagesLoaded(page, '.gallery img');
    expect(await page.locator('.thumb-caption').allTextContents()).toEqual(['slow-3', 'slow-3 #2']);

    // Full size in a dialog, by custom_id and index; Escape closes it.
    await page.getByRole('button', { name: 'Open slow-3, image 2, full size' }).click();
    const dialog = page.getByRole('dialog', { name: 'slow-3, image 2' });
    await dialog.waitFor();
    await allImagesLoaded(page, 'dialog img.full');
    const size = await dialog.locator('img.full').evaluate((img: any) => img.naturalWidth);
    expect(size).toBeGreaterThan(100);
    await shot(page, 'image', false);
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });

    // The output file, saved through the browser.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download output' }).click(),
    ]);
    expect(download.suggestedFilename()).toBe(`${id}-output.jsonl`);
    const output = fs
      .readFileSync((await download.path())!, 'utf8')
      .trim()
      .split('\n');
    expect(output.map((l) => JSON.parse(l).custom_id)).toEqual([
      'quick-0',
      'quick-1',
      'slow-2',
      'slow-3',
      'slow-4',
      'slow-5',
    ]);
  }, 120_000);

  it('cancels a running batch (dropped on the drop zone), shows it cancelled, and deletes it', async () => {
    const user = await svc.createUser(1_000_000);
    const page = await newPage();
    await signInUser(page, user.apiKey);
    // These lines take ten minutes each: the batch is surely running when it is cancelled.
    svc.runtime.emulators!.vertex.setSlowMs(10 * 60_000);
    try {
      const content = `${[0, 1, 2].map((i) => line(`never-${i}`, `A very slow picture [emulate:slow]`)).join('\n')}\n`;
      const data = await page.evaluateHandle((text) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], 'slow.jsonl', { type: 'application/jsonl' }));
        return dt;
      }, content);
      await page.locator('.dropzone').dispatchEvent('dragover', { dataTransfer: data });
      await page.locator('.dropzone').dispatchEvent('drop', { dataTransfer: data });
      const id = await createdBatchId(page);
      const row = await batchRow(page, id);
      await badge(page, `tr[data-batch="${id}"] .badge`, 'in_progress');
      await row.getByRole('link', { name: id }).click();
      await page.getByRole('heading', { name: `Batch ${id}` }).waitFor();
      await expect(page.getByRole('button', { name: 'Delete batch' }).count()).resolves.toBe(0);

      await page.getByRole('button', { name: 'Cancel batch' }).click();
      await page.getByRole('button', { name: 'Yes, cancel it' }).click();
      await badge(page, '.batch-head .badge', 'cancelled');
      await expect(page.getByRole('button', { name: 'Cancel batch' }).count()).resolves.toBe(0);
      const done = await waitForBatch(svc, user.apiKey, id);
      expect(done.status).toBe('cancelled');
      expect(done.billing.refunded).toBe(done.billing.pre_deducted);

      await page.getByRole('button', { name: 'Delete batch' }).click();
      await page.getByRole('button', { name: 'Yes, delete it' }).click();
      await page.getByText(`Deleted ${id} and its files.`).waitFor();
      await page.getByRole('heading', { name: 'Batches', exact: true }).waitFor();
      await expect(page.locator(`tr[data-batch="${id}"]`).count()).resolves.toBe(0);
      expect((await fetch(`${svc.url}/v1/image-batches/${id}`, { headers: auth(user.apiKey) })).status).toBe(404);
    } finally {
      svc.runtime.emulators!.vertex.setSlowMs(SLOW_MS);
    }
  }, 90_000);

  it('shows the validation errors of a refused file by line, and filters the list by status', async () => {
    const user = await svc.createUser(1_000_000);
    const page = await newPage();
    await signInUser(page, user.apiKey);
    const bad = [
      line('fine', 'A red cube'),
      JSON.stringify({ custom_id: 'no-prompt', body: { model: MODEL } }),
      line('fine', 'The same custom_id again'),
    ].join('\n');
    await dropZone(page).setInputFiles({ name: 'bad.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(bad) });
    const id = await createdBatchId(page);
    await badge(page, `tr[data-batch="${id}"] .badge`, 'failed');

    await page.getByLabel('Status', { exact: true }).selectOption('completed');
    await page.getByText('No completed batches.').waitFor();
    await page.getByLabel('Status', { exact: true }).selectOption('failed');
    await batchRow(page, id);

    await page.locator(`tr[data-batch="${id}"] a`).click();
    const errors = page.getByRole('table', { name: 'Validation errors of the input file, by line' });
    await errors.waitFor();
    const rows = await errors.locator('tbody tr td:first-child').allTextContents();
    expect(rows).toEqual(expect.arrayContaining(['2', '3']));
    const api = await waitForBatch(svc, user.apiKey, id);
    expect(rows).toHaveLength(api.errors.data.length);
  }, 60_000);

  it('lets an operator find a user, top up, issue and revoke keys, read the balanced ledger', async () => {
    const name = `ledger-${Date.now().toString(36)}`;
    const created = (await svc.admin('POST', '/admin/users', { name, quota: 80_000 })).body;
    await fetch(`${svc.url}/api/image-batch-privacy`, {
      method: 'PUT',
      headers: { ...auth(created.api_key), 'content-type': 'application/json' },
      body: JSON.stringify({ accept: true }),
    });
    // A finished batch, so the ledger has a pre-deduction and maybe a refund besides the top-up.
    const batch = await uploadBatch(svc, created.api_key, [
      { custom_id: 'a', body: { model: MODEL, prompt: 'A blue sphere' } },
      { custom_id: 'b', body: { model: MODEL, prompt: 'A broken one [emulate:fail]' } },
    ]);
    await waitForBatch(svc, created.api_key, batch.body.id, (b) => FINISHED.includes(b.status));
    const before = await ledger(svc, created.id);

    const page = await newPage();
    await signInAdmin(page);
    await page.locator('tbody tr').first().waitFor();
    await shot(page, 'admin-users', false);
    await page.getByLabel('Search users').fill(name);
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.getByRole('heading', { name: `Users matching “${name}”` }).waitFor();
    await settle(
      () => page.locator('tbody tr').count(),
      (v) => v === 1,
    );
    await page.getByRole('link', { name }).click();
    await page.getByRole('heading', { name: new RegExp(`^${name}`) }).waitFor();
    expect(await page.locator('#user-quota').textContent()).toBe(fmt(before.quota));
    const invariant = page.locator('#ledger-invariant');
    await invariant.waitFor();
    expect(await invariant.textContent()).toContain(`Σ log deltas ${fmt(before.sum)}`);
    expect(await invariant.textContent()).toContain('✓ balanced');

    // Top-up: the quota, the ledger's new row and the invariant follow.
    await page.getByLabel('Top-up amount').fill('12345');
    await page.getByRole('button', { name: 'Top up' }).click();
    await page.getByText(`Added 12,345: quota is now ${fmt(before.quota + 12_345)}.`).waitFor();
    await settle(
      () => page.locator('#user-quota').textContent(),
      (v) => v === fmt(before.quota + 12_345),
    );
    await settle(
      () => invariant.textContent(),
      (v) => Boolean(v?.includes(`Σ log deltas ${fmt(before.sum + 12_345)}`)),
    );
    expect(await invariant.textContent()).toContain('✓ balanced');
    await page.locator('table.ledger td', { hasText: '+12,345' }).waitFor();
    const after = await ledger(svc, created.id);
    expect(after.quota).toBe(before.quota + 12_345);
    expect(after.sum).toBe(after.quota);
    expect(await page.locator('table.ledger tbody tr').count()).toBe(after.logs.length);

    // A new key, shown once, works; revoked, it does not.
    await page.getByRole('button', { name: 'Issue a new key' }).click();
    const newKey = await page.locator('#new-key').inputValue();
    expect(newKey).toMatch(/^sk-/);
    expect((await fetch(`${svc.url}/api/image-batch-privacy`, { headers: auth(newKey) })).status).toBe(200);
    await settle(
      () => page.locator('table.keys tbody tr').count(),
      (v) => v === 2,
    );
    await shot(page, 'admin-user');
    const hint = `sk-…${newKey.slice(-4)}`;
    expect(await page.locator('table.keys tbody tr').last().locator('td').first().textContent()).toBe(hint);
    await page.getByRole('button', { name: `Revoke ${hint}` }).click();
    await page.getByRole('button', { name: 'Yes, revoke' }).click();
    await page.locator('table.keys tbody tr').last().getByText('revoked').waitFor();
    expect((await fetch(`${svc.url}/api/image-batch-privacy`, { headers: auth(newKey) })).status).toBe(401);
  }, 90_000);

  it('lets an operator change a model price and read the system panel', async () => {
    // At least one finished batch, whatever ran before.
    const user = await svc.createUser(1_000_000);
    const batch = await uploadBatch(svc, user.apiKey, [{ custom_id: 'a', body: { model: MODEL, prompt: 'A dot' } }]);
    await waitForBatch(svc, user.apiKey, batch.body.id);
    const page = await newPage();
    await signInAdmin(page);
    await page.getByRole('link', { name: 'Models' }).click();
    const form = page.getByRole('form', { name: MODEL, exact: true });
    await form.waitFor();
    await form.getByLabel('Price 1K').fill('6000');
    await form.getByRole('button', { name: `Save ${MODEL}` }).click();
    await form.getByText(`Saved ${MODEL}.`).waitFor();
    const models = (await svc.admin('GET', '/admin/models')).body.data;
    expect(models.find((m: any) => m.id === MODEL).pricing.sync['1K']).toBe(6000);
    await shot(page, 'admin-models');

    await page.getByRole('link', { name: 'System' }).click();
    await page.getByRole('heading', { name: 'Queue depth per step' }).waitFor();
    const system = (await svc.admin('GET', '/admin/system')).body;
    const count = (table: string, status: string) =>
      page.locator(`#${table} tr`, { has: page.locator('th', { hasText: new RegExp(`^${status}$`) }) }).locator('td');
    await settle(
      () => count('batch-counts', 'completed').textContent(),
      (v) => v === fmt(system.batches.completed),
    );
    expect(system.batches.completed).toBeGreaterThan(0);
    expect(await page.locator('#queues tbody tr').count()).toBe(system.queues.length);
    expect(await page.locator('#stat-vertex .stat-value').textContent()).toBe(fmt(system.vertex_jobs_in_flight));
    expect(await page.locator('#stat-dead .stat-value').textContent()).toBe(fmt(system.dead_jobs));
    await page.getByRole('heading', { name: /^Dead jobs/ }).waitFor();
    await shot(page, 'admin-system');
  }, 60_000);

  it('is readable on a phone: no page scrolls sideways at 375 px', async () => {
    const user = await svc.createUser(1_000_000);
    const batch = await uploadBatch(svc, user.apiKey, [
      {
        custom_id: 'a-rather-long-custom-id-for-a-narrow-screen',
        body: { model: MODEL, prompt: 'A narrow cat', n: 3 },
      },
    ]);
    const id = batch.body.id;
    await waitForBatch(svc, user.apiKey, id);

    const page = await newPage({ width: 375, height: 800 });
    const noSideScroll = async (what: string) => {
      const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      expect({ what, scrollWidth: widths[0] }).toEqual({ what, scrollWidth: widths[1] });
    };
    await page.goto(svc.url);
    await page.getByLabel('API key', { exact: true }).waitFor();
    await noSideScroll('sign-in');
    await signInUser(page, user.apiKey);
    await batchRow(page, id);
    await noSideScroll('batches');
    await shot(page, 'phone-batches');
    await page.getByRole('link', { name: id }).click();
    await settle(
      () => page.locator('.gallery img').count(),
      (v) => v === 3,
    );
    await allImagesLoaded(page, '.gallery img');
    await noSideScroll('batch');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await signInAdmin(page);
    await noSideScroll('users');
    await page.goto(`${svc.url}/#/admin/users/${user.id}`);
    await page.locator('#ledger-invariant').waitFor();
    await noSideScroll('user');
    await page.getByRole('link', { name: 'Models' }).click();
    await page.getByRole('form', { name: MODEL, exact: true }).waitFor();
    await noSideScroll('models');
    await page.getByRole('link', { name: 'System' }).click();
    await page.locator('#queues').waitFor();
    await noSideScroll('system');
  }, 60_000);
});

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

/** Reads `read` until `ok` says so (the page polls and renders on its own time). */
async function settle<T>(read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  let last: T | undefined;
  try {
    return await eventually(async () => {
      last = await read();
      return ok(last) ? last : null;
    }, timeoutMs);
  } catch {
    throw new Error(`the page did not get there; last seen: ${JSON.stringify(last)}`);
  }
}

/** Waits until every matching <img> has loaded a real picture (naturalWidth > 0). */
async function allImagesLoaded(page: Page, selector: string) {
  await page.waitForFunction(
    (sel) => {
      const imgs: any[] = [...document.querySelectorAll(sel)];
      // Lazy images load once near the viewport: bring each one there.
      for (const img of imgs) if (!img.complete) img.scrollIntoView({ block: 'nearest' });
      return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    },
    selector,
    { polling: 200, timeout: 30_000 },
  );
}
