import { generateImageJob } from '../images/generate-job.ts';
import { webhookDeliveryJob } from '../webhooks/delivery-job.ts';
import { cancelJob } from './cancel.ts';
import { finalizeJob } from './finalize.ts';
import type { AnyJob } from './job.ts';
import { pollJob } from './poll.ts';
import { stageJob } from './stage.ts';
import { submitJob } from './submit.ts';
import { sweepJob } from './sweep.ts';
import { validateJob } from './validate.ts';

/** Every pipeline job: the queues a process creates and the handlers a worker runs. */
export const PIPELINE_JOBS: readonly AnyJob[] = [
  validateJob,
  stageJob,
  submitJob,
  pollJob,
  cancelJob,
  finalizeJob,
  sweepJob,
  webhookDeliveryJob,
  generateImageJob,
];
