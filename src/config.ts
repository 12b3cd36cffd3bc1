import path from 'node:path';

/**
 * One typed configuration object, read from the environment at start (never at import
 * time) and validated as a whole: every bad variable is reported, not just the first.
 */
export type Role = 'all' | 'api' | 'worker';
export type JobFault = 'none' | 'fail' | 'stuck';
/** `full`: a placeholder rendered per request at the requested size; `tiny`: one small image made once (scale runs). */
export type EmulatorImage = 'full' | 'tiny';

/** The longest IMAGE_JOB_TTL: a run must end before pg-boss's 24 h bound on its queue. */
const MAX_IMAGE_JOB_TTL_MS = 23 * 3_600_000;

/** Vertex methods whose Nth call the emulator can answer with a transport fault. */
export const VERTEX_METHODS = [
  'CreateBatchPredictionJob',
  'GetBatchPredictionJob',
  'ListBatchPredictionJobs',
  'CancelBatchPredictionJob',
  'DeleteBatchPredictionJob',
  'GetOperation',
  'GenerateContent',
] as const;

export interface TransportFault {
  method: string;
  /** 1-based: the Nth call of that method. */
  call: number;
  /** An HTTP error status, or `hang`: no answer until the caller gives up (a call lost on the way). */
  status: 429 | 500 | 503 | 504 | 'hang';
}

export interface Config {
  role: Role;
  port: number;
  host: string;
  dataDir: string;
  /** External Postgres; when null an embedded server runs under `${dataDir}/postgres`. */
  databaseUrl: string | null;
  embeddedPostgresPort: number;
  adminToken: string | null;
  /** Bearer token `/metrics` asks for; null: `/metrics` is open (keep it off the public network then). */
  metricsToken: string | null;
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Memory for the answers clients poll most (a batch, a page of batches) per process; 0: none kept. */
  readCacheBytes: number;

  /** Google Cloud: when project, location and bucket are all set, no emulator is started. */
  google: {
    project: string;
    location: string;
    bucket: string;
    /** Explicit endpoints (emulators running elsewhere); null = Google's, or the in-process emulators. */
    gcsApiEndpoint: string | null;
    vertexApiEndpoint: string | null;
    useEmulators: boolean;
  };
  emulator: {
    gcsPort: number;
    vertexPort: number;
    queueMs: number;
    /** A job still QUEUED this long after creation ends JOB_STATE_EXPIRED (Vertex: 72 h). */
    queueExpireMs: number;
    lineMs: number;
    slowMs: number;
    /** How long an online `:generateContent` call takes before it answers. */
    onlineMs: number;
    imagePadBytes: number;
    /** What the emulated model answers with: see EmulatorImage. */
    image: EmulatorImage;
    /** Batch jobs running at once (Vertex's capacity); the others wait QUEUED. 0: no limit. */
    maxRunningJobs: number;
    jobFault: JobFault;
    transportFaults: TransportFault[];
  };

  limits: {
    visionMaxBytes: number;
    batchUploadMaxBytes: number;
    batchMaxRequests: number;
    shardMaxRequests: number;
    shardMaxBytes: number;
    maxErrorsListed: number;
  };
  billing: {
    /** Global override of every model's batch ratio; null keeps each model's own. */
    batchRatio: string | null;
  };
  pipeline: {
    pollIntervalMs: number;
    pollMaxIntervalMs: number;
    completionWindowMs: number;
    sweepIntervalMs: number;
    workerConcurrency: number;
    jobHeartbeatSeconds: number;
    /** Tries of a failing step after the first, with backoff, before it is dead-lettered. */
    jobRetryLimit: number;
    jobSuperviseSeconds: number;
  };
  /** How results reach clients: file retention, image links, webhooks. */
  delivery: {
    /**
     * The absolute base of links that skip authentication (url-mode images); null = this
     * process's own address (`http://HOST:PORT`, the port actually bound).
     */
    publicUrl: string | null;
    /** Batch inputs, outputs, error files and url-mode images are deleted this long after creation. */
    fileRetentionMs: number;
    /** A url-mode image link works this long after it was made (when its output line was written). */
    imageUrlTtlMs: number;
    /** Key of link signatures; null = one generated at first start and kept in Postgres. */
    urlSigningSecret: string | null;
    /** Lets webhooks reach loopback, private and link-local addresses (tests, private deployments). */
    webhookAllowPrivateUrls: boolean;
    /** First delay before a failed webhook delivery is tried again (doubling, up to an hour, for 72 h). */
    webhookRetryBaseMs: number;
  };
  /** Single images on Vertex online prediction: sync calls and async image jobs. */
  images: {
    /** A sync request still running this long answers 504 and is refunded in full. */
    syncTimeoutMs: number;
    /** Sync requests one user may have running at once; more answer 429. */
    userMaxConcurrentRequests: number;
    /** An async image job not finished this long after it was made ends `expired`, refunded. */
    jobTtlMs: number;
    /** Lets image URLs (task API `images`, `mask`) reach loopback and private addresses (tests, private deployments). */
    fetchAllowPrivateUrls: boolean;
    /** How long fetching one image URL may take. */
    fetchTimeoutMs: number;
    /**
     * One generateContent call not answered this long is given up and tried again (within the
     * deadline). As long as SYNC_TIMEOUT_MS by default: a slow image is never cut for a sync
     * request, and an async job still gets over a lost call.
     */
    callTimeoutMs: number;
  };
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;

/** Reads one variable at a time, collecting problems instead of throwing on the first. */
class EnvReader {
  readonly problems: string[] = [];
  private readonly env: Env;
  constructor(env: Env) {
    this.env = env;
  }

  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  str(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  int(name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
      this.problems.push(`${name} must be a whole number from ${min} to ${max} (got '${v}')`);
      return fallback;
    }
    return Number(v);
  }

