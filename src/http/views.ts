import type { UserRow } from '../accounts/account-queries.ts';
import type { GalleryImage } from '../batches/batch-gallery.ts';
import type { ClientBatchRow } from '../batches/batch-queries.ts';
import type { ModelInfo } from '../billing/model-catalog.ts';
import type { FileRow } from '../files/file-queries.ts';
import { type ImageJobRow, OPEN_JOB_STATUSES } from '../images/image-job-queries.ts';
import type { DeadJob } from '../pipeline/job-queue.ts';
import type { SystemSnapshot } from '../system-status.ts';
import type { WebhookDeliveryRow, WebhookEndpointRow } from '../webhooks/webhook-queries.ts';

/**
 * Every object the API answers with, in one place: rows in, the wire shapes out (OpenAI's
 * where there is one). Times are unix seconds.
 */
export const unix = (d: Date | null) => (d ? Math.floor(d.getTime() / 1000) : null);

/** The OpenAI Batch object, plus `model` and `billing`. */
export function batchView(b: ClientBatchRow) {
  return {
    id: b.id,
    object: 'batch',
    endpoint: b.endpoint,
    model: b.model,
    errors: b.errors ? { object: 'list', data: b.errors } : null,
    input_file_id: b.inputFileId,
    completion_window: b.completionWindow,
    status: b.status,
    output_file_id: b.outputFileId,
    error_file_id: b.errorFileId,
    created_at: unix(b.createdAt),
    in_progress_at: unix(b.inProgressAt),
    expires_at: unix(b.expiresAt),
    finalizing_at: unix(b.finalizingAt),
    completed_at: unix(b.completedAt),
    failed_at: unix(b.failedAt),
    expired_at: unix(b.expiredAt),
    cancelling_at: unix(b.cancellingAt),
    cancelled_at: unix(b.cancelledAt),
    request_counts: { total: b.requestTotal, completed: b.requestCompleted, failed: b.requestFailed },
    metadata: b.metadata,
    billing: { pre_deducted: b.preDeducted, settled: b.settled, refunded: b.refunded },
  };
}

/** The OpenAI file object. */
export function fileView(f: FileRow) {
  return {
    id: f.id,
    object: 'file',
    purpose: f.purpose,
    filename: f.filename,
    bytes: f.bytes,
    created_at: unix(f.createdAt),
    expires_at: unix(f.expiresAt),
    status: 'processed',
    ...(f.width !== null ? { width: f.width, height: f.height } : {}),
  };
}

export function modelView(m: ModelInfo) {
  return {
    id: m.id,
    object: 'model',
    owned_by: 'google',
    vertex_model: m.publisherModel,
    capabilities: {
      aspect_ratios: m.aspectRatios,
      image_sizes: m.imageSizes,
      max_prompt_chars: m.maxPromptChars,
      max_reference_images: m.maxReferenceImages,
    },
    pricing: { unit: 'quota_per_image', sync: m.unitPrices, batch_ratio: m.batchRatio },
    enabled: m.enabled,
  };
}

export function userView(u: UserRow) {
  return {
    id: u.id,
    object: 'user',
    name: u.name,
    quota: u.quota,
    used_quota: u.usedQuota,
    privacy_accepted_at: unix(u.privacyAcceptedAt),
    created_at: unix(u.createdAt),
  };
}

/** A user's quota against their billing log (the invariant quota = Σ log deltas). */
export function ledgerView(l: { quota: number; logSum: number; logCount: number; balanced: boolean }) {
  return { quota: l.quota, log_sum: l.logSum, log_count: l.logCount, balanced: l.balanced };
}

/** The whole service at a glance, for operators. */
export function systemView(s: SystemSnapshot) {
  return {
    object: 'system',
    batches: s.batches,
    image_jobs: s.imageJobs,
    queues: s.queues.map((q) => ({ name: q.name, queued: q.queued, active: q.active, deferred: q.deferred })),
    vertex_jobs_in_flight: s.vertexJobsInFlight,
    dead_jobs: s.deadJobs,
  };
}

/** One image of a batch's output (the gallery): `url` is a signed link, usable without an API key. */
export function batchImageView(i: GalleryImage) {
  return { object: 'batch.image', custom_id: i.customId, index: i.index, url: i.url, mime_type: i.mimeType };
}

