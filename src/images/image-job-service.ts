import type pg from 'pg';
import { lockUser } from '../accounts/account-queries.ts';
import type { BillingService } from '../billing/billing-service.ts';
import type { ModelInfo } from '../billing/model-catalog.ts';
import type { Config } from '../config.ts';
import type { Pool } from '../db/pool.ts';
import { afterCommit, withTransaction } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import { findOwnedVisionFiles } from '../files/file-queries.ts';
import { looksLikeId } from '../ids.ts';
import { keysetPage } from '../keyset-page.ts';
import type { JobQueue } from '../pipeline/job-queue.ts';
import { imageContentType, imageJobImageKey, imageJobInputKey, imageJobPrefix } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import type { LinkSigner } from '../storage/signed-links.ts';
import type { OnlineImages } from '../vertex/online-images.ts';
import { generateImageJob } from './generate-job.ts';
import * as q from './image-job-queries.ts';
import type { CheckedRequest } from './image-request.ts';
import { fetchImageUrl, isImageUrl } from './image-url.ts';
import { type FailedImage, type MadeImage, makeImages } from './make-images.ts';

/** What makes a job: the checked request, how it runs, and its reference images already stored. */
export interface ImageJobSpec {
  id: string;
  userId: number;
  mode: q.ImageJobRow['mode'];
  source: q.ImageJobRow['source'];
  operation: q.ImageJobRow['operation'];
  request: CheckedRequest;
  inputs: q.JobInput[];
  taskRequestId?: string | null;
}

/** A sync request's answer: the job as settled and its images (bytes, and links in url mode). */
export interface SyncResult {
  job: q.ImageJobRow;
  images: Array<MadeImage & { url: string | null }>;
}

/** A sync request's row outlives its timeout by this much before the sweep may expire it. */
const SYNC_SWEEP_GRACE_MS = 60_000;
/** An async job's calls are stopped at its expiry; their own timeout is this much later. */
const EXPIRY_ABORT_LEAD_MS = 1000;
/** setTimeout's longest delay (about 24.8 days); a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type Ending = Omit<Parameters<typeof q.finishImageJob>[2], 'dropImages'>;

/**
 * Single images on Vertex online prediction, the one service behind sync calls, `?async=true`
 * jobs and the task API. A job is charged `n × sync unit price` when it is made (one transaction
 * with its log row), makes its images one call each, and is settled once: the images it made are
 * consumed, the rest refunded, in the transaction that ends it (compare-and-set on its status).
 */
export class ImageJobService {
  private readonly pool: Pool;
  private readonly store: ObjectStore;
  private readonly queue: JobQueue;
  private readonly billing: BillingService;
  private readonly online: OnlineImages;
  private readonly links: LinkSigner;
  private readonly config: Config['images'];
  private readonly models: () => Promise<ModelInfo[]>;
  private readonly visionMaxBytes: number;

  constructor(deps: {
    pool: Pool;
    store: ObjectStore;
    queue: JobQueue;
    billing: BillingService;
    online: OnlineImages;
    links: LinkSigner;
    config: Config['images'];
    models: () => Promise<ModelInfo[]>;
    /** Largest reference image (VISION_MAX_BYTES), also for images fetched by URL. */
    visionMaxBytes: number;
  }) {
    this.pool = deps.pool;
    this.store = deps.store;
    this.queue = deps.queue;
    this.billing = deps.billing;
    this.online = deps.online;
    this.links = deps.links;
    this.config = deps.config;
    this.models = deps.models;
    this.visionMaxBytes = deps.visionMaxBytes;
  }

