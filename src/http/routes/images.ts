import type { Request, Response } from 'express';
import { Router } from 'express';
import multer from 'multer';
import { ApiError } from '../../errors/api-error.ts';
import { objectStoreEngine, type StoredUpload } from '../../files/upload-engine.ts';
import { newId } from '../../ids.ts';
import type { JobInput } from '../../images/image-job-queries.ts';
import type { ImageJobSpec } from '../../images/image-job-service.ts';
import { checkImageRequest } from '../../images/image-request.ts';
import type { Services } from '../../services.ts';
import { imageJobInputKey } from '../../storage/object-keys.ts';
import { referencedFileIds } from '../../vertex/translate.ts';
import { userId } from '../middleware.ts';
import { singleQuery } from '../query.ts';
import { requireMultipart } from '../uploads.ts';
import { imageJobView, imagesResponseView } from '../views.ts';

/** Reference images one edit may upload (`image` and `image[]` together). */
const MAX_EDIT_IMAGES = 16;
/** Form fields of an edit that are numbers or booleans in the JSON body they become. */
const INTEGER_FIELDS = ['n', 'output_compression', 'partial_images'];

/**
 * OpenAI's `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart): sync by
 * default, the answer holding the images; with `?async=true` a 202 image job to poll at
 * `/v1/jobs/{id}`. Both go through the one image-job service: same checks, price and settlement.
 */
export function imageRoutes(s: Services): Router {
  const r = Router();
  r.post('/images/generations', async (req, res) => {
    const mode = modeOf(req);
    const user = userId(req);
    const request = checkImageRequest(req.body, await s.models(true));
    const inputs = await s.imageJobs.visionInputs(user, referencedFileIds(request.body));
    await submit(s, req, res, {
      id: newId('img'),
      userId: user,
      mode,
      source: 'openai',
      operation: 'generation',
      request,
      inputs,
    });
  });

  const upload = multer({
    storage: objectStoreEngine({
      store: s.store,
      limitFor: () => s.config.limits.visionMaxBytes,
      precheck: async () => {},
      hash: () => false,
      // Uploaded reference images are the job's own inputs: stored under its prefix, deleted with it.
      objectKey: (req, fileId) => imageJobInputKey(userId(req), jobIdOf(req), fileId),
      imagesOnly: true,
    }),
    limits: {
      files: MAX_EDIT_IMAGES + 1,
      fields: 24,
      fieldSize: 64 * 1024,
      parts: 48,
      fileSize: s.config.limits.visionMaxBytes + 1,
    },
  }).fields([
    { name: 'image', maxCount: MAX_EDIT_IMAGES },
    { name: 'image[]', maxCount: MAX_EDIT_IMAGES },
    { name: 'mask', maxCount: 1 },
  ]);
  r.post(
    '/images/edits',
    requireMultipart,
    (req, _res, next) => {
      (req as Request & { imageJobId: string }).imageJobId = newId('img');
      next();
    },
    async (req, res, next) => {
      try {
        await new Promise<void>((resolve, reject) => upload(req, res, (err) => (err ? reject(err) : resolve())));
        next();
      } catch (err) {
        await s.imageJobs.discardUnmade(userId(req), jobIdOf(req));
        throw err;
      }
    },
    async (req, res) => {
      const user = userId(req);
      const id = jobIdOf(req);
      try {
        const mode = modeOf(req);
        const files = (req.files ?? {}) as Record<string, Array<Express.Multer.File & StoredUpload>>;
        const images = [...(files.image ?? []), ...(files['image[]'] ?? [])];
        const request = checkImageRequest(editBody(req.body), await s.models(true), {
          count: images.length,
          param: 'image',
        });
        const byId = await s.imageJobs.visionInputs(user, referencedFileIds(request.body));
        if (!images.length && !byId.length) {
          throw new ApiError(
            'missing_required_parameter',
            'Attach the image to edit in `image` (or give image_file_ids).',
            'image',
          );
        }
        const inputs: JobInput[] = [
          ...images.map((f) => ({ key: f.objectKey, mimeType: f.image!.type, role: 'image' as const })),
          ...byId,
          ...(files.mask ?? []).map((f) => ({ key: f.objectKey, mimeType: f.image!.type, role: 'mask' as const })),
        ];
        await submit(s, req, res, { id, userId: user, mode, source: 'openai', operation: 'edit', request, inputs });
      } catch (err) {
        // Refused before the job existed: its uploads go (a job that exists keeps them for its run).
        if (!res.headersSent) await s.imageJobs.discardUnmade(user, id);
        throw err;
      }
    },
  );
  return r;
}

/** Makes the job, then answers: 202 and the job (async), or the images once made (sync). */
export async function submit(s: Services, req: Request, res: Response, spec: ImageJobSpec): Promise<void> {
  const job = await s.imageJobs.create(spec);
  if (spec.mode === 'async') {
    res.status(202).json(imageJobView(job, { base: publicBase(s, req), images: [] }));
    return;
  }
  // Set first, so an error answer (502, 504, content_blocked) names the record of its refund too.
  res.set('X-Image-Job-Id', job.id);
  const result = await s.imageJobs.runSync(job, spec.request.model);
  res.json(imagesResponseView(result.job, result.images));
}

/** The absolute base of URLs in answers: PUBLIC_URL, else the address the client used. */
export const publicBase = (s: Services, req: Request) =>
  s.config.delivery.publicUrl ?? `${req.protocol}://${req.get('host')}`;

function modeOf(req: Request): 'sync' | 'async' {
  const value = singleQuery(req.query, 'async');
  if (value === undefined || value === 'false' || value === '0') return 'sync';
  if (value === 'true' || value === '1') return 'async';
  throw new ApiError('invalid_query', `async must be true or false (got '${value.slice(0, 20)}').`, 'async');
}

const jobIdOf = (req: Request) => (req as Request & { imageJobId: string }).imageJobId;

/**
 * An edit's form fields as the JSON body they stand for: numbers and booleans arrive as text.
 * `input_fidelity` (OpenAI's, with no Gemini equivalent) is accepted and dropped.
 */
function editBody(fields: Record<string, unknown> | undefined): Record<string, unknown> {
  const body: Record<string, unknown> = { ...(fields ?? {}) };
  for (const name of INTEGER_FIELDS) {
    const v = body[name];
    if (typeof v === 'string' && /^-?\d{1,6}$/.test(v)) body[name] = Number(v);
  }
  if (body.stream === 'false') body.stream = false;
  // One id given as a plain form field (no `[]`) arrives as text: it is still a list of one.
  if (typeof body.image_file_ids === 'string') body.image_file_ids = [body.image_file_ids];
  if (body.input_fidelity !== undefined) {
    if (body.input_fidelity !== 'low' && body.input_fidelity !== 'high') {
      throw new ApiError('invalid_value', "input_fidelity must be 'low' or 'high'.", 'input_fidelity');
    }
    delete body.input_fidelity;
  }
  return body;
}
