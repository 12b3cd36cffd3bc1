import express, { type NextFunction, type Request, type RequestHandler, type Response, Router } from 'express';
import type { Services } from '../services.ts';
import { apiKeyAuth, errorHandler, notFoundRoute, rejectNulCharacters } from './middleware.ts';
import { metricsEndpoint, requestObservability } from './observability.ts';
import { parseQueryOnce } from './query.ts';
import { chain, routeByFirstSegment, routeByMount } from './route-by-segment.ts';
import { adminRoutes } from './routes/admin.ts';
import { batchRoutes } from './routes/batches.ts';
import { dashboardRoutes } from './routes/dashboard.ts';
import { docsRoutes } from './routes/docs.ts';
import { fileRoutes } from './routes/files.ts';
import { imageFileRoutes } from './routes/image-files.ts';
import { imageRoutes } from './routes/images.ts';
import { jobRoutes } from './routes/jobs.ts';
import { linkRoutes } from './routes/links.ts';
import { modelRoutes } from './routes/models.ts';
import { privacyRoutes } from './routes/privacy.ts';
import { TASK_SUBMIT_PATH, taskEnvelope, taskRoutes } from './routes/tasks.ts';
import { webhookRoutes } from './routes/webhooks.ts';

/** Largest JSON body (the task submit route allows one inline image more). */
const JSON_BODY_LIMIT = 256 * 1024;
/** The task submit route's path under /v1, as routing matches it: any case, a trailing slash or not. */
const TASK_SUBMIT = new RegExp(`^${TASK_SUBMIT_PATH}/?$`, 'i');

export function createApp(s: Services): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  parseQueryOnce(app);
  // No ETag on JSON answers: they are read once and never asked for conditionally (OpenAI's API
  // sends none either), and hashing every body costs a read its time. Static files keep theirs.
  app.set('etag', false);
  // First of all: every request gets its id (sent back on every answer), an access log line and its timing.
  app.use(requestObservability(app, s.metrics));

  // Bodies are parsed only after authentication: an anonymous caller learns nothing else.
  const json: RequestHandler[] = [express.json({ limit: JSON_BODY_LIMIT }), rejectNulCharacters];
  // A task may carry its reference images inline as data: URLs: its body may hold one image of
  // VISION_MAX_BYTES in base64 (bigger or more go by URL or file id). Parsed first, so the
  // general parser leaves it be.
  const taskJson = express.json({ limit: Math.ceil((s.config.limits.visionMaxBytes * 4) / 3) + JSON_BODY_LIMIT });
  const auth = apiKeyAuth((key) => s.accounts.authenticate(key));

  const v1 = Router();
  // The task API answers its errors (authentication's too) in seed 003's envelope.
  v1.use('/v1/aiart', taskEnvelope);
  v1.use(
    '/v1',
    chain([
      auth,
      (req: Request, res: Response, next: NextFunction) =>
        TASK_SUBMIT.test(req.path) ? taskJson(req, res, next) : next(),
      ...json,
      routeByFirstSegment([
        imageFileRoutes(s),
        fileRoutes(s),
        batchRoutes(s),
        webhookRoutes(s),
        modelRoutes(s),
        imageRoutes(s),
        jobRoutes(s),
        taskRoutes(s),
      ]),
    ]),
  );
  const api = Router().use('/api', chain([auth, ...json, privacyRoutes(s)]));
  const admin = Router().use('/admin', adminRoutes(s, json));
  // Signed links (url-mode images) carry their own credential: no API key, no body.
  const links = Router().use('/links', linkRoutes(s));
  // Public: the operators' endpoints, the dashboard's page and files (it signs in to the API like
  // any other client), and the OpenAPI document with the reference page that renders it.
  const site = Router().use(operationsRoutes(s), dashboardRoutes(s), docsRoutes(s));
  app.use(routeByMount({ v1, api, admin, links }, site));

  app.use(notFoundRoute);
  app.use(errorHandler(s.database));
  return app;
}

/**
 * What a ROLE=worker process serves on its PORT: the operators' endpoints alone, so that its
 * health and metrics (pipeline steps, Vertex calls) can be watched too.
 */
export function createOperationsApp(s: Services): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestObservability(app, s.metrics), operationsRoutes(s));
  app.use(notFoundRoute);
  app.use(errorHandler(s.database));
  return app;
}

function operationsRoutes(s: Services): Router {
  const r = Router();
  // Liveness: the process answers. Readiness: it can do work (Postgres and the job queue answer).
  r.get('/healthz', (_req, res) => void res.json({ ok: true }));
  r.get('/readyz', async (_req, res) => {
    const checks = await readiness(s);
    res.status(checks.database && checks.queue ? 200 : 503).json({ ok: checks.database && checks.queue, ...checks });
  });
  // Prometheus; behind METRICS_TOKEN when that is set.
  r.get('/metrics', metricsEndpoint(s.metrics, s.config.metricsToken));
  return r;
}

const READY_TIMEOUT_MS = 2000;

/** Each check answers within READY_TIMEOUT_MS, so a hung database makes readiness fail, not hang. */
async function readiness(s: Services): Promise<{ database: boolean; queue: boolean }> {
  const within = (check: Promise<unknown>) =>
    Promise.race([
      check.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(resolve, READY_TIMEOUT_MS, false).unref()),
    ]).catch(() => false);
  const [database, queue] = await Promise.all([within(s.pool.query('SELECT 1')), within(s.queue.ping())]);
  return { database, queue };
}
