import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response, Router } from 'express';
import type { Services } from '../../services.ts';
import { fixedETag } from '../middleware.ts';

/** The dashboard's own files: plain ES modules, served as they are (there is no build step). */
const DASHBOARD_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));

/**
 * The browser builds of preact, its hooks and htm, from the installed packages. The import map
 * in index.html names them by these file names, so preact and its hooks resolve to one copy of
 * preact (two copies would each keep their own hook state).
 */
function vendorFiles(): Map<string, string> {
  const require = createRequire(import.meta.url);
  const files = new Map<string, string>();
  // htm's package maps only its CommonJS build for require(); its ES module sits beside it.
  const htm = path.join(path.dirname(require.resolve('htm')), 'htm.mjs');
  for (const file of [require.resolve('preact'), require.resolve('preact/hooks'), htm]) {
    files.set(path.basename(file), file);
    // Source maps are fetched only by open developer tools; served so those find them.
    const map = `${file}.map`;
    if (existsSync(map)) files.set(path.basename(map), map);
  }
  return files;
}

const YEAR_SECONDS = 365 * 24 * 3600;

/**
 * The dashboard: `GET /` is its page, `/dashboard/…` its modules, styles and vendor files. It
 * is a plain client of the public API (API key) and the admin API (admin token): it reaches
 * nothing the HTTP API does not. Hash routing (`#/batches/…`) keeps its state out of requests,
 * and the key lives in the tab's session storage, sent only in the Authorization header.
 */
export function dashboardRoutes(s: Services): Router {
  const vendor = vendorFiles();
  // Vendor URLs carry a digest of their contents: cached for a year, and new ones after an upgrade.
  const digest = createHash('sha256');
  for (const file of vendor.values()) digest.update(readFileSync(file));
  const vendorTag = digest.digest('hex').slice(0, 12);

  const page = readFileSync(path.join(DASHBOARD_DIR, 'index.html'), 'utf8').replaceAll('__VENDOR__', vendorTag);
  const importMap = /<script type="importmap">([\s\S]*?)<\/script>/.exec(page)?.[1];
  if (importMap === undefined) throw new Error('dashboard/index.html has no import map');
  const csp = contentSecurityPolicy(importMap, linkOrigin(s));

  const r = Router();
  const secure = (_req: Request, res: Response, next: NextFunction) => {
    res.set({
      'Content-Security-Policy': csp,
      'X-Content-Type-Options': 'nosniff',
      // Signed image links are credentials: opening one must not hand it to another site.
      'Referrer-Policy': 'no-referrer',
      'X-Frame-Options': 'DENY',
    });
    next();
  };
  const pageTag = fixedETag(page);
  r.get('/', secure, (_req, res) => {
    res.set({ 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache', ETag: pageTag }).send(page);
  });
  r.get('/dashboard/vendor/:tag/:file', secure, (req, res, next) => {
    const { tag, file: name } = req.params as { tag: string; file: string };
    const file = vendor.get(name);
    if (tag !== vendorTag || file === undefined) return next();
    res.sendFile(file, { headers: { 'Cache-Control': `public, max-age=${YEAR_SECONDS}, immutable` } });
  });
  r.use(
    '/dashboard',
    secure,
    // index.html is a template, answered at `/` only.
    (req, _res, next) => (req.path === '/index.html' ? next('router') : next()),
    express.static(DASHBOARD_DIR, {
      index: false,
      redirect: false,
      fallthrough: true,
      // Revalidated on every load (ETag): an upgrade shows at once, an unchanged file costs a 304.
      setHeaders: (res) => res.setHeader('Cache-Control', 'no-cache'),
    }),
  );
  return r;
}

/**
 * No inline script but the import map (allowed by its digest), no other origin but where signed
 * image links point when that is another address than the page's own.
 */
function contentSecurityPolicy(importMap: string, links: string | null): string {
  const mapHash = createHash('sha256').update(importMap).digest('base64');
  return [
    "default-src 'none'",
    `script-src 'self' 'sha256-${mapHash}'`,
    "style-src 'self'",
    `img-src 'self' data: blob:${links ? ` ${links}` : ''}`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** The origin of signed links (PUBLIC_URL, else HOST:PORT), when it is a fixed, reachable one. */
function linkOrigin(s: Services): string | null {
  const { publicUrl } = s.config.delivery;
  if (publicUrl) return new URL(publicUrl).origin;
  const { host, port } = s.config;
  if (!port || host === '0.0.0.0' || host === '::') return null;
  return new URL(`http://${host.includes(':') ? `[${host}]` : host}:${port}`).origin;
}
