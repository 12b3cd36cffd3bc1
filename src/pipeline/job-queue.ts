import type pg from 'pg';
import { PgBoss } from 'pg-boss';
import { log } from '../logger.ts';

/** The pipeline's pg-boss queues: one job kind per step. */
export const JOBS = {
  validate: 'batch-validate',
  stage: 'batch-stage',
  submit: 'shard-submit',
  poll: 'shard-poll',
  cancel: 'batch-cancel',
  finalize: 'batch-finalize',
  sweep: 'batch-sweep',
} as const;
export type JobName = (typeof JOBS)[keyof typeof JOBS];

const LONG_STEPS = new Set<string>([JOBS.validate, JOBS.stage, JOBS.finalize]);

export interface SendOptions {
  /** Enqueue on this transaction, so the job exists only if the write that needs it commits. */
  tx?: pg.PoolClient;
  delayMs?: number;
  /** With the `stately` policy: at most one queued and one active job per key. */
  key: string;
}

export class JobQueue {
  readonly boss: PgBoss;

  private constructor(boss: PgBoss) {
    this.boss = boss;
  }

  /**
   * `heartbeatSeconds`: a job whose worker stops sending heartbeats (the process died) is
   * retried after about this long plus `superviseSeconds`, instead of waiting out its expiry.
   */
  static async start(
    connectionString: string,
    opts: { heartbeatSeconds: number; superviseSeconds: number },
  ): Promise<JobQueue> {
    const boss = new PgBoss({
      connectionString,
      schema: 'pgboss',
      max: 5,
      application_name: 'image-batch-gateway-queue',
      superviseIntervalSeconds: opts.superviseSeconds,
    });
    boss.on('error', (err) => log.warn('job queue error', { err }));
    await boss.start();
    for (const name of Object.values(JOBS)) {
      const options = {
        retryLimit: 8,
        retryDelay: 2,
        retryBackoff: true,
        retryDelayMax: 120,
        heartbeatSeconds: opts.heartbeatSeconds,
        // Streaming steps over a 200,000-line batch can take long; heartbeats catch dead workers.
        expireInSeconds: LONG_STEPS.has(name) ? 6 * 3600 : 15 * 60,
      };
      await boss.createQueue(name, { policy: 'stately', ...options });
      // createQueue keeps an existing queue as it was: apply today's settings to it too.
      await boss.updateQueue(name, options);
    }
    return new JobQueue(boss);
  }

  async send(name: JobName, data: object, opts: SendOptions): Promise<void> {
    await this.boss.send(name, data, {
      singletonKey: opts.key,
      ...(opts.delayMs ? { startAfter: new Date(Date.now() + opts.delayMs) } : {}),
      ...(opts.tx
        ? { db: { executeSql: (text: string, values?: unknown[]) => opts.tx!.query(text, values as unknown[]) } }
        : {}),
    });
  }

  async stop(): Promise<void> {
    await this.boss.stop({ graceful: true, timeout: 20_000 });
  }
}
