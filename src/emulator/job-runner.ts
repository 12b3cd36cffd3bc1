/**
 * Drives one batch prediction job through its states and does the work:
 * reads the JSONL input(s) line by line through the Storage client, answers
 * each line, and streams predictions.jsonl to the output directory.
 */
import { createInterface } from 'node:readline';
import { finished } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type { Storage } from '@google-cloud/storage';
import type { EmulatorImage } from '../config.ts';
import { gatherWrites, writeWithBackpressure } from '../storage/streams.ts';
import { answerLine, lineDirectives } from './gemini-responder.ts';
import { resolveModel } from './models.ts';
import type { JobRecord, JobState, RpcStatus } from './vertex-jobs.ts';
import { isTerminal, timestamp } from './vertex-jobs.ts';

export interface RunnerSettings {
  queueMs: number;
  /** A job still QUEUED this long after its creation ends EXPIRED (Vertex: 72 h). */
  queueExpireMs: number;
  lineMs: number;
  slowMs: number;
  imagePadBytes: number;
  image: EmulatorImage;
  /** Jobs running at once; the others wait QUEUED. 0: no limit. */
  maxRunningJobs: number;
  jobFault: 'none' | 'fail' | 'stuck';
}

export interface RunnerDeps {
  storage: Storage;
  /** Read at each step, so setFaults() affects jobs already running. */
  settings(): RunnerSettings;
  save(record: JobRecord): Promise<void>;
  /** Aborted when the emulator closes: stop without changing the job's state. */
  shutdown: AbortSignal;
  /** Shared by the emulator's jobs: how many run at once (RunnerSettings.maxRunningJobs). */
  slots: JobSlots;
}

/**
 * Vertex's capacity: at most `maxRunningJobs` jobs run at once, the others wait in the queue, in
 * the order they asked. (A hundred jobs streaming at once in one process share its CPU anyway, and
 * each holds its streams' buffers.)
 */
