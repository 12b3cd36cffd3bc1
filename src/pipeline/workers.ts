import type { Job } from 'pg-boss';
import { log } from '../logger.ts';
import type { Services } from '../services.ts';
import { cancelBatch } from './cancel.ts';
import { finalizeBatch } from './finalize.ts';
import { JOBS, type JobName } from './job-queue.ts';
import { pollShard } from './poll.ts';
import { stageBatch } from './stage.ts';
import { submitShard } from './submit.ts';
import { sweep } from './sweep.ts';
import { validateBatch } from './validate.ts';

export interface Workers {
  stop(): Promise<void>;
}

type Data = { batchId: string; shardId: string; attempt: number };

/**
 * Registers the pipeline's job handlers on this process (ROLE=all or worker). A handler that
 * throws is retried by pg-boss with exponential backoff; every handler is safe to run twice.
 */
export async function startWorkers(s: Services): Promise<Workers> {
  const { workerConcurrency, sweepIntervalMs } = s.config.pipeline;
  const handlers: Array<[JobName, number, (d: Data) => Promise<void>]> = [
    [JOBS.validate, workerConcurrency, (d) => validateBatch(s, d.batchId)],
    [JOBS.stage, workerConcurrency, (d) => stageBatch(s, d.batchId)],
    [JOBS.submit, workerConcurrency, (d) => submitShard(s, d.shardId)],
    [JOBS.poll, workerConcurrency, (d) => pollShard(s, d.shardId, d.attempt ?? 0)],
    [JOBS.cancel, 1, (d) => cancelBatch(s, d.batchId)],
    [JOBS.finalize, workerConcurrency, (d) => finalizeBatch(s, d.batchId)],
    [JOBS.sweep, 1, () => sweep(s)],
  ];
  for (const [name, localConcurrency, handle] of handlers) {
    await s.queue.boss.work<Data>(
      name,
      { localConcurrency, batchSize: 1, pollingIntervalSeconds: 0.5 },
      async (jobs: Job<Data>[]) => {
        for (const job of jobs) {
          try {
            await handle(job.data);
          } catch (err) {
            log.warn('pipeline step failed; it will be retried', { job: name, data: job.data, err });
            throw err;
          }
        }
      },
    );
  }
  const tick = () =>
    void s.queue.send(JOBS.sweep, {}, { key: 'sweep' }).catch((err) => log.warn('sweep not queued', { err }));
  const timer = setInterval(tick, sweepIntervalMs);
  tick();
  return {
    async stop() {
      clearInterval(timer);
      for (const [name] of handlers) await s.queue.boss.offWork(name, { wait: true }).catch(() => {});
    },
  };
}
