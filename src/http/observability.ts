import { randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { pinoHttp } from 'pino-http';
import { ApiError } from '../errors/api-error.ts';
import { followLevel, log } from '../logger.ts';
import { type Metrics, UNMATCHED_ROUTE } from '../metrics.ts';
import { bearer } from './middleware.ts';

/** A request id a client may choose: short, and nothing that could break a log line or a header. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:+=/@-]{1,128}$/;

/** Operators' endpoints, asked every few seconds: their access lines are debug, not info. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

type ObservedRequest = IncomingMessage & { originalUrl?: string; userId?: number; [ROUTE]?: string };
const ROUTE = Symbol('route pattern');

/**
 * Access logs: one line per answered request (`request completed`, with `reqId`, method, url,
 * status, `responseTime` in ms, and `userId` once authenticated). Every request gets an id: the
 * client's `X-Request-Id` when it is sane, else a new UUID; it is sent back as `X-Request-Id` on
 * every answer, and `req.log` carries it into what the request's handlers log.
 */
export function requestLogging(): RequestHandler {
  const middleware = pinoHttp({
    logger: log,
    quietReqLogger: true, // req.log adds `reqId` only; the access line has the rest
    genReqId(req, res) {
      const given = req.headers['x-request-id'];
      const id = typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
      res.setHeader('X-Request-Id', id);
      return id;
    },
    customLogLevel: (req) => (QUIET_PATHS.has(pathOf(req)) ? 'debug' : 'info'),
    customSuccessMessage: () => 'request completed',
    customErrorMessage: () => 'request completed',
    customSuccessObject: (req, res, fields: Record<string, unknown>) => ({ ...fields, ...answered(req, res) }),
    // A 5xx line needs no made-up error with a stack: the error handler logs real failures.
    customErrorObject: (req, res, _err, fields: Record<string, unknown>) => ({
      ...fields,
      err: undefined,
      ...answered(req, res),
    }),
    serializers: {
      req: (req: { method: string; url: string; remoteAddress?: string; raw: ObservedRequest }) => ({
        method: req.method,
        url: withoutSecrets(req.raw.originalUrl ?? req.url),
        remoteAddress: req.remoteAddress,
      }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
  });
  followLevel(middleware.logger);
  return middleware as unknown as RequestHandler;
}

/** What the access line adds once the request is over: who asked, which route answered, a hang-up. */
function answered(req: ObservedRequest, res: ServerResponse) {
  return {
    ...(req.userId === undefined ? {} : { userId: req.userId }),
    ...(req[ROUTE] ? { route: req[ROUTE] } : {}),
    ...(res.writableFinished ? {} : { aborted: true }),
  };
}

/** A signed link's signature is its credential: it stays out of the logs. */
function withoutSecrets(url: string): string {
  return url.replace(/([?&]signature=)[^&]*/g, '$1[redacted]');
}

function pathOf(req: IncomingMessage): string {
  const url = (req as ObservedRequest).originalUrl ?? req.url ?? '';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/**
 * `http_request_duration_seconds{method, route, status}`. The route is the pattern that
 * answered (`/v1/batches/:id`), never the raw path, so ids do not make a series each. Express
 * sets `req.route` when a route matches, while `req.baseUrl` still names the router's mount
 * point (by the time the answer is sent, an error may have left the router and reset it): the
 * pattern is recorded at that moment.
 */
export function requestMetrics(metrics: Metrics): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const observed = req as unknown as ObservedRequest;
    let route: unknown;
    Object.defineProperty(req, 'route', {
      configurable: true,
      enumerable: true,
      get: () => route,
      set(value: { path?: unknown } | undefined) {
        route = value;
        if (typeof value?.path === 'string') observed[ROUTE] = `${req.baseUrl}${value.path}`;
      },
    });
    const timer = metrics.httpDuration.startTimer();
    res.once('close', () => {
      timer({ method: req.method, route: observed[ROUTE] ?? UNMATCHED_ROUTE, status: String(res.statusCode) });
    });
    next();
  };
}

/**
 * `GET /metrics`: Prometheus' text format. With METRICS_TOKEN set it answers only
 * `Authorization: Bearer <METRICS_TOKEN>` (else 401 in the usual error envelope).
 */
export function metricsEndpoint(metrics: Metrics, token: string | null): RequestHandler {
  const expected = token === null ? null : Buffer.from(token);
  return async (req: Request, res: Response) => {
    if (expected) {
      const given = Buffer.from(bearer(req) ?? '');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw new ApiError('invalid_metrics_token', 'Send Authorization: Bearer <METRICS_TOKEN>.');
      }
    }
    const body = await metrics.render();
    res.set('Content-Type', metrics.contentType).set('Cache-Control', 'no-store').send(body);
  };
}
