import { Router } from 'express';
import type { Services } from '../../services.ts';
import { modelView } from '../views.ts';

export function modelRoutes(s: Services): Router {
  const r = Router();
  r.get('/models', async (_req, res) => {
    res.json({ object: 'list', data: (await s.models(true)).map(modelView) });
  });
  return r;
}
