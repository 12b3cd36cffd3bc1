import type pg from 'pg';
import { type ConstructorOptions, type Job, PgBoss } from 'pg-boss';
import { markDatabaseError } from '../db/availability.ts';
import { DatabaseClient } from '../db/pool.ts';
import type { AnyJob, JobDefinition } from './job.ts';

/** Jobs that used up their retries land here (pg-boss's dead-letter queue), for operators to see. */
export const DEAD_LETTER_QUEUE = 'dead-jobs';

export interface SendOptions {
  /** Enqueue on this transaction, so the job exists only if the write that needs it commits. */
  tx?: pg.PoolClient;
  delayMs?: number;
  /** With the `stately` policy: at most one queued and one active job per key. */
  key: string;
}

export interface QueueOptions {
  jobs: readonly AnyJob[];
  /**
   * A job whose worker stops sending heartbeats (the process died) is retried after about this
   * long plus `superviseSeconds`, instead of waiting out its expiry.
   */
  heartbeatSeconds: number;
  superviseSeconds: number;
  retryLimit: number;
  /** Errors of the queue's own connections (a database outage shows here too). */
  onError(err: unknown): void;
}

export interface DeadJob {
  id: string;
  /** The queue the job failed in, e.g. `batch-validate`. */
  job: string;
  data: unknown;
  error: unknown;
  retries: number;
  failedAt: Date;
}

export interface QueueCounts {
  /** The queue (the job's name), e.g. `batch-validate`. */
  name: string;
  queued: number;
  active: number;
  deferred: number;
}

/**
 * How often an idle worker looks for due jobs by itself while NOTIFY works, unless its job says
 * otherwise (`idlePollSeconds`). Only what nothing wakes waits for it: a retry after a failure, a
 * delayed job queued by another process.
 */
const IDLE_POLL_SECONDS = 5;
/** While LISTEN does not work (refused, or its connection being restored): look as often as pg-boss allows. */
const FALLBACK_POLL_SECONDS = 0.5;
/** A delayed job's wake-up comes this much after its start time, so the fetch surely finds it due. */
const WAKE_MARGIN_MS = 20;

export class JobQueue {
  readonly boss: PgBoss;
  private running = false;
  /** This process's pg-boss worker ids by queue: one of them is woken when a delayed job falls due. */
  private readonly workerIds = new Map<string, string[]>();
  private readonly idlePollSeconds = new Map<string, number>();
  private readonly wakeTimers = new Set<NodeJS.Timeout>();
  private wakes = 0;

  private constructor(boss: PgBoss) {
    this.boss = boss;
  }

  static async start(connectionString: string, opts: QueueOptions): Promise<JobQueue> {
    const options: ConstructorOptions & { Client: typeof DatabaseClient } = {
      // pg-boss hands its options to its pg.Pool: a refused connection of a call through the queue
      // (an admin page, a metrics scrape) is then known as the database's.
      Client: DatabaseClient,
      connectionString,
      schema: 'pgboss',
      max: 5,
      application_name: 'image-batch-gateway-queue',
      superviseIntervalSeconds: opts.superviseSeconds,
      // pg-boss fails missed heartbeats (and expiries) in its monitor pass, and skips a key it last
      // saw active until its queue cache is refreshed: both 60 s apart by default, whatever the
      // supervise interval. Tied to it, a dead worker's job is retried after about heartbeat + supervise.
      monitorIntervalSeconds: opts.superviseSeconds,
      queueCacheIntervalSeconds: opts.superviseSeconds,
      // A step queued by any process wakes the workers of its queue through Postgres NOTIFY (one
      // more connection, listening): no polling gap between the steps of a batch.
      useListenNotify: true,
    };
    const boss = new PgBoss(options);
    // pg-boss reports copies of its connections' errors, unmarked; it talks to nothing but Postgres.
    boss.on('error', (err) => opts.onError(markDatabaseError(err)));
    await boss.start();
    // Dead jobs are kept for operators; the queue itself never retries or dead-letters.
    await upsertQueue(boss, DEAD_LETTER_QUEUE, {
      retryLimit: 0,
      expireInSeconds: 15 * 60,
      retentionSeconds: 30 * 86400,
    });
    for (const job of opts.jobs) {
      await upsertQueue(boss, job.name, {
        retryLimit: job.queue.retryLimit ?? opts.retryLimit,
        retryDelay: 1,
        retryBackoff: true,
        retryDelayMax: 120,
        heartbeatSeconds: opts.heartbeatSeconds,
        expireInSeconds: job.queue.expireInSeconds,
        deadLetter: DEAD_LETTER_QUEUE,
      });
    }
    const queue = new JobQueue(boss);
    for (const job of opts.jobs) queue.idlePollSeconds.set(job.name, job.queue.idlePollSeconds ?? IDLE_POLL_SECONDS);
    queue.running = true;
    return queue;
  }

