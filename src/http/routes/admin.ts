import { type NextFunction, type Request, type RequestHandler, type Response, Router } from 'express';
import type { ModelPatch } from '../../billing/model-catalog.ts';
import { ApiError } from '../../errors/api-error.ts';
import type { Services } from '../../services.ts';
import { bearer, sameSecret } from '../middleware.ts';
import { listLimit, singleQuery } from '../query.ts';
import { deadJobView, ledgerView, modelView, systemView, unix, userView } from '../views.ts';

/** The gateway operator's API, behind `Authorization: Bearer $ADMIN_TOKEN`. */
export function adminRoutes(s: Services, json: RequestHandler[]): Router {
  const r = Router();
  r.use(adminAuth(s.config.adminToken), json);

  r.post('/users', async (req, res) => {
    const name = req.body?.name;
    if (typeof name !== 'string' || !name.trim() || name.length > 200) {
      throw new ApiError('invalid_name', 'name must be a non-empty string of at most 200 characters.', 'name');
    }
    const quota = req.body?.quota ?? 0;
    if (!Number.isSafeInteger(quota) || quota < 0)
      throw new ApiError('invalid_quota', 'quota must be a whole number ≥ 0.', 'quota');
    const { user, apiKey } = await s.accounts.createUser(name.trim(), quota);
    res.status(201).json({ ...userView(user), api_key: apiKey });
  });
  // Newest first; `after` is the last id of the previous page, `q` a name fragment or an exact id.
  r.get('/users', async (req, res) => {
    const limit = listLimit(req.query, { fallback: 50, max: 200 });
    const after = singleQuery(req.query, 'after');
    const search = singleQuery(req.query, 'q')?.trim() || null;
    const { page, hasMore } = await s.accounts.listUsers({
      limit,
      after: after === undefined ? null : idParam(after, 'after'),
      search,
    });
    res.json({ object: 'list', data: page.map(userView), has_more: hasMore });
  });
  r.get('/users/:id', async (req, res) => {
    const id = idParam(req.params.id);
    const user = await s.accounts.getUser(id);
    const keys = await s.accounts.listKeys(id);
    const ledger = await s.billing.ledger(id);
    res.json({
      ...userView(user),
      ledger: ledgerView(ledger),
      api_keys: keys.map((k) => ({
        id: k.id,
        hint: k.keyHint,
        created_at: unix(k.createdAt),
        revoked_at: unix(k.revokedAt),
      })),
    });
  });
  r.post('/users/:id/topup', async (req, res) => {
    const id = idParam(req.params.id);
    const quota = req.body?.quota;
    if (!Number.isSafeInteger(quota) || quota <= 0)
      throw new ApiError('invalid_quota', 'quota must be a whole number > 0.', 'quota');
    await s.billing.topUp(id, quota);
    res.json(userView(await s.accounts.getUser(id)));
  });
  r.post('/users/:id/keys', async (req, res) => {
    res.status(201).json({ api_key: await s.accounts.createKey(idParam(req.params.id)) });
  });
  r.delete('/users/:id/keys/:keyId', async (req, res) => {
    await s.accounts.revokeKey(idParam(req.params.id), idParam(req.params.keyId, 'key_id'));
    res.json({ revoked: true });
  });
  r.get('/logs', async (req, res) => {
    const userId = req.query.user_id === undefined ? undefined : idParam(String(req.query.user_id), 'user_id');
    const batchId = typeof req.query.batch_id === 'string' ? req.query.batch_id : undefined;
    const afterId = req.query.after === undefined ? 0 : idParam(String(req.query.after), 'after');
    const limit = req.query.limit === undefined ? 100 : Number(req.query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new ApiError('invalid_limit', 'limit must be 1–1000.', 'limit');
    const imageJobId = typeof req.query.image_job_id === 'string' ? req.query.image_job_id : undefined;
    const rows = await s.billing.logs(s.pool, { userId, batchId, imageJobId, afterId, limit });
    res.json({
      object: 'list',
      data: rows.map((l) => ({
        id: l.id,
        user_id: l.userId,
        batch_id: l.batchId,
        image_job_id: l.imageJobId,
        model: l.model,
        type: l.type,
        quota_delta: l.quotaDelta,
        content: l.content,
        created_at: unix(l.createdAt),
      })),
      has_more: rows.length === limit,
    });
  });
  // Jobs that used up their retries (the dead-letter queue), newest first.
  r.get('/dead-jobs', async (req, res) => {
    const limit = req.query.limit === undefined ? 100 : Number(req.query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new ApiError('invalid_limit', 'limit must be 1–1000.', 'limit');
    }
    const jobs = await s.queue.deadJobs(limit);
    res.json({ object: 'list', data: jobs.map(deadJobView) });
  });
  // Counts across the service: batches and image jobs by status, queues, Vertex jobs, dead jobs.
  r.get('/system', async (_req, res) => {
    res.json(systemView(await s.system.snapshot()));
  });
  r.get('/models', async (_req, res) => {
    res.json({ object: 'list', data: (await s.models(false)).map(modelView) });
  });
  r.put('/models/:id', async (req, res) => {
    const id = req.params.id;
    if (!/^[a-z0-9][a-z0-9.-]{0,99}$/.test(id))
      throw new ApiError('invalid_model_id', 'Model ids are lowercase letters, digits, dots and dashes.', 'id');
    await s.catalog.save(id, modelPatch(req.body));
    const model = (await s.models(false)).find((m) => m.id === id)!;
    res.json(modelView(model));
  });
  return r;
}

function adminAuth(token: string | null) {
  return (req: Request, _res: Response, next: NextFunction) => {
    if (!token) throw new ApiError('admin_disabled', 'The admin API is disabled: set ADMIN_TOKEN to enable it.');
    const given = bearer(req);
    if (given === null) throw new ApiError('missing_admin_token', 'Send Authorization: Bearer <ADMIN_TOKEN>.');
    if (!sameSecret(given, token)) throw new ApiError('invalid_admin_token', 'Wrong admin token.');
    next();
  };
}

/** A positive whole-number id from the path or query (user, key, log cursor). */
function idParam(raw: string, param = 'id'): number {
  if (!/^\d{1,15}$/.test(raw)) throw new ApiError('invalid_id', `${param} must be a positive whole number.`, param);
  return Number(raw);
}

function modelPatch(body: unknown): ModelPatch {
  if (!body || typeof body !== 'object' || Array.isArray(body))
    throw new ApiError('invalid_body', 'Send a JSON object.');
  const b = body as Record<string, unknown>;
  const patch: ModelPatch = {};
  const strings = (v: unknown, name: string) => {
    if (!Array.isArray(v) || !v.length || !v.every((x) => typeof x === 'string'))
      throw new ApiError('invalid_field', `${name} must be a non-empty array of strings.`, name);
    return v as string[];
  };
  const positive = (v: unknown, name: string, max = Number.MAX_SAFE_INTEGER) => {
    if (typeof v !== 'number' || !(v > 0) || v > max)
      throw new ApiError('invalid_field', `${name} must be a number in (0, ${max}].`, name);
    return v;
  };
  if (b.vertex_model !== undefined) {
    if (typeof b.vertex_model !== 'string')
      throw new ApiError('invalid_field', 'vertex_model must be a string.', 'vertex_model');
    patch.publisherModel = b.vertex_model;
  }
  if (b.aspect_ratios !== undefined) patch.aspectRatios = strings(b.aspect_ratios, 'aspect_ratios');
  if (b.image_sizes !== undefined) patch.imageSizes = strings(b.image_sizes, 'image_sizes');
  if (b.max_prompt_chars !== undefined)
    patch.maxPromptChars = Math.floor(positive(b.max_prompt_chars, 'max_prompt_chars'));
  if (b.max_reference_images !== undefined)
    patch.maxReferenceImages = Math.floor(positive(b.max_reference_images, 'max_reference_images', 16));
  if (b.price_multiplier !== undefined) patch.priceMultiplier = positive(b.price_multiplier, 'price_multiplier', 1000);
  if (b.batch_ratio !== undefined) patch.batchRatio = positive(b.batch_ratio, 'batch_ratio', 1);
  if (b.base_prices !== undefined) {
    const bp = b.base_prices as Record<string, unknown>;
    if (
      !bp ||
      typeof bp !== 'object' ||
      !Object.values(bp).every((v) => Number.isSafeInteger(v) && (v as number) > 0)
    ) {
      throw new ApiError(
        'invalid_field',
        'base_prices maps size tiers to whole numbers of quota units, e.g. {"1K": 5000}.',
        'base_prices',
      );
    }
    patch.basePrices = bp as Record<string, number>;
  }
  if (b.enabled !== undefined) {
    if (typeof b.enabled !== 'boolean')
      throw new ApiError('invalid_field', 'enabled must be true or false.', 'enabled');
    patch.enabled = b.enabled;
  }
  return patch;
}