  /**
   * Records a job and reserves its price in one transaction (an async job's run is queued in it
   * too): a request refused for quota or concurrency leaves nothing behind. A sync job is made
   * `running`: its run starts in this same request.
   */
  async create(spec: ImageJobSpec): Promise<q.ImageJobRow> {
    const { body, model, tier } = spec.request;
    const unitPrice = model.unitPrices[tier];
    if (unitPrice === undefined) throw new Error(`model ${model.id} has no price for ${tier}`);
    const n = body.n ?? 1;
    const ttl = spec.mode === 'sync' ? this.config.syncTimeoutMs + SYNC_SWEEP_GRACE_MS : this.config.jobTtlMs;
    return withTransaction(this.pool, async (tx) => {
      // The user's row lock first: this transaction's own writes that refer to the user (the job,
      // its log row) then find it locked by themselves, instead of piling key-share locks on a row
      // another request holds (multixacts: the largest single cost in Postgres when one user's
      // sync requests were taken in the other order).
      if (!(await lockUser(tx, spec.userId))) throw notFound('user', spec.userId);
      if (spec.mode === 'sync') {
        const running = await q.countOpenSyncJobs(tx, spec.userId);
        if (running >= this.config.userMaxConcurrentRequests) {
          throw new ApiError(
            'rate_limit_exceeded',
            `You have ${running} image requests running; at most ${this.config.userMaxConcurrentRequests} at once. Retry shortly, or use ?async=true.`,
          ).withHeaders({ 'Retry-After': '1' });
        }
      }
      const job = await q.insertImageJob(tx, {
        id: spec.id,
        userId: spec.userId,
        mode: spec.mode,
        source: spec.source,
        operation: spec.operation,
        model: model.id,
        request: body,
        inputs: spec.inputs,
        n,
        sizeTier: tier,
        unitPrice,
        responseFormat: body.response_format ?? (spec.source === 'task' ? 'url' : 'b64_json'),
        taskRequestId: spec.taskRequestId ?? null,
        expiresAt: new Date(Date.now() + ttl),
      });
      const reserved = await this.billing.preDeductIn(tx, {
        userId: spec.userId,
        imageJobId: job.id,
        model: model.id,
        amount: job.preDeducted,
        content: `image ${spec.operation} ${job.id}: ${n} × ${unitPrice} (${tier}, ${model.id})`,
      });
      if (!reserved) {
        throw new ApiError(
          'insufficient_quota',
          `This request costs ${job.preDeducted} quota units (${n} × ${unitPrice}); your quota left is lower.`,
        );
      }
      if (spec.mode === 'async') await this.queue.send(generateImageJob, { jobId: job.id }, { tx, key: job.id });
      return job;
    });
  }

  /**
   * Runs a sync job in this request and settles it. Images arriving after SYNC_TIMEOUT_MS are
   * not waited for: the request answers 504 and is refunded in full. A client that hangs up is
   * not a reason to stop: the job still ends, settled by what was made.
   */
  async runSync(job: q.ImageJobRow, model: ModelInfo): Promise<SyncResult> {
    const deadline = job.createdAt.getTime() + this.config.syncTimeoutMs;
    const images: SyncResult['images'] = [];
    const { outcome, timedOut } = await this.makeUntil(job, model, {
      indices: range(job.n),
      abortAt: deadline,
      deadline,
      onImage: async (image) => {
        const url = job.responseFormat === 'url' ? await this.keepImage(job, image) : null;
        images.push({ ...image, url });
      },
    });
    if (timedOut) {
      await this.end(job.id, () => ({
        made: 0,
        status: 'failed',
        errorCode: 'timeout',
        errorMessage: notReadyIn(this.config.syncTimeoutMs),
        usage: outcome.usage,
      }));
      throw this.timeoutError();
    }
    const ended =
      images.length === job.n
        ? // Everything made: the settlement moves no quota, so it is the one compare-and-set.
          await q.finishImageJob(this.pool, job.id, {
            status: 'succeeded',
            settled: job.preDeducted,
            refunded: 0,
            usage: outcome.usage,
            errorCode: null,
            errorMessage: null,
            dropImages: false,
          })
        : await this.end(job.id, () => ({
            made: images.length,
            ...failureOf(outcome.failures, images.length),
            usage: outcome.usage,
          }));
    if (!ended) throw this.timeoutError();
    if (!images.length) throw failureError(outcome.failures);
    return { job: ended, images: images.sort((a, b) => a.index - b.index) };
  }

