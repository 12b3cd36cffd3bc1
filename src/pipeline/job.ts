import type { Services } from '../services.ts';

/** pg-boss queue settings a job declares (seconds, as pg-boss takes them). */
export interface QueueSettings {
  /** A running job not finished (or heart-beating) within this long is retried. */
  expireInSeconds: number;
  /** Retries on failure, with exponential backoff; then the job goes to the dead-letter queue. Default JOB_RETRY_LIMIT. */
  retryLimit?: number;
  /**
   * How often an idle worker looks for due jobs of this kind by itself, besides being woken (default
   * 5): the longest a due job can wait when no wake-up reaches it (a delayed job queued by another
   * process, or one a look skipped because pg-boss last saw its key's previous run active).
   */
  idlePollSeconds?: number;
}

/**
 * One pg-boss job: its queue name, payload type, queue settings and handler in one place. `send`
 * is typed by the definition, so a payload cannot drift from what the handler reads.
 */
export interface JobDefinition<P extends object> {
  name: string;
  queue: QueueSettings;
  /** Jobs of this kind one worker process runs at once; default WORKER_CONCURRENCY. */
  concurrency?: number;
  handle(s: Services, data: P): Promise<void>;
  /**
   * The job failed the same way on every try (not a transient outage): settle what it was for,
   * so nothing loops. Called once, from the dead-letter queue.
   */
  onDead?(s: Services, data: P, error: string): Promise<void>;
}

/** Declares a job; the identity function only pins the payload type. */
export function defineJob<P extends object>(definition: JobDefinition<P>): JobDefinition<P> {
  return definition;
}

export type AnyJob = JobDefinition<any>;

/** Streaming steps over a 200,000-line batch can take long; heartbeats catch dead workers sooner. */
export const LONG_STEP: QueueSettings = { expireInSeconds: 6 * 3600 };
export const SHORT_STEP: QueueSettings = { expireInSeconds: 15 * 60 };