export class JobSlots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  /** Resolves true once the job may run, false if the signal aborts first. */
  async take(limit: () => number, signal: AbortSignal): Promise<boolean> {
    while (limit() > 0 && this.running >= limit()) {
      if (signal.aborted) return false;
      await new Promise<void>((resolve) => {
        const wake = () => {
          const at = this.waiting.indexOf(wake);
          if (at !== -1) this.waiting.splice(at, 1);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.waiting.push(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
    if (signal.aborted) return false;
    this.running++;
    return true;
  }

  release(): void {
    this.running--;
    this.waiting[0]?.();
  }
}

/** Thrown inside the runner to end the job FAILED with this status. */
class JobFailure extends Error {
  readonly status: RpcStatus;
  constructor(code: number, message: string) {
    super(message);
    this.status = { code, message };
  }
}

const STATS_SAVE_INTERVAL_MS = 200;
/** setTimeout's longest delay; longer waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How often a 'stuck' job looks whether the fault was lifted (setFaults works at run time). */
const STUCK_POLL_MS = 50;

/** Resolves true after `ms`, or false as soon as the signal aborts. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  if (ms <= 0) return true;
  try {
    await delay(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

function parseGcsUri(uri: string): { bucket: string; object: string } {
  const m = /^gs:\/\/([^/]+)\/(.*)$/.exec(uri);
  if (!m) throw new JobFailure(3, `Invalid Cloud Storage URI: ${uri}`);
  return { bucket: m[1], object: m[2] };
}

/**
 * An input file that cannot be read fails the job, as on Vertex: NOT_FOUND for a missing object or
 * bucket, INTERNAL for anything else; the message names the file.
 */
function inputFailure(uri: string, err: unknown): JobFailure {
  if ((err as { code?: unknown }).code === 404)
    return new JobFailure(5, `Failed to read input ${uri}: no such object.`);
  return new JobFailure(13, `Failed to read input ${uri}: ${(err as Error).message}`);
}

export class JobRunner {
  readonly record: JobRecord;
  readonly done: Promise<void>;
  private readonly deps: RunnerDeps;
  private readonly cancelController = new AbortController();
  private readonly signal: AbortSignal;
  private lastStatsSave = 0;

  constructor(record: JobRecord, deps: RunnerDeps) {
    this.record = record;
    this.deps = deps;
    this.signal = AbortSignal.any([this.cancelController.signal, deps.shutdown]);
    this.done = this.run();
  }

  /** Cancel: the job goes CANCELLING now and CANCELLED once the runner stops. */
  cancel(): void {
    // The runner saves the terminal state when it stops; a lost CANCELLING save only delays what a get shows.
    this.setState('JOB_STATE_CANCELLING').catch(() => {});
    this.cancelController.abort();
  }

  private get job() {
    return this.record.job;
  }

  private setState(state: JobState, extra: Partial<JobRecord['job']> = {}): Promise<void> {
    const now = timestamp();
    // Once cancel was asked for, only a terminal state may replace CANCELLING.
    if (this.cancelController.signal.aborted && !isTerminal(state)) state = 'JOB_STATE_CANCELLING';
    Object.assign(this.job, extra, { state, updateTime: now });
    if (isTerminal(state)) this.job.endTime = now;
    return this.deps.save(this.record);
  }

  private async run(): Promise<void> {
    let slot = false;
    try {
      if (this.job.state === 'JOB_STATE_QUEUED') {
        const left = await this.waitInQueue();
        if (left === 'stopped') return this.stopped();
        if (left === 'expired') return this.expire();
      }
      // Still QUEUED while the emulated capacity is taken by other jobs.
      slot = await this.deps.slots.take(() => this.deps.settings().maxRunningJobs, this.signal);
      if (!slot) return this.stopped();
      if (this.job.state === 'JOB_STATE_QUEUED' || this.job.state === 'JOB_STATE_PENDING') {
        await this.setState('JOB_STATE_PENDING');
        if (!(await pause(Math.min(this.deps.settings().queueMs / 4, 1000), this.signal))) return this.stopped();
        await this.setState('JOB_STATE_RUNNING', { startTime: timestamp() });
      }
      if (this.deps.settings().jobFault === 'fail') {
        throw new JobFailure(
          13,
          'Internal error occurred while running the batch prediction job. (emulated job fault)',
        );
      }
      await this.process();
    } catch (err) {
      if (this.deps.shutdown.aborted) return;
      const status =
        err instanceof JobFailure ? err.status : { code: 13, message: `Internal error: ${(err as Error).message}` };
      await this.setState('JOB_STATE_FAILED', { error: status });
    } finally {
      if (slot) this.deps.slots.release();
    }
  }

  /**
   * Waits out the queue time from the job's creation (so a restart keeps the
   * deadline). 'stuck' jobs stay queued until the fault is lifted; any job
   * still queued at its expiry deadline expires, as on Vertex.
   */
  private async waitInQueue(): Promise<'dequeued' | 'expired' | 'stopped'> {
    const created = Date.parse(this.job.createTime);
    for (;;) {
      const { queueMs, queueExpireMs, jobFault } = this.deps.settings();
      const now = Date.now();
      const expireAt = created + queueExpireMs;
      const leaveAt = created + queueMs;
      if (now >= expireAt) return 'expired';
      const stuck = jobFault === 'stuck';
      if (now >= leaveAt && !stuck) return 'dequeued';
      const until = stuck ? Math.min(now + STUCK_POLL_MS, expireAt) : Math.min(leaveAt, expireAt);
      if (!(await pause(Math.min(until - now, MAX_TIMER_MS), this.signal))) return 'stopped';
    }
  }

  /** EXPIRED, like Vertex after 72 h in the queue: an error, no output (nothing ran). */
  private expire(): Promise<void> {
    const limit = describeDuration(this.deps.settings().queueExpireMs);
    return this.setState('JOB_STATE_EXPIRED', {
      error: { code: 4, message: `The batch prediction job expired: it stayed queued for ${limit} without starting.` },
    });
  }

  /** The runner stopped waiting: a cancel ends the job; a shutdown leaves it for the next start. */
  private async stopped(): Promise<void> {
    if (this.deps.shutdown.aborted) return;
    await this.setState('JOB_STATE_CANCELLED');
  }

  private outputDirectory(): string {
    if (!this.job.outputInfo) {
      const prefix = this.job.outputConfig.gcsDestination.outputUriPrefix.replace(/\/+$/, '');
      this.job.outputInfo = { gcsOutputDirectory: `${prefix}/prediction-model-${timestamp()}/` };
    }
    return this.job.outputInfo.gcsOutputDirectory;
  }

  /**
   * The lines of an input file; `check`: verify the whole file's CRC32C (the pass that answers the
   * lines). A read error (no such object or bucket, a broken download) ends the iteration: readline
   * listens to its input's errors. `failure` turns it into the job's error, naming the file.
   */
  private inputLines(
    uri: string,
    check = true,
  ): AsyncIterable<string> & { stop(): void; failure(err: unknown): unknown } {
    const { bucket, object } = parseGcsUri(uri);
    const stream = this.deps.storage
      .bucket(bucket)
      .file(object)
      .createReadStream(check ? {} : { validation: false });
    let readError: unknown;
    // Also heard once readline has stopped listening (the lines closed): an 'error' nobody hears
    // would end the emulator's process, and every job with it.
    stream.on('error', (err) => {
      readError ??= err;
    });
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    const stop = () => {
      lines.close();
      stream.destroy();
    };
    const failure = (err: unknown) => (err !== undefined && err === readError ? inputFailure(uri, err) : err);
    return Object.assign(lines, { stop, failure });
  }

  private async countLines(): Promise<number> {
    let total = 0;
    for (const uri of this.job.inputConfig.gcsSource.uris) {
      const lines = this.inputLines(uri, false); // only counted: the pass that answers them checks them
      try {
        for await (const line of lines) {
          if (line.trim() !== '') total++;
          // A cancel or shutdown need not wait for a long input to be counted.
          if (this.signal.aborted) {
            if (this.deps.shutdown.aborted) throw new Error('shutting down');
            return total;
          }
        }
      } catch (err) {
        throw lines.failure(err);
      } finally {
        lines.stop();
      }
    }
    return total;
  }

  private async process(): Promise<void> {
    const model = resolveModel(this.job.model);
    if (!model) throw new JobFailure(3, `Unknown model ${this.job.model}`);
    const total = await this.countLines();
    // A restart resumes a RUNNING job from its first line: its output was never committed.
    this.job.completionStats = { successfulCount: '0', failedCount: '0', incompleteCount: String(total) };
    if (total === 0) throw new JobFailure(3, 'The batch prediction input contains no requests.');
    const outputDir = this.outputDirectory();
    await this.setState('JOB_STATE_RUNNING');

    const { bucket, object } = parseGcsUri(`${outputDir}predictions.jsonl`);
    // A line at a time, gathered into bigger chunks on their way to Cloud Storage; no checksum of
    // its own on the way (the Cloud Storage emulator computes the object's): a pass over every
    // prediction, which a scale run of millions of lines notices.
    const out = gatherWrites(
      this.deps.storage
        .bucket(bucket)
        .file(object)
        .createWriteStream({ resumable: false, contentType: 'application/jsonl', validation: false }),
    );
    let writeError: Error | undefined;
    out.on('error', (err) => (writeError = err));
    let succeeded = 0;
    let failed = 0;
    const ctx = { model, storage: this.deps.storage };
    try {
      outer: for (const uri of this.job.inputConfig.gcsSource.uris) {
        const lines = this.inputLines(uri);
        try {
          for await (const line of lines) {
            if (line.trim() === '') continue;
            const settings = this.deps.settings();
            const ms = settings.lineMs + (lineDirectives(line).has('slow') ? settings.slowMs : 0);
            // No pause at all (not even a resolved one) when a line takes no time: a scale run
            // streams millions of lines at full speed.
            if (this.signal.aborted || (ms > 0 && !(await pause(ms, this.signal)))) break outer;
            const result = await answerLine(line, {
              ...ctx,
              imagePadBytes: settings.imagePadBytes,
              image: settings.image,
            });
            await writeWithBackpressure(out, `${result.text}\n`);
            if (writeError) throw writeError;
            if (result.ok) succeeded++;
            else failed++;
            this.updateStats(succeeded, failed, total);
          }
        } catch (err) {
          // The file may have gone since it was counted.
          throw lines.failure(err);
        } finally {
          lines.stop();
        }
      }
    } catch (err) {
      out.destroy();
      throw err;
    }
    if (this.deps.shutdown.aborted) {
      // Abandon the upload: no predictions.jsonl is committed, the next start redoes the job.
      out.destroy();
      return;
    }
    out.end();
    await finished(out);
    this.updateStats(succeeded, failed, total, false);
    if (this.cancelController.signal.aborted) return this.setState('JOB_STATE_CANCELLED');
    if (failed === total) {
      return this.setState('JOB_STATE_FAILED', {
        error: {
          code: 13,
          message: `All ${total} requests of the batch prediction job failed. See the status field of each line in ${outputDir}predictions.jsonl.`,
        },
      });
    }
    if (failed > 0) return this.setState('JOB_STATE_PARTIALLY_SUCCEEDED');
    return this.setState('JOB_STATE_SUCCEEDED');
  }

  /** Progress as a get shows it, live; `updateTime` and the saved record follow every STATS_SAVE_INTERVAL_MS. */
  private updateStats(succeeded: number, failed: number, total: number, save = true): void {
    this.job.completionStats = {
      successfulCount: String(succeeded),
      failedCount: String(failed),
      incompleteCount: String(total - succeeded - failed),
    };
    const now = Date.now();
    if (save && now - this.lastStatsSave < STATS_SAVE_INTERVAL_MS) return;
    this.job.updateTime = timestamp();
    if (save) {
      this.lastStatsSave = now;
      void this.deps.save(this.record);
    }
  }
}

/** "72 hours", "1.5 seconds", "300 ms": for messages only. */
function describeDuration(ms: number): string {
  if (ms >= 3_600_000) return `${+(ms / 3_600_000).toFixed(2)} hours`;
  if (ms >= 1000) return `${+(ms / 1000).toFixed(2)} seconds`;
  return `${ms} ms`;
}
