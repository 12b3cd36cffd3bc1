import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type express from 'express';
import { createApp } from '../../src/http/app.ts';
import { buildOpenApi } from '../../src/http/openapi.ts';
import { call, form } from '../support/http.ts';
import { checker } from '../support/openapi-check.ts';
import { ADMIN_TOKEN, startTestService, type TestService } from '../support/service.ts';

/**
 * `GET /openapi.json` and `GET /docs`, and the document against the app: every route the app
 * registers is documented and every documented operation is a route of the app. (That every
 * answer matches the document is checked in every test: test/support/openapi-check.ts.)
 */

/** Routes that are not the API: the dashboard's page and files. */
const NOT_API = (path: string) => path === '/' || path.startsWith('/dashboard/');

let svc: TestService;
let key: string;

beforeAll(async () => {
  svc = await startTestService();
  ({ apiKey: key } = await svc.createUser(1000));
});

afterAll(async () => {
  await svc?.stop();
});

/** `:id` and `*key` (express) as `{id}` and `{key}` (OpenAPI). */
const template = (path: string) => path.replace(/[:*](\w+)/g, '{$1}').replace(/(.)\/$/, '$1');

/** Every route of the app, as `METHOD /path/{param}`, read from its router stack. */
function appRoutes(app: express.Express): string[] {
  const routes: string[] = [];
  const walk = (stack: any[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        const paths: string[] = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
        for (const path of paths) {
          for (const [method, on] of Object.entries(layer.route.methods as Record<string, boolean>)) {
            if (on) routes.push(`${method.toUpperCase()} ${template(prefix + path)}`);
          }
        }
      } else if (Array.isArray(layer.handle?.stack)) {
        const mount = typeof layer.rawPath === 'string' && layer.rawPath !== '/' ? layer.rawPath : '';
        walk(layer.handle.stack, prefix + mount);
      }
    }
  };
  walk((app as any).router.stack, '');
  return [...new Set(routes)].sort();
}

/** Every documented operation, as `METHOD /path/{param}`; HEAD is left out where GET is there (express answers it). */
function documentedRoutes(): string[] {
  const doc = buildOpenApi({ publicUrl: null }) as any;
  const routes: string[] = [];
  for (const [path, item] of Object.entries(doc.paths) as Array<[string, Record<string, unknown>]>) {
    for (const method of Object.keys(item)) {
      if (method === 'head' && 'get' in item) continue;
      routes.push(`${method.toUpperCase()} ${path}`);
    }
  }
  return routes.sort();
}

/** The status of a plain GET with exactly these headers. */
function statusOf(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      })
      .on('error', reject);
  });
}

describe('GET /openapi.json', () => {
  it('serves the document, with the relative server when PUBLIC_URL is unset', async () => {
    const a = await call(`${svc.url}/openapi.json`);
    expect(a.status).toBe(200);
    expect(a.headers.get('content-type')).toMatch(/^application\/json/);
    expect(a.body).toEqual(JSON.parse(JSON.stringify(buildOpenApi({ publicUrl: null }))));
    expect(a.body.openapi).toBe('3.1.0');
    expect(a.body.servers).toEqual([{ url: '/' }]);
  });

  it('needs no credentials and is the same for everyone', async () => {
    const anonymous = await call(`${svc.url}/openapi.json`);
    const withKey = await call(`${svc.url}/openapi.json`, { key });
    expect(withKey.text).toBe(anonymous.text);
  });

  it('is revalidated by its ETag (a 304 when unchanged), while API answers carry none', async () => {
    for (const page of ['/openapi.json', '/docs']) {
      const first = await call(`${svc.url}${page}`);
      const tag = first.headers.get('etag');
      expect(tag).toMatch(/^"[\w-]{27}"$/);
      // Not fetch: a conditional fetch adds `Cache-Control: no-cache`, which a server must not answer with a 304.
      expect(await statusOf(`${svc.url}${page}`, { 'if-none-match': tag! })).toBe(304);
      expect(await statusOf(`${svc.url}${page}`, { 'if-none-match': '"other"' })).toBe(200);
    }
    const models = await call(`${svc.url}/v1/models`, { key });
    expect(models.status).toBe(200);
    expect(models.headers.get('etag')).toBeNull();
  });
});

describe('GET /docs', () => {
  it('is an HTML page that loads Swagger UI from this server, under a strict CSP', async () => {
    const a = await call(`${svc.url}/docs`);
    expect(a.status).toBe(200);
    expect(a.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = a.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toMatch(/unsafe-eval|https?:/);
    const assets = [...a.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    expect(assets).toEqual(
      expect.arrayContaining(['/docs/swagger-ui.css', '/docs/swagger-ui-bundle.js', '/docs/swagger-init.js']),
    );
    expect(a.text).not.toMatch(/<script>|<script [^>]*>[^<]/);
    for (const asset of assets) {
      const r = await fetch(svc.url + asset);
      expect([asset, r.status]).toEqual([asset, 200]);
      expect((await r.arrayBuffer()).byteLength).toBeGreaterThan(100);
    }
    const init = await call(`${svc.url}/docs/swagger-init.js`);
    expect(init.text).toContain("url: '/openapi.json'");
  });

  it('serves only the files the page needs', async () => {
    for (const path of [
      '/docs/index.html',
      '/docs/swagger-initializer.js',
      '/docs/package.json',
      '/docs/../package.json',
    ]) {
      const a = await call(svc.url + path);
      expect([path, a.status, a.body?.error?.code]).toEqual([path, 404, 'route_not_found']);
    }
  });
});

describe('the document and the app', () => {
  it('document exactly the routes the app has', () => {
    const app = appRoutes(createApp(svc.runtime.services)).filter((r) => !NOT_API(r.split(' ')[1]));
    const documented = documentedRoutes();
    expect(app.filter((r) => !documented.includes(r))).toEqual([]);
    expect(documented.filter((r) => !app.includes(r))).toEqual([]);
    expect(app.length).toBeGreaterThan(40);
  });

  it('every documented operation is answered by its route (never route_not_found)', async () => {
    const doc = checker().document as any;
    let probed = 0;
    for (const [path, item] of Object.entries(doc.paths) as Array<[string, Record<string, any>]>) {
      for (const [method, op] of Object.entries(item)) {
        // HEAD has no body to tell a route's answer from route_not_found's.
        if (method === 'head') continue;
        // Made-up ids: ones that exist nowhere, so nothing is changed.
        const url = path.replace(/\{(\w+)\}/g, (_m, name: string) => {
          const param = op.parameters.find((p: any) => p.name === name);
          if (param['x-slashes']) return 'users/1/probe.png';
          return param.schema.type === 'integer' ? '999999' : 'probe';
        });
        const security = op.security[0] ? Object.keys(op.security[0])[0] : null;
        const headers: Record<string, string> = {};
        if (security === 'apiKey') headers.authorization = `Bearer ${key}`;
        if (security === 'adminToken') headers.authorization = `Bearer ${ADMIN_TOKEN}`;
        let body: string | FormData | undefined;
        if (op.requestBody?.content['application/json']) {
          headers['content-type'] = 'application/json';
          body = '{}';
        } else if (op.requestBody?.content['multipart/form-data']) body = form([['purpose', 'probe']]);
        const a = await call(svc.url + url, { method: method.toUpperCase(), headers, body });
        expect([method, url, a.body?.error?.code ?? a.body?.code]).not.toEqual([method, url, 'route_not_found']);
        expect([method, url, a.status]).not.toEqual([method, url, 401]);
        probed++;
      }
    }
    expect(probed).toBe(documentedRoutes().length);
  });
});
