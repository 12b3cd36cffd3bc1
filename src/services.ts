import { AccountService } from './accounts/account-service.ts';
import { BatchService } from './batches/batch-service.ts';
import { BillingService } from './billing/billing-service.ts';
import { listModels, type ModelInfo } from './billing/model-catalog.ts';
import type { Config } from './config.ts';
import type { DatabaseAvailability } from './db/availability.ts';
import type { Pool } from './db/pool.ts';
import { FileService } from './files/file-service.ts';
import { ImageJobService } from './images/image-job-service.ts';
import type { JobQueue } from './pipeline/job-queue.ts';
import type { ObjectStore } from './storage/object-store.ts';
import type { LinkSigner } from './storage/signed-links.ts';
import type { BatchJobs } from './vertex/batch-jobs.ts';
import type { OnlineImages } from './vertex/online-images.ts';
import { WebhookService } from './webhooks/webhook-service.ts';

/** The collaborators every handler and job is given: built once per process. */
export interface Services {
  config: Config;
  pool: Pool;
  /** Whether Postgres is reachable, so an outage is answered 503 and logged once. */
  database: DatabaseAvailability;
  store: ObjectStore;
  /** Signs and checks the links of url-mode images (served without an API key). */
  links: LinkSigner;
  queue: JobQueue;
  vertex: BatchJobs;
  /** Vertex online prediction: one image per generateContent call. */
  online: OnlineImages;
  accounts: AccountService;
  billing: BillingService;
  files: FileService;
  batches: BatchService;
  webhooks: WebhookService;
  imageJobs: ImageJobService;
  models(onlyEnabled: boolean): Promise<ModelInfo[]>;
}

export function createServices(
  deps: Omit<Services, 'accounts' | 'billing' | 'files' | 'batches' | 'webhooks' | 'imageJobs' | 'models'>,
): Services {
  const { config, pool, store, queue, links, online } = deps;
  const billing = new BillingService({ pool });
  const models = (onlyEnabled: boolean) => listModels(pool, config.billing.batchRatio, onlyEnabled);
  return {
    ...deps,
    billing,
    accounts: new AccountService({ pool, billing }),
    files: new FileService({ pool, store }),
    batches: new BatchService({ pool, store, queue, completionWindowMs: config.pipeline.completionWindowMs }),
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
    models,
  };
}
