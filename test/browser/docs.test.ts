import fs from 'node:fs';
import { afterAll, beforeAll, expect, it } from '@jest/globals';
import { type Browser, chromium } from 'playwright-core';
import { buildOpenApi } from '../../src/http/openapi.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * `GET /docs` in a real headless Chromium (Debian's `chromium` package, or CHROMIUM_PATH): the
 * page renders every operation of the document, under its Content-Security-Policy, without a
 * console error and without a request to any other site.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];

let svc: TestService;
let browser: Browser;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`No Chromium at ${CHROMIUM}: install Debian's chromium package, or set CHROMIUM_PATH.`);
  }
  svc = await startTestService();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});

afterAll(async () => {
  await browser?.close();
  await svc?.stop();
});

it('renders every operation of the document, offline and within its CSP', async () => {
  const page = await browser.newPage();
  const problems: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('request', (r) => requests.push(r.url()));
  page.on('requestfailed', (r) => problems.push(`failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`${r.status()}: ${r.url()}`);
  });

  await page.goto(`${svc.url}/docs`);
  const doc = buildOpenApi({ publicUrl: null }) as { paths: Record<string, Record<string, unknown>> };
  const operations = Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0);
  // Swagger UI draws one block per operation once it has read /openapi.json.
  await page.waitForFunction(`document.querySelectorAll('.opblock').length === ${operations}`, undefined, {
    timeout: 20_000,
  });
  await expect(page.locator('.info .title').textContent()).resolves.toContain('Image batch gateway');
  // An operation opens with its responses, error envelopes included.
  await page.locator('#operations-Batches-getBatch').click();
  await page.locator('#operations-Batches-getBatch .responses-table').waitFor();
  const responses = await page.locator('#operations-Batches-getBatch .responses-table').textContent();
  expect(responses).toContain('batch_not_found');

  expect(problems).toEqual([]);
  const origin = new URL(svc.url).origin;
  expect(requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:'))).toEqual([]);
  expect(requests).toContain(`${origin}/openapi.json`);
  await page.close();
});
