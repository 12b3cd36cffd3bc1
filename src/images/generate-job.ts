import { defineJob } from '../pipeline/job.ts';

/**
 * Runs one async image job (`?async=true`, the task API). Keyed by the job id, so it is queued at
 * most once at a time; a worker that dies mid-call leaves it to be run again, which makes only
 * the images not yet recorded. A job that keeps failing is settled by the dead-letter handler.
 */
export const generateImageJob = defineJob<{ jobId: string }>({
  name: 'image-generate',
  // Heartbeats catch a dead worker; a live run ends by the job's own expiry (IMAGE_JOB_TTL, at
  // most MAX_IMAGE_JOB_TTL_MS), before this bound could start a second run beside it.
  queue: { expireInSeconds: 24 * 3600 },
  concurrency: 16,
  async handle(s, { jobId }) {
    await s.imageJobs.runAsync(jobId);
  },
  async onDead(s, { jobId }, error) {
    await s.imageJobs.failDead(jobId, error);
  },
});