  async send<P extends object>(job: JobDefinition<P>, data: P, opts: SendOptions): Promise<void> {
    const tx = opts.tx;
    await this.boss.send(job.name, data, {
      singletonKey: opts.key,
      ...(opts.delayMs ? { startAfter: new Date(Date.now() + opts.delayMs) } : {}),
      ...(tx ? { db: { executeSql: (text: string, values?: unknown[]) => tx.query(text, values as unknown[]) } } : {}),
    });
    // NOTIFY wakes workers only for jobs due now: a delayed one (a shard's next poll) is
    // fetched on time by a worker of this process woken when it falls due.
    if (opts.delayMs) this.wakeAfter(job.name, opts.delayMs + WAKE_MARGIN_MS);
  }

  private wakeAfter(name: string, ms: number): void {
    if (!this.running || !this.workerIds.has(name)) return;
    const timer = setTimeout(() => {
      this.wakeTimers.delete(timer);
      const ids = this.workerIds.get(name);
      // One worker: if it is busy it looks again as soon as its job is done.
      if (this.running && ids?.length) this.boss.notifyWorker(ids[this.wakes++ % ids.length]);
    }, ms);
    this.wakeTimers.add(timer);
  }

  /** Runs `handle` for each job of this kind, `concurrency` at a time, with the job's metadata. */
  async work(name: string, concurrency: number, handle: (job: Job<object>) => Promise<void>): Promise<void> {
    const ids: string[] = [];
    this.workerIds.set(name, ids);
    // One pg-boss worker per slot, so that each can be woken on its own: after a job it looks for
    // the next one at once (a backlog drains at full speed, not one job per polling interval).
    for (let slot = 0; slot < concurrency; slot++) {
      let id: string | undefined;
      id = await this.boss.work<object>(
        name,
        {
          batchSize: 1,
          pollingIntervalSeconds: FALLBACK_POLL_SECONDS,
          notifyPollingIntervalSeconds: this.idlePollSeconds.get(name) ?? IDLE_POLL_SECONDS,
          includeMetadata: true,
        },
        async (jobs) => {
          try {
            for (const job of jobs) await handle(job);
          } finally {
            if (id) this.boss.notifyWorker(id);
          }
        },
      );
      ids.push(id);
    }
  }

  /** The keys of this kind's jobs waiting to run (a delayed one included, or one waiting for its retry). */
  async waitingKeys(job: AnyJob): Promise<Set<string>> {
    const jobs = await this.boss.findJobs(job.name, { queued: true });
    return new Set(jobs.flatMap((j) => (j.singletonKey ? [j.singletonKey] : [])));
  }

  /** Resolves when the queue is running and its own database connection answers. */
  async ping(): Promise<void> {
    if (!this.running) throw new Error('the job queue is stopped');
    if (!(await this.boss.isInstalled())) throw new Error('the job queue schema is missing');
  }

  /** Jobs that used up their retries, newest first. */
  async deadJobs(limit: number): Promise<DeadJob[]> {
    const jobs = await this.boss.findJobs(DEAD_LETTER_QUEUE);
    return jobs
      .map((j) => {
        const m = j as typeof j & { sourceName?: string; sourceOutput?: unknown; sourceRetryCount?: number };
        return {
          id: j.id,
          job: m.sourceName ?? 'unknown',
          data: j.data,
          error: m.sourceOutput ?? null,
          retries: m.sourceRetryCount ?? 0,
          failedAt: j.createdOn,
        };
      })
      .sort((a, b) => b.failedAt.getTime() - a.failedAt.getTime())
      .slice(0, limit);
  }

  /**
   * Per queue: jobs ready to run, running, and waiting for a later start (retries, polls); and
   * the dead-letter queue's size apart. As pg-boss last counted them: its monitor pass, every
   * JOB_SUPERVISE_SECONDS, so up to that much behind.
   */
  async queueCounts(): Promise<{ queues: QueueCounts[]; deadJobs: number }> {
    const all = await this.boss.getQueues();
    const dead = all.find((q) => q.name === DEAD_LETTER_QUEUE);
    return {
      queues: all
        .filter((q) => q.name !== DEAD_LETTER_QUEUE)
        .map((q) => ({ name: q.name, queued: q.readyCount, active: q.activeCount, deferred: q.deferredCount }))
        .sort((a, b) => a.name.localeCompare(b.name)),
      deadJobs: dead?.totalCount ?? 0,
    };
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const timer of this.wakeTimers) clearTimeout(timer);
    this.wakeTimers.clear();
    await this.boss.stop({ graceful: true, timeout: 20_000 });
  }
}

/** createQueue keeps an existing queue as it was: apply today's settings to it too. */
async function upsertQueue(boss: PgBoss, name: string, options: Record<string, unknown>): Promise<void> {
  // Every queue NOTIFYs when a job is queued ready to run (see useListenNotify above).
  const settings = { notify: true, ...options };
  await boss.createQueue(name, { policy: 'stately', ...settings });
  await boss.updateQueue(name, settings);
}
