import { randomUUID } from 'node:crypto';
import type { Express, NextFunction, Request, RequestHandler, Response } from 'express';
import { ApiError } from '../errors/api-error.ts';
import { log } from '../logger.ts';
import { type Metrics, UNMATCHED_ROUTE } from '../metrics.ts';
import { bearer, sameSecret } from './middleware.ts';

/** A request id a client may choose: short, and nothing that could break a log line or a header. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:+=/@-]{1,128}$/;

/** Operators' endpoints, asked every few seconds: their access lines are debug, not info. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

const ROUTE = Symbol('route pattern');
const MATCHED = Symbol('matched route');

type ObservedRequest = Request & {
  id?: string;
  userId?: number;
  [ROUTE]?: string;
  [MATCHED]?: unknown;
};

/**
 * Access logs and HTTP timings, in one middleware that goes first, with one listener per request.
 *
 * Every request gets an id: the client's `X-Request-Id` when it is sane, else a new UUID; it is
 * sent back as `X-Request-Id` on every answer, and requestLog(req) (src/logger.ts) carries it
 * into what the request's handlers log. When the answer is over (sent, or the client hung up) it writes one
 * access line (`request completed`, with `reqId`, `req` {method, url, remoteAddress}, `res`
 * {statusCode}, `responseTime` in ms, `userId` once authenticated, the `route` pattern, and
 * `aborted` on a hang-up) and observes `http_request_duration_seconds{method, route, status}`.
 *
 * Written on pino directly rather than through pino-http, which for every request makes two child
 * loggers and serializes the request into one of them before any handler runs: that was a third
 * of the HTTP stack's own cost on a read (see the README's How it works).
 */
export function requestObservability(app: Express, metrics: Metrics): RequestHandler {
  recordRoutePatterns(app);
  const timings = new Map<string, { observe(seconds: number): void }>();
  return (req: Request, res: Response, next: NextFunction) => {
    const started = performance.now();
    const observed = req as ObservedRequest;
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
    observed.id = id;
    res.setHeader('X-Request-Id', id);
    res.once('close', () => {
      const ms = performance.now() - started;
      const route = observed[ROUTE] ?? UNMATCHED_ROUTE;
      const status = res.statusCode;
      // The labelled child, found by one string: prom-client would sort and join the labels each time.
      const key = `${req.method} ${status} ${route}`;
      let timing = timings.get(key);
      if (timing === undefined) {
        timing = metrics.httpDuration.labels({ method: req.method, route, status: String(status) });
        timings.set(key, timing);
      }
      timing.observe(ms / 1000);
      const level = QUIET_PATHS.has(pathOf(req.originalUrl)) ? 'debug' : 'info';
      if (!log.isLevelEnabled(level)) return;
      log[level](
        {
          reqId: id,
          req: { method: req.method, url: withoutSecrets(req.originalUrl), remoteAddress: req.socket.remoteAddress },
          res: { statusCode: status },
          responseTime: Math.round(ms),
          ...(observed.userId === undefined ? {} : { userId: observed.userId }),
          ...(observed[ROUTE] ? { route: observed[ROUTE] } : {}),
          ...(res.writableFinished ? {} : { aborted: true }),
        },
        'request completed',
      );
    });
    next();
  };
}

/**
 * The route label is the pattern that answered (`/v1/batches/:id`), never the raw path, so ids do
 * not make a series each. The router sets `req.route` when a route matches, while `req.baseUrl`
 * still names the router's mount point (by the time the answer is sent, an error may have left
 * the router and reset it): the pattern is recorded at that moment, by an accessor defined once on
 * this app's request prototype (not on every request).
 */
function recordRoutePatterns(app: Express): void {
  Object.defineProperty(app.request, 'route', {
    configurable: true,
    get(this: ObservedRequest) {
      return this[MATCHED];
    },
    set(this: ObservedRequest, value: { path?: unknown } | undefined) {
      this[MATCHED] = value;
      if (typeof value?.path === 'string') this[ROUTE] = `${this.baseUrl}${value.path}`;
    },
  });
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/** A signed link's signature is its credential: it stays out of the logs. */
function withoutSecrets(url: string): string {
  return url.includes('signature=') ? url.replace(/([?&]signature=)[^&]*/g, '$1[redacted]') : url;
}

/**
 * `GET /metrics`: Prometheus' text format. With METRICS_TOKEN set it answers only
 * `Authorization: Bearer <METRICS_TOKEN>` (else 401 in the usual error envelope).
 */
export function metricsEndpoint(metrics: Metrics, token: string | null): RequestHandler {
  return async (req: Request, res: Response) => {
    if (token !== null && !sameSecret(bearer(req) ?? '', token)) {
      throw new ApiError('invalid_metrics_token', 'Send Authorization: Bearer <METRICS_TOKEN>.');
    }
    const body = await metrics.render();
    res.set('Content-Type', metrics.contentType).set('Cache-Control', 'no-store').send(body);
  };
}