  /**
   * Runs (or resumes) an async job: makes the images it does not have yet, storing and recording
   * each as it lands, then settles. Safe to run again: a redelivered run after a crash makes only
   * the missing images, and only the first settlement counts.
   */
  async runAsync(jobId: string): Promise<void> {
    const job = await q.startImageJob(this.pool, jobId);
    if (!job) return;
    const model = (await this.models()).find((m) => m.id === job.model);
    if (!model) {
      await this.end(jobId, (row) => ({
        made: row.images.length,
        status: row.images.length ? 'succeeded' : 'failed',
        errorCode: 'model_not_found',
        errorMessage: `model '${job.model}' is no longer available`,
        usage: null,
      }));
      return;
    }
    const have = new Set(job.images.map((i) => i.index));
    // At its expiry the calls still out are stopped (timed out: the sweep ends the job `expired`).
    // Their own deadline is a little later, so that it is always this abort that stops them: a call
    // timing out on its own at the same instant would end the job `failed` (upstream_error) instead.
    const expiry = job.expiresAt.getTime();
    const { outcome, timedOut } = await this.makeUntil(job, model, {
      indices: range(job.n).filter((i) => !have.has(i)),
      abortAt: expiry,
      deadline: expiry + EXPIRY_ABORT_LEAD_MS,
      onImage: async (image, stop) => {
        // The job ended meanwhile (cancelled, expired): stop making what nobody pays for.
        if (!(await this.keepImage(job, image))) stop();
      },
    });
    if (timedOut) return; // past its expiry (or ended meanwhile): the sweep or the cancel settled it
    await this.end(jobId, (row) => ({
      made: row.images.length,
      ...failureOf(outcome.failures, row.images.length),
      usage: outcome.usage,
    }));
  }

  /**
   * Makes the given images of a job, stopping every call still out at `abortAt` (or when
   * `onImage` calls `stop`). `timedOut` says the run was cut short, not finished.
   */
  private async makeUntil(
    job: q.ImageJobRow,
    model: ModelInfo,
    opts: {
      indices: number[];
      abortAt: number;
      deadline: number;
      onImage(image: MadeImage, stop: () => void): Promise<void>;
    },
  ): Promise<{ outcome: Awaited<ReturnType<typeof makeImages>>; timedOut: boolean }> {
    const controller = new AbortController();
    const stop = () => controller.abort();
    const timer = setTimeout(stop, Math.min(MAX_TIMER_MS, Math.max(0, opts.abortAt - Date.now())));
    try {
      const outcome = await makeImages({ online: this.online, store: this.store }, job, model, {
        indices: opts.indices,
        signal: controller.signal,
        deadline: opts.deadline,
        onImage: (image) => opts.onImage(image, stop),
      });
      return { outcome, timedOut: controller.signal.aborted || outcome.failures.some((f) => f.timedOut) };
    } finally {
      clearTimeout(timer);
    }
  }

  private timeoutError(): ApiError {
    return new ApiError('timeout', `${notReadyIn(this.config.syncTimeoutMs)} Your quota was returned.`);
  }

  /** Stores one image of a job and records it; false (and the object removed) when the job no longer takes it. */
  private async keepImage(job: q.ImageJobRow, image: MadeImage): Promise<string | null> {
    const key = imageJobImageKey(job.userId, job.id, image.index, image.mimeType);
    await this.store.save(key, image.data, imageContentType(image.mimeType));
    const recorded = await q.recordJobImage(this.pool, job.id, {
      index: image.index,
      key,
      mimeType: imageContentType(image.mimeType),
      revisedPrompt: image.revisedPrompt,
    });
    if (!recorded) {
      await this.store.delete(key).catch(() => {});
      return null;
    }
    return this.links.sign(key);
  }

