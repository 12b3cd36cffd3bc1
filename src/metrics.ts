import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { BATCH_STATUSES } from './batches/batch-states.ts';
import type { ReadResult } from './http/read-cache.ts';
import type { QueueCounts } from './pipeline/job-queue.ts';

/** What the gauges read from at scrape time: the database and the job queue. */
interface MetricSources {
  /** Batches per status, deleted ones left out; a status absent from the map has none. */
  batchCounts(): Promise<Map<string, number>>;
  queueCounts(): Promise<{ queues: QueueCounts[]; deadJobs: number }>;
}

/** pg-boss's own queues (e.g. `__pgboss__send-it`): not the service's jobs. */
const PG_BOSS_INTERNAL = '__pgboss__';

/** The label of requests no route answered (an unknown path, or refused before routing). */
export const UNMATCHED_ROUTE = 'unmatched';

/** gRPC status names by code: the `code` label of Vertex calls. */
const GRPC_CODES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
];

/**
 * The status name of a finished Vertex call: the gRPC code the client reports (it maps HTTP
 * statuses to them too), the errno of a connection that failed (`ECONNREFUSED`), else UNKNOWN.
 */
function vertexCallCode(err: unknown): string {
  if (err === null || err === undefined) return 'OK';
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'number') return GRPC_CODES[code] ?? 'UNKNOWN';
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  return 'UNKNOWN';
}

/**
 * Process metrics (CPU, memory, event loop lag, GC, handles) belong to the process, not to one
 * service in it: one registry per process, filled once. (collectDefaultMetrics adds a GC observer
 * and an event loop monitor on every call and never removes them; tests run many services.)
 */
let processRegistry: Registry | null = null;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/**
 * The service's Prometheus metrics, one registry per running service. Counters and histograms
 * are fed where things happen (the HTTP app, the job runner, the Vertex clients, the ledger);
 * gauges are read from Postgres and the queue when scraped.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly contentType = this.registry.contentType;

  readonly httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method, route pattern (e.g. /v1/batches/:id; "unmatched" when no route answered) and status.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
    registers: [this.registry],
  });

  readonly stepDuration = new Histogram({
    name: 'ibg_pipeline_step_duration_seconds',
    help: 'Time one run of a pipeline job took (failed runs too), by job name (batch-validate, shard-poll, …).',
    labelNames: ['step'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registers: [this.registry],
  });

  readonly vertexRequests = new Counter({
    name: 'ibg_vertex_requests_total',
    help: 'Calls to Vertex AI through its official clients (after their own retries), by RPC method and final status (OK, UNAVAILABLE, …).',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });

  readonly quotaUnits = new Counter({
    name: 'ibg_quota_units_total',
    help: 'Quota units moved by committed billing log rows, by log type, as absolute values: topup adds them, pre_deduction takes them, difference gives them back.',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });

  readonly readCacheReads = new Counter({
    name: 'ibg_read_cache_reads_total',
    help: 'Batch reads (a batch, a page of batches) by where the answer came from: hit (memory), miss (not in memory: read from Postgres or waiting for the same read, then kept unless a change overtook it), bypass (Postgres, not kept: cache off, its listener down, or a change of that user under way here).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  /** Its children, made once: prom-client would sort and join the labels on every read. */
  private readonly readCacheResults = new Map(
    (['hit', 'miss', 'bypass'] as const).map((result) => [result, this.readCacheReads.labels(result)]),
  );

  private sources: MetricSources | null = null;
  /** The queue's counts of this scrape: read once for both gauges that show them. */
  private queueReading: Promise<Awaited<ReturnType<MetricSources['queueCounts']>> | null> = Promise.resolve(null);

  constructor() {
    const metrics = this;
    new Gauge({
      name: 'ibg_batches',
      help: 'Batches in each status (deleted ones left out), counted in Postgres when scraped.',
      labelNames: ['status'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        const counts = await metrics.read((s) => s.batchCounts());
        // Every status, zeros too: a series that appears only once it is non-zero cannot be alerted on.
        if (counts) for (const status of BATCH_STATUSES) this.set({ status }, counts.get(status) ?? 0);
      },
    });
    new Gauge({
      name: 'ibg_queue_depth',
      help: 'Pipeline jobs per queue (job name) and state: ready to run, running (active), or waiting for a later start (deferred: retries, polls). As the job queue last counted them (every JOB_SUPERVISE_SECONDS).',
      labelNames: ['job', 'state'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const q of (await metrics.queueReading)?.queues ?? []) {
          if (q.name.startsWith(PG_BOSS_INTERNAL)) continue;
          this.set({ job: q.name, state: 'ready' }, q.queued);
          this.set({ job: q.name, state: 'active' }, q.active);
          this.set({ job: q.name, state: 'deferred' }, q.deferred);
        }
      },
    });
    new Gauge({
      name: 'ibg_dead_jobs',
      help: 'Pipeline jobs that used up their retries and are kept in the dead-letter queue (GET /admin/dead-jobs).',
      registers: [this.registry],
      async collect() {
        this.reset();
        const counts = await metrics.queueReading;
        if (counts) this.set(counts.deadJobs);
      },
    });
  }

  /** Where the gauges read from (known once the queue has started). */
  readFrom(sources: MetricSources): void {
    this.sources = sources;
  }

  /**
   * A gauge's reading, or null (the gauge is left empty) when there is nothing to read from yet
   * or Postgres does not answer: the scrape still shows the process and the counters.
   */
  private async read<T>(get: (s: MetricSources) => Promise<T>): Promise<T | null> {
    if (!this.sources) return null;
    try {
      return await get(this.sources);
    } catch {
      return null;
    }
  }

  /** A finished Vertex call: feed it to `ibg_vertex_requests_total`. */
  readonly vertexCall = (method: string, err: unknown): void => {
    this.vertexRequests.inc({ method, code: vertexCallCode(err) });
  };

  /** A batch read answered: feed it to `ibg_read_cache_reads_total`. */
  readonly readCacheRead = (result: ReadResult): void => {
    this.readCacheResults.get(result)?.inc();
  };

  /** Process metrics, then the service's: Prometheus' text format. */
  async render(): Promise<string> {
    this.queueReading = this.read((s) => s.queueCounts());
    return (await processMetrics().metrics()) + (await this.registry.metrics());
  }
}