export function deadJobView(j: DeadJob) {
  return {
    id: j.id,
    object: 'dead_job',
    job: j.job,
    data: j.data,
    error: j.error,
    retries: j.retries,
    failed_at: unix(j.failedAt),
  };
}

/** A webhook endpoint; its secret only in the answer that created it. */
export function webhookEndpointView(e: WebhookEndpointRow, opts: { withSecret?: boolean } = {}) {
  return {
    id: e.id,
    object: 'webhook_endpoint',
    url: e.url,
    events: e.events,
    ...(opts.withSecret ? { secret: e.secret } : {}),
    created_at: unix(e.createdAt),
  };
}

/** One event's delivery to one endpoint (the body sent is not repeated here). */
export function webhookDeliveryView(d: WebhookDeliveryRow) {
  return {
    id: d.id,
    object: 'webhook_delivery',
    endpoint_id: d.endpointId,
    event_id: d.eventId,
    event_type: d.eventType,
    batch_id: d.batchId,
    status: d.status,
    attempts: d.attempts,
    last_status_code: d.lastStatusCode,
    last_error: d.lastError,
    next_attempt_at: unix(d.nextAttemptAt),
    delivered_at: unix(d.deliveredAt),
    created_at: unix(d.createdAt),
  };
}

/** An image job (seed 002's shape): `polling_url` and `content_url` are absolute, under `base`. */
export function imageJobView(j: ImageJobRow, links: { base: string; images: string[] }) {
  const finished = !OPEN_JOB_STATUSES.includes(j.status);
  return {
    id: j.id,
    object: 'image_job',
    status: j.status,
    mode: j.mode,
    operation: j.operation,
    model: j.model,
    created_at: unix(j.createdAt),
    started_at: unix(j.startedAt),
    completed_at: unix(j.completedAt),
    expires_at: unix(j.expiresAt),
    polling_url: `${links.base}/v1/jobs/${j.id}`,
    content_url: j.images.length ? `${links.base}/v1/jobs/${j.id}/content` : null,
    unsigned_urls: links.images,
    // A sync b64_json request keeps no images; what it made is what it was charged for.
    image_count:
      finished && j.images.length === 0 && j.unitPrice > 0 ? (j.settled ?? 0) / j.unitPrice : j.images.length,
    n: j.n,
    usage: {
      prompt_tokens: j.usage?.input_tokens ?? 0,
      completion_tokens: j.usage?.output_tokens ?? 0,
      // Quota units charged: the reservation while the job runs, what was settled once it ended.
      cost_credits: finished ? (j.settled ?? 0) : j.preDeducted,
    },
    billing: { pre_deducted: j.preDeducted, settled: j.settled, refunded: j.refunded },
    error: j.errorCode ? { code: j.errorCode, message: j.errorMessage } : null,
  };
}

/** The OpenAI images answer of a sync request. */
export function imagesResponseView(
  job: ImageJobRow,
  images: Array<{ data: Buffer; url: string | null; revisedPrompt: string | null }>,
) {
  return {
    created: unix(job.createdAt),
    data: images.map((i) => ({
      ...(i.url !== null ? { url: i.url } : { b64_json: i.data.toString('base64') }),
      ...(i.revisedPrompt ? { revised_prompt: i.revisedPrompt } : {}),
    })),
    usage: job.usage ?? {
      input_tokens: 0,
      output_tokens: 0,
      total_tokens: 0,
      input_tokens_details: { text_tokens: 0, image_tokens: 0 },
    },
  };
}

/** The task API's query answer (seed 003): WAIT while the job is open, DONE with links, FAIL otherwise. */
export function taskView(j: ImageJobRow, images: string[]) {
  const status = OPEN_JOB_STATUSES.includes(j.status) ? 'WAIT' : j.status === 'succeeded' ? 'DONE' : 'FAIL';
  return {
    status,
    created: unix(j.createdAt),
    ...(status === 'DONE' ? { data: images.map((url) => ({ url })) } : {}),
    ...(status === 'FAIL' ? { error_message: j.errorMessage ?? `the job was ${j.status}` } : {}),
  };
}