  /**
   * Ends an open job once: locks it, lets `decide` count what it made from the locked row, then
   * writes the status, the settlement and the refund of the rest with its log row. Null when the
   * job had ended already (a cancel, the sweep or another run got there first).
   */
  private end(
    id: string,
    decide: (row: q.ImageJobRow) => { made: number } & Omit<Ending, 'settled' | 'refunded'>,
  ): Promise<q.ImageJobRow | null> {
    return withTransaction(this.pool, async (tx) => {
      const row = await q.findImageJob(tx, id, { forUpdate: true });
      if (!row || !q.OPEN_JOB_STATUSES.includes(row.status)) return null;
      const { made, ...ending } = decide(row);
      const settled = Math.min(made, row.n) * row.unitPrice;
      const refunded = row.preDeducted - settled;
      // A sync request that timed out (or was expired, or died) may have stored url-mode images
      // before it ended: refunded in full, it must not leave them reachable through the job.
      const dropImages = made === 0 && row.images.length > 0;
      const ended = await q.finishImageJob(tx, id, { ...ending, settled, refunded, dropImages });
      await this.refund(tx, row, refunded, ending.status);
      if (dropImages) {
        // Best effort: the retention sweep deletes the job's prefix in any case.
        afterCommit(tx, () => void Promise.all(row.images.map((i) => this.store.delete(i.key))).catch(() => {}));
      }
      return ended;
    });
  }

  private refund(tx: pg.PoolClient, job: q.ImageJobRow, amount: number, status: string) {
    return this.billing.refundIn(tx, {
      userId: job.userId,
      imageJobId: job.id,
      model: job.model,
      amount,
      content: `image job ${job.id} ${status}: ${amount / job.unitPrice || 0} of ${job.n} images not made, ${amount} refunded`,
    });
  }

  /** The caller's vision files of these ids, in order, as job inputs; 404 for any that is not one. */
  async visionInputs(userId: number, ids: string[], param = 'image_file_ids'): Promise<q.JobInput[]> {
    if (!ids.length) return [];
    const found = new Map((await findOwnedVisionFiles(this.pool, userId, ids)).map((f) => [f.id, f]));
    return ids.map((id) => {
      const file = found.get(id);
      if (!file) throw new ApiError('file_not_found', `No vision file of yours has the id '${id}'.`, param);
      return { key: file.objectKey, mimeType: file.mimeType, role: 'image' };
    });
  }

  /**
   * One reference image given as text (the task API): your `file_…` vision file, or an http(s) or
   * `data:` URL, fetched through the address guard and stored with the job before it is made.
   */
  async referenceInput(
    userId: number,
    jobId: string,
    ref: string,
    param: string,
    role: q.JobInput['role'],
  ): Promise<q.JobInput> {
    if (!isImageUrl(ref)) {
      const [input] = await this.visionInputs(userId, [ref], param);
      return { ...input, role };
    }
    const image = await fetchImageUrl(ref, {
      maxBytes: this.visionMaxBytes,
      timeoutMs: this.config.fetchTimeoutMs,
      allowPrivate: this.config.fetchAllowPrivateUrls,
      param,
    });
    const key = imageJobInputKey(userId, jobId, param.replace(/\W+/g, '-'));
    await this.store.save(key, image.data, image.mimeType);
    return { key, mimeType: image.mimeType, role };
  }

  /**
   * Removes the inputs stored for a job that was refused before it was made (a job that exists
   * keeps them for its run). Never throws: it runs on the way out of a failed request.
   */
  async discardUnmade(userId: number, id: string): Promise<void> {
    try {
      if (!(await q.imageJobExistsForUser(this.pool, userId, id))) {
        await this.store.deletePrefix(imageJobPrefix(userId, id));
      }
    } catch {
      // Unreachable objects under a prefix no job names: harmless, and the request's error matters more.
    }
  }

  async get(userId: number, id: string): Promise<q.ImageJobRow> {
    const job = looksLikeId('img', id) ? await q.findUserImageJob(this.pool, userId, id) : null;
    if (!job) throw notFound('job', id, 'job_id');
    return job;
  }

  list(userId: number, opts: { limit: number; after: string | null; status: q.ImageJobStatus | null }) {
    return keysetPage({
      ...opts,
      what: 'one of your image jobs',
      cursorExists: async (after) => looksLikeId('img', after) && q.imageJobExistsForUser(this.pool, userId, after),
      fetch: (limit) => q.listUserImageJobs(this.pool, userId, { ...opts, limit }),
    });
  }

