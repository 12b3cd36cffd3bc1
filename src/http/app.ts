import express from 'express';
import type { Services } from '../services.ts';
import { apiKeyAuth, errorHandler, notFoundRoute } from './middleware.ts';
import { adminRoutes } from './routes/admin.ts';
import { fileRoutes } from './routes/files.ts';
import { imageBatchRoutes } from './routes/image-batches.ts';
import { imageFileRoutes } from './routes/image-files.ts';
import { modelRoutes } from './routes/models.ts';
import { privacyRoutes } from './routes/privacy.ts';

export function createApp(s: Services): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.get('/healthz', (_req, res) => void res.json({ ok: true }));

  // Bodies are parsed only after authentication: an anonymous caller learns nothing else.
  const json = express.json({ limit: '256kb' });
  app.use('/admin', adminRoutes(s, json));
  const auth = apiKeyAuth((key) => s.accounts.authenticate(key));
  app.use('/api', auth, json, privacyRoutes(s));
  app.use('/v1', auth, json, imageFileRoutes(s), imageBatchRoutes(s), fileRoutes(s), modelRoutes(s));

  app.use(notFoundRoute);
  app.use(errorHandler);
  return app;
}
