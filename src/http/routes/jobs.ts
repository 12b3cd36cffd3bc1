import { Router } from 'express';
import { ApiError } from '../../errors/api-error.ts';
import { IMAGE_JOB_STATUSES, type ImageJobStatus } from '../../images/image-job-queries.ts';
import type { Services } from '../../services.ts';
import { userId } from '../middleware.ts';
import { listLimit, listPage, singleQuery } from '../query.ts';
import { imageJobView } from '../views.ts';
import { publicBase } from './images.ts';

/**
 * Image jobs (seed 002): `GET /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/content` (302 to
 * a fresh signed link) and `POST /v1/jobs/{id}/cancel`. Sync requests are jobs too (their record
 * and bill); only async ones can be cancelled.
 */
export function jobRoutes(s: Services): Router {
  const r = Router();
  const view = (req: Parameters<typeof publicBase>[1], job: Awaited<ReturnType<typeof s.imageJobs.get>>) =>
    imageJobView(job, { base: publicBase(s, req), images: s.imageJobs.imageLinks(job) });
  r.get('/jobs', async (req, res) => {
    const status = singleQuery(req.query, 'status');
    if (status !== undefined && !(IMAGE_JOB_STATUSES as readonly string[]).includes(status)) {
      throw new ApiError('invalid_status', `status must be one of ${IMAGE_JOB_STATUSES.join(', ')}.`, 'status');
    }
    const { page, hasMore } = await s.imageJobs.list(userId(req), {
      limit: listLimit(req.query, { fallback: 20, max: 100 }),
      after: singleQuery(req.query, 'after') ?? null,
      status: (status as ImageJobStatus | undefined) ?? null,
    });
    res.json(
      listPage(
        page.map((job) => view(req, job)),
        hasMore,
      ),
    );
  });
  r.get('/jobs/:id', async (req, res) => {
    res.json(view(req, await s.imageJobs.get(userId(req), req.params.id)));
  });
  r.get('/jobs/:id/content', async (req, res) => {
    const job = await s.imageJobs.get(userId(req), req.params.id);
    const links = s.imageJobs.imageLinks(job);
    const raw = singleQuery(req.query, 'index') ?? '0';
    const index = /^\d{1,3}$/.test(raw) ? Number(raw) : -1;
    if (!links.length) {
      throw new ApiError('invalid_index', `Image job ${job.id} is ${job.status} and has no image yet.`, 'index');
    }
    if (index < 0 || index >= links.length) {
      throw new ApiError(
        'invalid_index',
        `index must be from 0 to ${links.length - 1} (got '${raw.slice(0, 10)}').`,
        'index',
      );
    }
    res.set('Cache-Control', 'no-store').redirect(302, links[index]);
  });
  r.post('/jobs/:id/cancel', async (req, res) => {
    res.json(view(req, await s.imageJobs.cancel(userId(req), req.params.id)));
  });
  return r;
}