  /** Byte sizes: plain numbers or with a unit (`20MiB`, `2GiB`, `512KB`). */
  bytes(name: string, fallback: number): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const m = /^(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?$/i.exec(v);
    if (!m) {
      this.problems.push(`${name} must be a byte size such as 1048576, 20MiB or 2GiB (got '${v}')`);
      return fallback;
    }
    const unit = (m[2] ?? 'B').toLowerCase();
    const mult: Record<string, number> = { b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 1024 ** 2, gb: 1e9, gib: 1024 ** 3 };
    return Number(m[1]) * mult[unit];
  }

  /** Durations: milliseconds, or with a unit (`500ms`, `30s`, `15m`, `24h`). */
  duration(name: string, fallbackMs: number): number {
    const v = this.raw(name);
    if (v === undefined) return fallbackMs;
    const m = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(v);
    if (!m) {
      this.problems.push(`${name} must be a duration such as 5000, 30s, 15m or 24h (got '${v}')`);
      return fallbackMs;
    }
    const mult: Record<string, number> = { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5 };
    return Number(m[1]) * mult[m[2] ?? 'ms'];
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw(name)?.toLowerCase();
    if (v === undefined) return fallback;
    if (['true', '1', 'yes'].includes(v)) return true;
    if (['false', '0', 'no'].includes(v)) return false;
    this.problems.push(`${name} must be true or false (got '${v}')`);
    return fallback;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(v)) {
      this.problems.push(`${name} must be one of ${allowed.join(', ')} (got '${v}')`);
      return fallback;
    }
    return v as T;
  }

  url(name: string): string | null {
    const v = this.raw(name);
    if (v === undefined) return null;
    try {
      new URL(v);
      return v;
    } catch {
      this.problems.push(`${name} must be a URL (got '${v}')`);
      return null;
    }
  }
}

/** `GetBatchPredictionJob:3:503,CreateBatchPredictionJob:1:429` → transport faults. */
export function parseTransportFaults(spec: string | undefined, problems: string[] = []): TransportFault[] {
  if (!spec) return [];
  const faults: TransportFault[] = [];
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const m = /^([A-Za-z]+):(\d+):(429|500|503|504|hang)$/.exec(part);
    if (!m || !(VERTEX_METHODS as readonly string[]).includes(m[1]) || Number(m[2]) < 1) {
      problems.push(
        `VERTEX_EMULATOR_FAULTS entries look like Method:N:429|500|503|504|hang with N ≥ 1 and Method one of ${VERTEX_METHODS.join(', ')} (got '${part}')`,
      );
      continue;
    }
    const status = m[3] === 'hang' ? 'hang' : (Number(m[3]) as Exclude<TransportFault['status'], 'hang'>);
    faults.push({ method: m[1], call: Number(m[2]), status });
  }
  return faults;
}

