import { countBatchesByStatus } from './batches/batch-queries.ts';
import { BATCH_STATUSES, type BatchStatus } from './batches/batch-states.ts';
import type { Pool } from './db/pool.ts';
import { countImageJobsByStatus, IMAGE_JOB_STATUSES, type ImageJobStatus } from './images/image-job-queries.ts';
import type { JobQueue, QueueCounts } from './pipeline/job-queue.ts';
import { countShardsInFlight } from './pipeline/shard-queries.ts';

export interface SystemSnapshot {
  /** Every batch status, zeros included. */
  batches: Record<BatchStatus, number>;
  /** Every image job status, zeros included. */
  imageJobs: Record<ImageJobStatus, number>;
  queues: QueueCounts[];
  vertexJobsInFlight: number;
  deadJobs: number;
}

/** What the whole service is doing, for operators (`GET /admin/system`): counts only, no tenant data. */
export class SystemStatus {
  private readonly pool: Pool;
  private readonly queue: JobQueue;

  constructor(deps: { pool: Pool; queue: JobQueue }) {
    this.pool = deps.pool;
    this.queue = deps.queue;
  }

  async snapshot(): Promise<SystemSnapshot> {
    const [batches, imageJobs, inFlight, queues] = await Promise.all([
      countBatchesByStatus(this.pool),
      countImageJobsByStatus(this.pool),
      countShardsInFlight(this.pool),
      this.queue.queueCounts(),
    ]);
    return {
      batches: everyStatus(BATCH_STATUSES, batches),
      imageJobs: everyStatus(IMAGE_JOB_STATUSES, imageJobs),
      queues: queues.queues,
      vertexJobsInFlight: inFlight,
      deadJobs: queues.deadJobs,
    };
  }
}

/** A count for each status, in the order the statuses are declared; 0 for those with none. */
function everyStatus<S extends string>(statuses: readonly S[], counts: Map<S, number>): Record<S, number> {
  return Object.fromEntries(statuses.map((s) => [s, counts.get(s) ?? 0])) as Record<S, number>;
}
