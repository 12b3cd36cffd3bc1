import { AccountService } from './accounts/account-service.ts';
import { BatchGallery } from './batches/batch-gallery.ts';
import { BatchService } from './batches/batch-service.ts';
import { BillingService } from './billing/billing-service.ts';
import { ModelCatalog, type ModelInfo } from './billing/model-catalog.ts';
import type { Config } from './config.ts';
import type { DatabaseAvailability } from './db/availability.ts';
import type { NotificationListener } from './db/notifications.ts';
import type { Pool } from './db/pool.ts';
import { FileService } from './files/file-service.ts';
import { ReadCache } from './http/read-cache.ts';
import { ImageJobService } from './images/image-job-service.ts';
import type { Metrics } from './metrics.ts';
import type { JobQueue } from './pipeline/job-queue.ts';
import type { ObjectStore } from './storage/object-store.ts';
import type { LinkSigner } from './storage/signed-links.ts';
import { SystemStatus } from './system-status.ts';
import type { BatchJobs } from './vertex/batch-jobs.ts';
import type { OnlineImages } from './vertex/online-images.ts';
import { WebhookService } from './webhooks/webhook-service.ts';

/** The collaborators every handler and job is given: built once per process. */
export interface Services {
  config: Config;
  pool: Pool;
  /** Whether Postgres is reachable, so an outage is answered 503 and logged once. */
  database: DatabaseAvailability;
  /** LISTENs for changes other processes announce (revoked keys, model edits); null: no caches. */
  notifications: NotificationListener | null;
  store: ObjectStore;
  /** Signs and checks the links of url-mode images (served without an API key). */
  links: LinkSigner;
  queue: JobQueue;
  vertex: BatchJobs;
  /** Vertex online prediction: one image per generateContent call. */
  online: OnlineImages;
  /** Prometheus metrics of this service (`GET /metrics`). */
  metrics: Metrics;
  accounts: AccountService;
  billing: BillingService;
  files: FileService;
  batches: BatchService;
  /** A batch's output images, a page at a time, with signed links (the dashboard's gallery). */
  gallery: BatchGallery;
  /** Counts across the whole service for operators: batches, image jobs, queues, Vertex jobs. */
  system: SystemStatus;
  webhooks: WebhookService;
  imageJobs: ImageJobService;
  /** The model catalog, cached in memory: read it with `models`, change it with `catalog.save`. */
  catalog: ModelCatalog;
  models(onlyEnabled: boolean): Promise<ModelInfo[]>;
  /** Serialized answers of batch reads, kept until the user's batches change (READ_CACHE_BYTES). */
  readCache: ReadCache;
}

export function createServices(
  deps: Omit<
    Services,
    | 'accounts'
    | 'billing'
    | 'files'
    | 'batches'
    | 'gallery'
    | 'system'
    | 'webhooks'
    | 'imageJobs'
    | 'catalog'
    | 'models'
    | 'readCache'
  >,
): Services {
  const { config, pool, store, queue, links, online } = deps;
  const billing = new BillingService({
    pool,
    onLogged: (type, quotaDelta) => deps.metrics.quotaUnits.inc({ type }, Math.abs(quotaDelta)),
  });
  const batches = new BatchService({ pool, store, queue, completionWindowMs: config.pipeline.completionWindowMs });
  const catalog = new ModelCatalog({
    pool,
    batchRatioOverride: config.billing.batchRatio,
    listener: deps.notifications,
  });
  const models = (onlyEnabled: boolean) => catalog.list(onlyEnabled);
  return {
    ...deps,
    billing,
    accounts: new AccountService({ pool, billing, listener: deps.notifications }),
    files: new FileService({ pool, store }),
    batches,
    gallery: new BatchGallery({ pool, store, links, batches }),
    system: new SystemStatus({ pool, queue }),
    webhooks: new WebhookService({ pool, allowPrivateUrls: config.delivery.webhookAllowPrivateUrls }),
    imageJobs: new ImageJobService({
      pool,
      store,
      queue,
      billing,
      online,
      links,
      config: config.images,
      models: () => models(true),
      visionMaxBytes: config.limits.visionMaxBytes,
    }),
    catalog,
    models,
    readCache: new ReadCache({
      listener: deps.notifications,
      maxBytes: config.readCacheBytes,
      counted: deps.metrics.readCacheRead,
    }),
  };
}
