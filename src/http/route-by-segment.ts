import type { NextFunction, Request, RequestHandler, Response, Router } from 'express';

/**
 * The routers of one mount point, each entered only by the requests whose path begins with a
 * segment one of its routes begins with. Express tries every route of every router mounted
 * before the one that answers, matching each pattern in turn: forty-odd patterns for a request
 * to `/v1/models`. Here the routers a first segment can reach are listed once, at start, in their
 * order, so a request walks its own router's routes only and the answer is the same.
 *
 * A router with a layer that is not a route (a `use`), or a route whose first segment is not a
 * plain word (a parameter, a pattern), is tried for every path.
 */
export function routeByFirstSegment(routers: Router[]): RequestHandler {
  const reach = routers.map(firstSegments);
  const segments = new Set(reach.flatMap((s) => (s === null ? [] : [...s])));
  const anywhere = routers.filter((_, i) => reach[i] === null);
  const bySegment = new Map<string, Router[]>();
  for (const segment of segments) {
    bySegment.set(
      segment,
      routers.filter((_, i) => reach[i] === null || reach[i]!.has(segment)),
    );
  }
  const dispatch = (req: Request, res: Response, next: NextFunction) => {
    const list = bySegment.get(firstSegment(req.path)) ?? anywhere;
    let i = 0;
    const step = (err?: unknown) => {
      if (err) return next(err);
      if (i === list.length) return next();
      list[i++](req, res, step);
    };
    step();
  };
  // Its routers in a `stack`, as a Router keeps its layers: what walks an app's routes (the
  // OpenAPI document's test) still finds them.
  return Object.assign(dispatch, { stack: routers.map((router) => ({ handle: router })) });
}

/** The plain first segments of a router's routes, or null when it must be tried for any path. */
function firstSegments(router: Router): Set<string> | null {
  const found = new Set<string>();
  for (const layer of router.stack as Array<{ route?: { path: unknown } }>) {
    const path = layer.route?.path;
    if (typeof path !== 'string') return null;
    const segment = firstSegment(path);
    if (!/^[A-Za-z0-9_.-]+$/.test(segment)) return null;
    found.add(segment);
  }
  return found;
}

function firstSegment(path: string): string {
  const end = path.indexOf('/', 1);
  return end === -1 ? path.slice(1) : path.slice(1, end);
}
