import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import express, { type NextFunction, type Request, type Response, Router } from 'express';
import { routeByFirstSegment } from '../../src/http/route-by-segment.ts';

describe('routeByFirstSegment', () => {
  const entered: string[] = [];
  /** The routers whose routes a request was tried against, whether one matched or not. */
  const walked: string[] = [];
  let server: ReturnType<express.Express['listen']>;
  let url: string;

  /** A router whose routes note that they were tried and answer with its name (or pass with ?pass=1). */
  function named(name: string, paths: string[]): Router {
    const r = Router();
    for (const p of paths) {
      r.get(p, (req, res, next) => {
        entered.push(name);
        if (req.query.pass) return next();
        res.json({ name, route: `${req.baseUrl}${req.route.path}` });
      });
    }
    // Each route's layer notes when its pattern is tried, wherever routing put that layer.
    for (const layer of r.stack as unknown as Array<{ match(path: string): boolean }>) {
      const match = layer.match.bind(layer);
      layer.match = (path) => {
        if (walked.at(-1) !== name) walked.push(name);
        return match(path);
      };
    }
    return r;
  }

  beforeAll(async () => {
    const app = express();
    app.use(
      '/v1',
      routeByFirstSegment([
        named('files', ['/files', '/files/:id']),
        named('batches', ['/batches', '/batches/:id', '/image-batches/:id']),
        named('params', ['/:anything/deep']),
        named('models', ['/models']),
        named('more-files', ['/files/:id/content']),
      ]),
    );
    app.use((_req, res) => void res.status(404).json({ name: 'not found' }));
    app.use((err: Error, _req: Request, res: Response, _next: NextFunction) => {
      res.status(500).json({ name: err.message });
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  async function get(path: string) {
    entered.length = 0;
    walked.length = 0;
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { name: string; route?: string };
    return { status: res.status, body, entered: [...entered], walked: [...walked] };
  }

  it('answers as the routers in order would, walking only those a first segment can reach', async () => {
    expect(await get('/models')).toEqual({
      status: 200,
      body: { name: 'models', route: '/v1/models' },
      entered: ['models'],
      // Not files' or batches' routes first; the parameter router can take any path, so it is tried.
      walked: ['params', 'models'],
    });
    expect(await get('/image-batches/b1')).toMatchObject({
      body: { name: 'batches', route: '/v1/image-batches/:id' },
      entered: ['batches'],
      walked: ['batches'],
    });
    // A route passed on goes to the next router that can take the path, in order.
    expect(await get('/files/f1/content')).toMatchObject({ body: { name: 'more-files' } });
    expect(await get('/files/f1?pass=1')).toMatchObject({
      status: 404,
      entered: ['files'],
      walked: ['files', 'params', 'more-files'],
    });
  });

  it('tries a router whose route begins with a parameter for every path, in its place', async () => {
    expect(await get('/models/deep')).toMatchObject({ body: { name: 'params' }, entered: ['params'] });
    expect(await get('/unknown/deep')).toMatchObject({ body: { name: 'params' } });
    expect(await get('/unknown')).toMatchObject({ status: 404, walked: ['params'] });
  });
});
