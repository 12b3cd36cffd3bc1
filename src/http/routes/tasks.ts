import type { NextFunction, Request, Response } from 'express';
import { Router } from 'express';
import { ApiError } from '../../errors/api-error.ts';
import { newId } from '../../ids.ts';
import type { JobInput } from '../../images/image-job-queries.ts';
import { checkImageRequest } from '../../images/image-request.ts';
import type { Services } from '../../services.ts';
import { userId } from '../middleware.ts';
import { taskView } from '../views.ts';

/** Fields of a submit (seed 003). Unknown ones are refused, as everywhere. */
const SUBMIT_FIELDS = [
  'model',
  'prompt',
  'images',
  'mask',
  'input_fidelity',
  'size',
  'quality',
  'background',
  'n',
  'output_format',
  'output_compression',
  'response_format',
  'logo_add',
  'logo_param',
  'extra',
];
/** The prompt of an images-only task: Gemini needs words to go with the pictures. */
const IMAGES_ONLY_PROMPT = 'Make a new image based on the reference images.';

/** Relative to /v1: the one JSON route with a larger body limit (inline data: URLs). */
export const TASK_SUBMIT_PATH = '/aiart/openai/image/submit';

/** Marks a route group whose errors are rendered as seed 003's `{code, message, data: null}`. */
export function taskEnvelope(_req: Request, res: Response, next: NextFunction) {
  res.locals.errorEnvelope = 'task';
  next();
}

/**
 * The task API (seed 003): `POST /v1/aiart/openai/image/submit` → `{request_id, job_id}` and
 * `POST /v1/aiart/openai/image/query {job_id}` → WAIT / DONE / FAIL. A task is an async image job
 * of the one image-job service; only the shapes differ. Images given by URL are fetched (guarded
 * against private addresses, capped at VISION_MAX_BYTES) and stored before anything is charged.
 */
export function taskRoutes(s: Services): Router {
  const r = Router();
  r.post(TASK_SUBMIT_PATH, async (req, res) => {
    const b = objectBody(req.body);
    const unknown = Object.keys(b).find((k) => !SUBMIT_FIELDS.includes(k));
    if (unknown !== undefined) {
      throw new ApiError('unknown_parameter', `Unrecognized field: ${unknown.slice(0, 64)}.`, unknown.slice(0, 64));
    }
    const refs = imageList(b.images);
    const hasPrompt = typeof b.prompt === 'string' && b.prompt.trim() !== '';
    if (!hasPrompt && !refs.length) throw new ApiError('invalid_request', 'prompt or images is required', 'prompt');
    if (b.n !== undefined && b.n !== 1)
      throw new ApiError('invalid_value', 'n must be 1: a task makes one image.', 'n');
    if (b.logo_add !== undefined && b.logo_add !== 0 && b.logo_add !== 1) {
      throw new ApiError('invalid_value', 'logo_add must be 0 or 1.', 'logo_add');
    }
    const extra = b.extra === undefined ? {} : objectBody(b.extra, 'extra');
    const raw = {
      model: b.model,
      // A blank or wrong-typed prompt is still checked (and refused) as given.
      prompt: b.prompt === undefined || b.prompt === '' ? IMAGES_ONLY_PROMPT : b.prompt,
      n: 1,
      size: b.size,
      quality: b.quality,
      background: b.background,
      output_format: b.output_format,
      output_compression: b.output_compression,
      image_config: extra.image_config,
      response_format: 'url',
    };
    for (const k of Object.keys(raw) as Array<keyof typeof raw>) if (raw[k] === undefined) delete raw[k];
    const mask = b.mask === undefined || b.mask === '' ? null : stringField(b.mask, 'mask');
    const request = checkImageRequest(raw, await s.models(true), { count: refs.length, param: 'images' });
    const user = userId(req);
    const id = newId('img');
    try {
      const inputs: JobInput[] = [];
      for (const [i, ref] of refs.entries())
        inputs.push(await s.imageJobs.referenceInput(user, id, ref, `images[${i}]`, 'image'));
      if (mask !== null) inputs.push(await s.imageJobs.referenceInput(user, id, mask, 'mask', 'mask'));
      const job = await s.imageJobs.create({
        id,
        userId: user,
        mode: 'async',
        source: 'task',
        operation: inputs.length ? 'edit' : 'generation',
        request,
        inputs,
        taskRequestId: newId('req'),
      });
      res.json({ request_id: job.taskRequestId, job_id: job.id });
    } catch (err) {
      await s.imageJobs.discardUnmade(user, id);
      throw err;
    }
  });
  r.post('/aiart/openai/image/query', async (req, res) => {
    const b = objectBody(req.body);
    if (b.job_id === undefined || b.job_id === null || b.job_id === '') {
      throw new ApiError('invalid_request', 'job_id is required', 'job_id');
    }
    const job = await s.imageJobs.get(userId(req), stringField(b.job_id, 'job_id'));
    res.json(taskView(job, s.imageJobs.imageLinks(job)));
  });
  return r;
}

function objectBody(body: unknown, param: string | null = null): Record<string, unknown> {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new ApiError('invalid_body', `${param ?? 'The body'} must be a JSON object.`, param);
  }
  return body as Record<string, unknown>;
}

function stringField(value: unknown, param: string): string {
  if (typeof value !== 'string') throw new ApiError('invalid_type', `${param} must be a string.`, param);
  return value;
}

/** `images`: a list of strings; empty strings are ignored (seed 003). */
function imageList(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ApiError('invalid_type', 'images must be a list of URLs or file ids.', 'images');
  return value.map((v, i) => stringField(v, `images[${i}]`)).filter((v) => v !== '');
}
