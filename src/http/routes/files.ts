import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import type { Services } from '../../services.ts';
import { userId } from '../middleware.ts';
import { fileView } from '../views.ts';

/** `GET /v1/files/{id}` and `GET /v1/files/{id}/content` (streamed, with Range). */
export function fileRoutes(s: Services): Router {
  const r = Router();
  r.get('/files/:id', async (req, res) => {
    res.json(fileView(await s.files.get(userId(req), req.params.id)));
  });
  r.get('/files/:id/content', async (req, res) => {
    const content = await s.files.content(userId(req), req.params.id, req.get('range'));
    res.status(content.status).set(content.headers);
    if (req.method === 'HEAD') return void res.end();
    await pipeline(content.body, res);
  });
  return r;
}