/** Emulator settings alone: shared by the service and the standalone `npm run emulators`. */
export function readEmulatorSettings(r: EnvReader, standalone: boolean): Config['emulator'] {
  return {
    gcsPort: r.int('GCS_EMULATOR_PORT', standalone ? 4443 : 0, 0, 65535),
    vertexPort: r.int('VERTEX_EMULATOR_PORT', standalone ? 8090 : 0, 0, 65535),
    queueMs: r.duration('VERTEX_EMULATOR_QUEUE_MS', 2000),
    queueExpireMs: r.duration('VERTEX_EMULATOR_QUEUE_EXPIRE_MS', 72 * 3_600_000),
    lineMs: r.duration('VERTEX_EMULATOR_LINE_MS', 20),
    slowMs: r.duration('VERTEX_EMULATOR_SLOW_MS', 2000),
    onlineMs: r.duration('VERTEX_EMULATOR_ONLINE_MS', 1500),
    imagePadBytes: r.bytes('VERTEX_EMULATOR_IMAGE_PAD_BYTES', 0),
    image: r.oneOf('VERTEX_EMULATOR_IMAGE', ['full', 'tiny'] as const, 'full'),
    maxRunningJobs: r.int('VERTEX_EMULATOR_MAX_RUNNING_JOBS', 0, 0, 10_000),
    jobFault: r.oneOf('VERTEX_EMULATOR_JOB_FAULT', ['none', 'fail', 'stuck'] as const, 'none'),
    transportFaults: parseTransportFaults(r.raw('VERTEX_EMULATOR_FAULTS'), r.problems),
  };
}

export function loadEmulatorConfig(env: Env = process.env): { dataDir: string; emulator: Config['emulator'] } {
  const r = new EnvReader(env);
  const emulator = readEmulatorSettings(r, true);
  if (r.problems.length) throw new ConfigError(r.problems);
  return { dataDir: path.resolve(r.str('DATA_DIR', './data')), emulator };
}

