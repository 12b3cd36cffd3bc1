import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response, Router } from 'express';
import type { Services } from '../../services.ts';
import { fixedETag } from '../middleware.ts';
import { buildOpenApi } from '../openapi.ts';

/** Our page and the script that starts Swagger UI on it. */
const PAGE_DIR = fileURLToPath(new URL('../../api-docs/', import.meta.url));
/**
 * The files under `/docs/`: our start script, and the files of the swagger-ui-dist package the
 * page loads (nothing else of either directory is served).
 */
const PAGE_FILES = new Set([
  'swagger-init.js',
  'swagger-ui.css',
  'swagger-ui-bundle.js',
  'favicon-32x32.png',
  'favicon-16x16.png',
]);

/**
 * `GET /openapi.json`, the API's OpenAPI document, and `GET /docs`, the reference page that
 * renders it (Swagger UI, from the installed package: no CDN, works offline). Both public.
 */
export function docsRoutes(s: Services): Router {
  const publicUrl = s.config.delivery.publicUrl;
  const document = buildOpenApi({ publicUrl });
  const page = readFileSync(path.join(PAGE_DIR, 'index.html'));
  const swaggerDir = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  // Scripts and styles from this origin only (Swagger UI sets inline styles); "try it out" may
  // call PUBLIC_URL, the server the document names.
  const csp = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    `connect-src 'self'${publicUrl ? ` ${new URL(publicUrl).origin}` : ''}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  const secure = (_req: Request, res: Response, next: NextFunction) => {
    res.set({ 'Content-Security-Policy': csp, 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer' });
    next();
  };
  const assets = { index: false, redirect: false, setHeaders: (res: Response) => res.set('Cache-Control', 'no-cache') };

  const r = Router();
  const documentText = JSON.stringify(document);
  const documentTag = fixedETag(documentText);
  const pageTag = fixedETag(page);
  r.get('/openapi.json', (_req, res) => {
    res.set({ 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-cache', ETag: documentTag });
    res.send(documentText);
  });
  r.get('/docs', secure, (_req, res) => {
    res.set({ 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache', ETag: pageTag }).send(page);
  });
  r.use(
    '/docs',
    (req, _res, next) => (PAGE_FILES.has(req.path.slice(1)) ? next() : next('router')),
    secure,
    express.static(PAGE_DIR, assets),
    express.static(swaggerDir, assets),
  );
  return r;
}
