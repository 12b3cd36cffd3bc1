import type { protos } from '@google-cloud/aiplatform';
import type { JobServiceClient } from './job-client.ts';
import { enumName, protoEnum } from './proto-enums.ts';

const TERMINAL = new Set([
  'JOB_STATE_SUCCEEDED',
  'JOB_STATE_FAILED',
  'JOB_STATE_CANCELLED',
  'JOB_STATE_EXPIRED',
  'JOB_STATE_PARTIALLY_SUCCEEDED',
]);

export interface JobSnapshot {
  name: string;
  state: string;
  terminal: boolean;
  succeeded: number;
  failed: number;
  outputDir: string | null;
  error: { code: number; message: string } | null;
}

export interface NewJob {
  displayName: string;
  model: string;
  inputUri: string;
  outputPrefix: string;
  labels: Record<string, string>;
}

/** BatchPredictionJobs of one project and region, as the pipeline needs them. */
export class BatchJobs {
  private readonly client: JobServiceClient;
  private readonly parent: string;

  constructor(client: JobServiceClient, project: string, location: string) {
    this.client = client;
    this.parent = `projects/${project}/locations/${location}`;
  }

  async create(job: NewJob): Promise<JobSnapshot> {
    const [created] = await this.client.createBatchPredictionJob({
      parent: this.parent,
      batchPredictionJob: {
        displayName: job.displayName,
        model: job.model,
        inputConfig: { instancesFormat: 'jsonl', gcsSource: { uris: [job.inputUri] } },
        outputConfig: { predictionsFormat: 'jsonl', gcsDestination: { outputUriPrefix: job.outputPrefix } },
        labels: job.labels,
      },
    });
    return snapshot(created);
  }

  /** The job carrying this label, if one was created (a retry after a crash finds it). */
  async findByLabel(key: string, value: string): Promise<JobSnapshot | null> {
    const [jobs] = await this.client.listBatchPredictionJobs(
      { parent: this.parent, filter: `labels.${key}="${value}"`, pageSize: 10 },
      { autoPaginate: false },
    );
    return jobs.length ? snapshot(jobs[0]) : null;
  }

  async get(name: string): Promise<JobSnapshot> {
    const [job] = await this.client.getBatchPredictionJob({ name });
    return snapshot(job);
  }

  /** Best effort, as on Vertex: a job that already ended is left as it is. */
  async cancel(name: string): Promise<void> {
    try {
      await this.client.cancelBatchPredictionJob({ name });
    } catch (err) {
      // FAILED_PRECONDITION: already finished; NOT_FOUND: gone. Either way there is nothing to stop.
      if ((err as { code?: number }).code !== 9 && !isNotFound(err)) throw err;
    }
  }
}

type RawJob = protos.google.cloud.aiplatform.v1.IBatchPredictionJob;
const JobStates = protoEnum('google.cloud.aiplatform.v1.JobState');

function snapshot(job: RawJob): JobSnapshot {
  const state = enumName(JobStates, job.state) || 'JOB_STATE_UNSPECIFIED';
  const stats = job.completionStats;
  return {
    name: job.name!,
    state,
    terminal: TERMINAL.has(state),
    succeeded: Number(stats?.successfulCount ?? 0),
    failed: Number(stats?.failedCount ?? 0),
    outputDir: job.outputInfo?.gcsOutputDirectory ?? null,
    error: job.error?.message ? { code: Number(job.error.code ?? 2), message: job.error.message } : null,
  };
}

export const isNotFound = (err: unknown) => (err as { code?: number }).code === 5;