  /** Cancels an async job: the images made so far are kept and charged, the rest refunded. Twice is once. */
  async cancel(userId: number, id: string): Promise<q.ImageJobRow> {
    const job = await this.get(userId, id);
    if (job.mode === 'sync') {
      throw new ApiError('job_not_cancellable', `${id} is a sync request: it ends with its HTTP call.`, 'job_id');
    }
    const ended = await this.end(id, (row) => ({
      made: row.images.length,
      status: 'cancelled',
      errorCode: null,
      errorMessage: null,
      usage: null,
    }));
    if (ended) return ended;
    const now = await this.get(userId, id);
    if (now.status === 'cancelled') return now;
    throw new ApiError(
      'job_not_cancellable',
      `Image job ${id} is ${now.status} and can no longer be cancelled.`,
      'job_id',
    );
  }

  /** Signed links to a job's images, in index order (fresh ones, valid IMAGE_URL_TTL). */
  imageLinks(job: q.ImageJobRow): string[] {
    return [...job.images].sort((a, b) => a.index - b.index).map((i) => this.links.sign(i.key));
  }

  /** The dead-letter end of a job whose run kept failing: the images it recorded are kept and charged, the rest refunded. */
  async failDead(jobId: string, reason: string): Promise<void> {
    await this.end(jobId, (row) => ({
      made: row.mode === 'sync' ? 0 : row.images.length,
      status: row.images.length && row.mode === 'async' ? 'succeeded' : 'failed',
      errorCode: 'internal_error',
      errorMessage: `the job could not be run: ${reason.slice(0, 200)}`,
      usage: null,
    }));
  }

  /** The sweep: open jobs past their expiry end `expired`; a sync one is refunded in full (nobody got its images). */
  async expireDue(limit: number): Promise<number> {
    const ids = await q.findExpiredOpenJobs(this.pool, limit);
    for (const id of ids) {
      await this.end(id, (row) => ({
        made: row.mode === 'sync' ? 0 : row.images.length,
        status: 'expired',
        errorCode: 'expired',
        errorMessage: 'the job did not finish in time',
        usage: null,
      }));
    }
    return ids.length;
  }

  /** The sweep: async jobs whose pg-boss run may have been lost are queued again (keyed: never twice). */
  async resumeOpen(olderThanMs: number, limit: number): Promise<void> {
    for (const id of await q.findOpenAsyncJobs(this.pool, olderThanMs, limit)) {
      await this.queue.send(generateImageJob, { jobId: id }, { key: id });
    }
  }

  /** The sweep: inputs and images of jobs finished longer ago than `retentionMs` are deleted. */
  async purgeDue(retentionMs: number, limit: number): Promise<number> {
    const jobs = await q.markJobsPurged(this.pool, retentionMs, limit);
    for (const job of jobs) await this.store.deletePrefix(imageJobPrefix(job.userId, job.id));
    return jobs.length;
  }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

const notReadyIn = (ms: number) => `The images were not ready within ${Math.round(ms / 1000)} s.`;

/** How a job that made `made` images ends, given its failures. */
function failureOf(failures: FailedImage[], made: number): Omit<Ending, 'settled' | 'refunded' | 'usage'> {
  if (made > 0) return { status: 'succeeded', errorCode: null, errorMessage: null };
  const error = failureError(failures);
  return { status: 'failed', errorCode: error.code, errorMessage: error.message };
}

/** Every image failed: blocked by the model's filters (400), or Vertex failed them (502). */
function failureError(failures: FailedImage[]): ApiError {
  const first = failures[0];
  if (failures.length && failures.every((f) => f.blocked)) {
    return new ApiError(
      'content_blocked',
      `The model refused the request: ${first.message}. Your quota was returned.`,
      'prompt',
    );
  }
  return new ApiError(
    'upstream_error',
    `Vertex AI did not make the image${failures.length > 1 ? 's' : ''}: ${first?.message ?? 'no answer'}. Your quota was returned.`,
  );
}
