import { type NextFunction, type Request, type RequestHandler, type Response, Router } from 'express';

/**
 * The routes of several routers, by the first segment of the path. Express tries every route of
 * every router mounted before the one that answers, matching each pattern in turn: forty-odd
 * patterns for a request to `/v1/models`. Here, at start, each first segment gets one router
 * holding only the routes that can answer it (every route whose pattern begins with that
 * segment, in their order), so a request walks those alone and the answer is the same.
 *
 * A router with a layer that is not a route (a `use`), or a route whose first segment is not a
 * plain word (a parameter, a pattern), is kept whole and tried for every path, in its place.
 * None of these routers may leave with `next('router')`: merged, that would skip the rest.
 */
export function routeByFirstSegment(routers: Router[]): RequestHandler {
  const reach = routers.map(firstSegments);
  const segments = new Set(reach.flatMap((s) => (s === null ? [] : [...s.keys()])));
  const merged = (segment: string | null) => {
    const router = Router();
    routers.forEach((r, i) => {
      const layers = reach[i];
      if (layers === null) router.use(r);
      else router.stack.push(...(segment === null ? [] : (layers.get(segment) ?? [])));
    });
    return router;
  };
  const bySegment = new Map([...segments].map((segment) => [segment, merged(segment)]));
  const anywhere = merged(null);
  const dispatch = (req: Request, res: Response, next: NextFunction) =>
    (bySegment.get(firstSegment(req.path).toLowerCase()) ?? anywhere)(req, res, next);
  // Its routers in a `stack`, as a Router keeps its layers: what walks an app's routes (the
  // OpenAPI document's test) still finds them.
  return Object.assign(dispatch, { stack: routers.map((router) => ({ handle: router })) });
}

/**
 * The app's parts by the first segment of the path (any case, as routing matches): a request to
 * `/v1/…` enters the API's router straight away instead of trying the operators' endpoints, the
 * dashboard, the docs, the links and the admin API first (each a router of its own to walk, and
 * a URL parsed again at each mount). `rest` takes every other path. Each part must answer only
 * paths that begin with its segment, and `rest` none of those: then the answer is the same.
 */
export function routeByMount(parts: Record<string, Router>, rest: Router): RequestHandler {
  const bySegment = new Map(Object.entries(parts).map(([segment, router]) => [segment.toLowerCase(), router]));
  const dispatch = (req: Request, res: Response, next: NextFunction) =>
    (bySegment.get(firstSegment(req.path).toLowerCase()) ?? rest)(req, res, next);
  return Object.assign(dispatch, { stack: [...bySegment.values(), rest].map((router) => ({ handle: router })) });
}

/**
 * Middleware run in turn as one: what `router.use(path, a, b, c)` does, without a layer each
 * (each layer matches the mount path again and rewrites the URL in and out). A handler's throw
 * or rejected promise goes to `next` as an error, as Express does with its layers.
 */
export function chain(handlers: RequestHandler[]): RequestHandler {
  const run = (req: Request, res: Response, done: NextFunction) => {
    let i = 0;
    // As a router steps through its layers: 'route' (and no error) goes on, 'router' and errors leave.
    const step = (err?: unknown) => {
      if (err && err !== 'route') return done(err);
      if (i === handlers.length) return done();
      const handler = handlers[i++];
      try {
        const result: unknown = handler(req, res, step);
        if (result instanceof Promise) result.catch((e) => done(e || new Error('Rejected promise')));
      } catch (e) {
        done(e);
      }
    };
    step();
  };
  // Its handlers in a `stack`, as for routeByFirstSegment.
  return Object.assign(run, { stack: handlers.map((handler) => ({ handle: handler })) });
}

/** The layers of each plain first segment of a router's routes, or null when it must be tried for any path. */
function firstSegments(router: Router): Map<string, Router['stack']> | null {
  const found = new Map<string, Router['stack']>();
  for (const layer of router.stack) {
    const path = (layer.route as { path?: unknown } | undefined)?.path;
    if (typeof path !== 'string') return null;
    const segment = firstSegment(path).toLowerCase();
    if (!/^[a-z0-9_.-]+$/.test(segment)) return null;
    found.set(segment, [...(found.get(segment) ?? []), layer]);
  }
  return found;
}

function firstSegment(path: string): string {
  const end = path.indexOf('/', 1);
  return end === -1 ? path.slice(1) : path.slice(1, end);
}