export function loadConfig(env: Env = process.env): Config {
  const r = new EnvReader(env);
  const project = r.raw('GOOGLE_CLOUD_PROJECT');
  const location = r.raw('VERTEX_LOCATION');
  const bucket = r.raw('GCS_BUCKET');
  const onGoogle = Boolean(project && location && bucket);
  const gcsApiEndpoint = r.url('GCS_API_ENDPOINT');
  const vertexApiEndpoint = r.url('VERTEX_API_ENDPOINT');
  if (!onGoogle && (project || location) && !(gcsApiEndpoint && vertexApiEndpoint)) {
    r.problems.push(
      'GOOGLE_CLOUD_PROJECT, VERTEX_LOCATION and GCS_BUCKET go together: set all three to use Google Cloud, or none for the local emulators',
    );
  }

  const adminToken = r.raw('ADMIN_TOKEN') ?? null;
  if (adminToken !== null && adminToken.length < 16) r.problems.push('ADMIN_TOKEN must be at least 16 characters');
  const metricsToken = r.raw('METRICS_TOKEN') ?? null;
  if (metricsToken !== null && metricsToken.length < 16)
    r.problems.push('METRICS_TOKEN must be at least 16 characters');

  const batchRatio = r.raw('BATCH_RATIO') ?? null;
  if (batchRatio !== null && !(/^(0(\.\d{1,4})?|1(\.0{1,4})?)$/.test(batchRatio) && Number(batchRatio) > 0)) {
    r.problems.push(`BATCH_RATIO must be a decimal in (0, 1] with at most 4 places (got '${batchRatio}')`);
  }

  const config: Config = {
    role: r.oneOf('ROLE', ['all', 'api', 'worker'] as const, 'all'),
    port: r.int('PORT', 8080, 0, 65535),
    host: r.str('HOST', '127.0.0.1'),
    dataDir: path.resolve(r.str('DATA_DIR', './data')),
    databaseUrl: r.raw('DATABASE_URL') ?? null,
    embeddedPostgresPort: r.int('EMBEDDED_POSTGRES_PORT', 0, 0, 65535),
    adminToken,
    metricsToken,
    logLevel: r.oneOf('LOG_LEVEL', ['debug', 'info', 'warn', 'error', 'silent'] as const, 'info'),
    readCacheBytes: r.bytes('READ_CACHE_BYTES', 32 * 1024 ** 2),
    google: {
      project: project ?? 'local-project',
      location: location ?? 'us-central1',
      bucket: bucket ?? 'image-batch-gateway',
      gcsApiEndpoint,
      vertexApiEndpoint,
      useEmulators: !onGoogle && !(gcsApiEndpoint && vertexApiEndpoint),
    },
    emulator: readEmulatorSettings(r, false),
    limits: {
      visionMaxBytes: r.bytes('VISION_MAX_BYTES', 20 * 1024 ** 2),
      batchUploadMaxBytes: r.bytes('BATCH_UPLOAD_MAX_BYTES', 2 * 1024 ** 3),
      // Up to 10 million: validation keeps every custom_id in memory to find duplicates (16 bytes
      // each in a table at most 3/4 full: 32 MB for a million lines, 256 MB for ten million).
      batchMaxRequests: r.int('BATCH_MAX_REQUESTS', 200_000, 1, 10_000_000),
      shardMaxRequests: r.int('SHARD_MAX_REQUESTS', 10_000, 1, 200_000),
      shardMaxBytes: r.bytes('SHARD_MAX_BYTES', 500 * 1024 ** 2),
      maxErrorsListed: r.int('BATCH_MAX_ERRORS_LISTED', 100, 1, 10_000),
    },
    billing: { batchRatio },
    pipeline: {
      pollIntervalMs: r.duration('POLL_INTERVAL_MS', 1_000),
      pollMaxIntervalMs: r.duration('POLL_MAX_INTERVAL_MS', 300_000),
      completionWindowMs: r.duration('BATCH_COMPLETION_WINDOW', 24 * 36e5),
      sweepIntervalMs: r.duration('SWEEP_INTERVAL_MS', 60_000),
      workerConcurrency: r.int('WORKER_CONCURRENCY', 4, 1, 64),
      jobHeartbeatSeconds: r.int('JOB_HEARTBEAT_SECONDS', 30, 10, 3600),
      jobSuperviseSeconds: r.int('JOB_SUPERVISE_SECONDS', 30, 1, 3600),
      jobRetryLimit: r.int('JOB_RETRY_LIMIT', 8, 0, 100),
    },
    delivery: {
      publicUrl: r.url('PUBLIC_URL')?.replace(/\/+$/, '') ?? null,
      fileRetentionMs: r.duration('FILE_RETENTION', 30 * 864e5),
      imageUrlTtlMs: r.duration('IMAGE_URL_TTL', 7 * 864e5),
      urlSigningSecret: r.raw('URL_SIGNING_SECRET') ?? null,
      webhookAllowPrivateUrls: r.bool('WEBHOOK_ALLOW_PRIVATE_URLS', false),
      webhookRetryBaseMs: r.duration('WEBHOOK_RETRY_BASE', 10_000),
    },
    images: {
      syncTimeoutMs: r.duration('SYNC_TIMEOUT_MS', 120_000),
      userMaxConcurrentRequests: r.int('USER_MAX_CONCURRENT_REQUESTS', 8, 1, 10_000),
      jobTtlMs: r.duration('IMAGE_JOB_TTL', 3_600_000),
      fetchAllowPrivateUrls: r.bool('FETCH_ALLOW_PRIVATE_URLS', false),
      fetchTimeoutMs: r.duration('FETCH_TIMEOUT_MS', 30_000),
      callTimeoutMs: r.duration('VERTEX_CALL_TIMEOUT_MS', 120_000),
    },
  };
  const secret = config.delivery.urlSigningSecret;
  if (secret !== null && secret.length < 32) r.problems.push('URL_SIGNING_SECRET must be at least 32 characters');
  if (config.delivery.imageUrlTtlMs < 1000) r.problems.push('IMAGE_URL_TTL must be at least 1s');
  // A zero delay would hammer a failing endpoint for 72 h.
  if (config.delivery.webhookRetryBaseMs < 100) r.problems.push('WEBHOOK_RETRY_BASE must be at least 100ms');
  if (config.images.syncTimeoutMs < 1000) r.problems.push('SYNC_TIMEOUT_MS must be at least 1s');
  if (config.images.jobTtlMs < 1000) r.problems.push('IMAGE_JOB_TTL must be at least 1s');
  // A run is bounded by its job's expiry; pg-boss bounds it at 24 h (the image-generate queue).
  if (config.images.jobTtlMs > MAX_IMAGE_JOB_TTL_MS) r.problems.push('IMAGE_JOB_TTL must be at most 23h');
  if (config.images.fetchTimeoutMs < 100) r.problems.push('FETCH_TIMEOUT_MS must be at least 100ms');
  if (config.images.callTimeoutMs < 100) r.problems.push('VERTEX_CALL_TIMEOUT_MS must be at least 100ms');
  // The shortest gap between two looks at one Vertex job: zero would ask Vertex in a loop.
  if (config.pipeline.pollIntervalMs < 100) r.problems.push('POLL_INTERVAL_MS must be at least 100ms');
  if (config.pipeline.pollMaxIntervalMs < config.pipeline.pollIntervalMs) {
    r.problems.push('POLL_MAX_INTERVAL_MS must not be below POLL_INTERVAL_MS');
  }
  if (r.problems.length) throw new ConfigError(r.problems);
  return config;
}
