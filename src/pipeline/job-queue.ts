import type pg from 'pg';
import { type Job, PgBoss } from 'pg-boss';
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

export class JobQueue {
  readonly boss: PgBoss;
  private running = false;

  private constructor(boss: PgBoss) {
    this.boss = boss;
  }

  static async start(connectionString: string, opts: QueueOptions): Promise<JobQueue> {
    const boss = new PgBoss({
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
    });
    boss.on('error', opts.onError);
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
  }

  /** Runs `handle` for each job of this kind, `concurrency` at a time, with the job's metadata. */
  async work(name: string, concurrency: number, handle: (job: Job<object>) => Promise<void>): Promise<void> {
    await this.boss.work<object>(
      name,
      { localConcurrency: concurrency, batchSize: 1, pollingIntervalSeconds: 0.5, includeMetadata: true },
      async (jobs) => {
        for (const job of jobs) await handle(job);
      },
    );
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

  async stop(): Promise<void> {
    this.running = false;
    await this.boss.stop({ graceful: true, timeout: 20_000 });
  }
}

/** createQueue keeps an existing queue as it was: apply today's settings to it too. */
async function upsertQueue(boss: PgBoss, name: string, options: Record<string, unknown>): Promise<void> {
  await boss.createQueue(name, { policy: 'stately', ...options });
  await boss.updateQueue(name, options);
}
