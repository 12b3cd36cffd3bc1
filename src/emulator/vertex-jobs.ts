/**
 * Batch prediction job records of the Vertex emulator: the JSON the API
 * answers, persisted one file per job so that state survives a restart.
 */

import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** JobState values in proto order: index = the numeric enum value. */
export const JOB_STATES = [
  'JOB_STATE_UNSPECIFIED',
  'JOB_STATE_QUEUED',
  'JOB_STATE_PENDING',
  'JOB_STATE_RUNNING',
  'JOB_STATE_SUCCEEDED',
  'JOB_STATE_FAILED',
  'JOB_STATE_CANCELLING',
  'JOB_STATE_CANCELLED',
  'JOB_STATE_PAUSED',
  'JOB_STATE_EXPIRED',
  'JOB_STATE_UPDATING',
  'JOB_STATE_PARTIALLY_SUCCEEDED',
] as const;

export type JobState = (typeof JOB_STATES)[number];

const TERMINAL: ReadonlySet<JobState> = new Set([
  'JOB_STATE_SUCCEEDED',
  'JOB_STATE_FAILED',
  'JOB_STATE_CANCELLED',
  'JOB_STATE_EXPIRED',
  'JOB_STATE_PARTIALLY_SUCCEEDED',
]);

export function isTerminal(state: JobState): boolean {
  return TERMINAL.has(state);
}

export interface RpcStatus {
  code: number;
  message: string;
  details?: unknown[];
}

/** A BatchPredictionJob in its JSON form (enum as its name, int64 as strings). */
export interface JobResource {
  name: string;
  displayName: string;
  model: string;
  inputConfig: { instancesFormat: string; gcsSource: { uris: string[] } };
  outputConfig: { predictionsFormat: string; gcsDestination: { outputUriPrefix: string } };
  labels?: Record<string, string>;
  state: JobState;
  createTime: string;
  updateTime: string;
  startTime?: string;
  endTime?: string;
  error?: RpcStatus;
  completionStats?: { successfulCount: string; failedCount: string; incompleteCount: string };
  outputInfo?: { gcsOutputDirectory: string };
  [other: string]: unknown;
}

export interface JobRecord {
  id: string;
  /** `projects/{p}/locations/{l}` the job was created under. */
  parent: string;
  job: JobResource;
}

/** RFC 3339 with microseconds, as Vertex prints timestamps. */
export function timestamp(date = new Date()): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class JobFiles {
  private readonly dir: string;
  /** Writes of one job are chained so an older snapshot never lands after a newer one. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(dataDir: string) {
    this.dir = path.join(dataDir, 'jobs');
  }

  async loadAll(): Promise<JobRecord[]> {
    await mkdir(this.dir, { recursive: true });
    const records: JobRecord[] = [];
    for (const file of await readdir(this.dir)) {
      if (!file.endsWith('.json')) continue;
      try {
        records.push(JSON.parse(await readFile(path.join(this.dir, file), 'utf8')) as JobRecord);
      } catch {
        // A torn write cannot happen (write + rename); ignore stray files.
      }
    }
    return records;
  }

  save(record: JobRecord): Promise<void> {
    const snapshot = JSON.stringify(record);
    const write = async () => {
      const temp = path.join(this.dir, `.${record.id}.${randomUUID()}.tmp`);
      await writeFile(temp, snapshot);
      await rename(temp, path.join(this.dir, `${record.id}.json`));
    };
    return this.chain(record.id, write);
  }

  remove(id: string): Promise<void> {
    return this.chain(id, () => rm(path.join(this.dir, `${id}.json`), { force: true }));
  }

  private chain(id: string, step: () => Promise<void>): Promise<void> {
    const next = (this.chains.get(id) ?? Promise.resolve()).then(step, step);
    this.chains.set(id, next);
    void next.finally(() => {
      if (this.chains.get(id) === next) this.chains.delete(id);
    });
    return next;
  }

  async flush(): Promise<void> {
    await Promise.allSettled([...this.chains.values()]);
  }
}
