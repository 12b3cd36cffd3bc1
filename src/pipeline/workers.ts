import { log } from '../logger.ts';
import type { Services } from '../services.ts';
import { handleDeadJob } from './dead-letter.ts';
import { DEAD_LETTER_QUEUE } from './job-queue.ts';
import { PIPELINE_JOBS } from './jobs.ts';
import { sweepJob } from './sweep.ts';

export interface Workers {
  stop(): Promise<void>;
}

/**
 * Registers the pipeline's job handlers on this process (ROLE=all or worker). A handler that
 * throws is retried by pg-boss with exponential backoff; every handler is safe to run twice. A
 * job out of retries goes to the dead-letter queue, whose handler settles what it was for.
 */
export async function startWorkers(s: Services): Promise<Workers> {
  const { workerConcurrency, sweepIntervalMs } = s.config.pipeline;
  for (const job of PIPELINE_JOBS) {
    await s.queue.work(job.name, job.concurrency ?? workerConcurrency, async ({ data }) => {
      const timer = s.metrics.stepDuration.startTimer({ step: job.name });
      try {
        await job.handle(s, data);
      } catch (err) {
        log.warn({ job: job.name, data, err }, 'pipeline step failed; it will be retried');
        throw err;
      } finally {
        timer();
      }
    });
  }
  await s.queue.work(DEAD_LETTER_QUEUE, 1, (dead) => handleDeadJob(s, PIPELINE_JOBS, dead));
  const tick = () => s.queue.send(sweepJob, {}, { key: 'sweep' }).catch((err) => log.warn({ err }, 'sweep not queued'));
  const timer = setInterval(tick, sweepIntervalMs);
  await tick();
  return {
    async stop() {
      clearInterval(timer);
      for (const name of [...PIPELINE_JOBS.map((j) => j.name), DEAD_LETTER_QUEUE]) {
        await s.queue.boss.offWork(name, { wait: true }).catch(() => {});
      }
    },
  };
}
