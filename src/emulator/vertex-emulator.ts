/**
 * Vertex AI emulator: the REST v1 batchPredictionJobs surface (create, get,
 * list, cancel, delete) that `@google-cloud/aiplatform`'s JobServiceClient uses
 * with `fallback: true, protocol: 'http'`, and online prediction
 * (`:generateContent`) for its PredictionServiceClient.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { Storage } from '@google-cloud/storage';
import { type EmulatorImage, type TransportFault, VERTEX_METHODS } from '../config.ts';
import { crc32cGenerator } from '../storage/crc32c.ts';
import type { RunningEmulator } from './gcs-emulator.ts';
import {
  checkGenerateContentRequest,
  GenerateContentError,
  generateContent,
  requestDirectives,
} from './gemini-responder.ts';
import { closeServer, drain, HttpError, listen, readJsonBody, sendError, sendJson, statusName } from './http-util.ts';
import type { RunnerSettings } from './job-runner.ts';
import { JobRunner, JobSlots } from './job-runner.ts';
import { resolveModel } from './models.ts';
import type { JobRecord, JobResource, JobState } from './vertex-jobs.ts';
import { isTerminal, JOB_STATES, JobFiles, timestamp } from './vertex-jobs.ts';
import { validateBatchJob } from './vertex-validation.ts';

export interface VertexEmulatorOptions {
  host?: string;
  port?: number;
  dataDir: string;
  gcsEndpoint: string;
  projectId?: string;
  queueMs: number;
  /** A job still QUEUED this long after creation ends JOB_STATE_EXPIRED; default 72 h, as on Vertex. */
  queueExpireMs?: number;
  lineMs: number;
  /** Extra time of a batch line or an online call with `[emulate:slow]`. */
  slowMs: number;
  /** How long an online `:generateContent` call takes before it answers; default 1500 ms. */
  onlineMs?: number;
  imagePadBytes: number;
  /** `tiny`: every image is one small precomputed image (scale runs); default `full`. */
  image?: EmulatorImage;
  /** Batch jobs running at once; the others wait QUEUED (Vertex's capacity). 0 or absent: no limit. */
  maxRunningJobs?: number;
  jobFault: 'none' | 'fail' | 'stuck';
  transportFaults: TransportFault[];
}

export type RunningVertexEmulator = RunningEmulator & {
  setFaults(f: { jobFault?: VertexEmulatorOptions['jobFault']; transportFaults?: TransportFault[] }): void;
  /** Changes the latency of online calls from the next call on. */
  setOnlineMs(ms: number): void;
  /** Changes the extra time of `[emulate:slow]` lines and calls from the next one on. */
  setSlowMs(ms: number): void;
  /** Calls of a method answered or refused since start, or since the faults were last set. */
  callCount(method: (typeof VERTEX_METHODS)[number]): number;
};

export { type TransportFault, VERTEX_METHODS };

/** Vertex expires a batch job that has not left the queue after 72 hours. */
export const DEFAULT_QUEUE_EXPIRE_MS = 72 * 3_600_000;

/** Latency of an online call when none is configured (about what a 1K image takes on Vertex). */
export const DEFAULT_ONLINE_MS = 1500;
/** A `hang` fault's wait: setTimeout's longest (about 24.8 days), ended by the caller or the close. */
const HANG_MS = 2 ** 31 - 1;

/** Largest online request body (inline reference images travel in it as base64). */
const ONLINE_BODY_LIMIT = 256 * 1024 * 1024;

type Method = (typeof VERTEX_METHODS)[number];

interface Route {
  method: Method;
  parent: string;
  id?: string;
  operation?: string;
  /** GenerateContent: the model resource as addressed, `[projects/P/locations/L/]publishers/google/models/M[@V]`. */
  model?: string;
}

const PARENT = 'projects/([^/]+)/locations/([^/]+)';

function route(httpMethod: string, pathname: string): Route | undefined {
  let m = new RegExp(`^/v1/((?:${PARENT}/)?publishers/google/models/[^/:]+):generateContent$`).exec(pathname);
  if (m) {
    if (httpMethod !== 'POST') return undefined;
    let model: string;
    try {
      model = decodeURIComponent(m[1]);
    } catch {
      return undefined;
    }
    return { method: 'GenerateContent', parent: m[2] ? `projects/${m[2]}/locations/${m[3]}` : '', model };
  }
  m = new RegExp(`^/v1/(${PARENT})/batchPredictionJobs$`).exec(pathname);
  if (m) {
    if (httpMethod === 'POST') return { method: 'CreateBatchPredictionJob', parent: m[1] };
    if (httpMethod === 'GET') return { method: 'ListBatchPredictionJobs', parent: m[1] };
    return undefined;
  }
  m = new RegExp(`^/v1/(${PARENT})/batchPredictionJobs/([^/:]+)(:cancel)?$`).exec(pathname);
  if (m) {
    const parent = m[1];
    const id = m[4];
    if (m[5]) return httpMethod === 'POST' ? { method: 'CancelBatchPredictionJob', parent, id } : undefined;
    if (httpMethod === 'GET') return { method: 'GetBatchPredictionJob', parent, id };
    if (httpMethod === 'DELETE') return { method: 'DeleteBatchPredictionJob', parent, id };
    return undefined;
  }
  m = new RegExp(`^/v1/(${PARENT})/batchPredictionJobs/([^/:]+)/operations/([^/:]+)$`).exec(pathname);
  if (m && httpMethod === 'GET') return { method: 'GetOperation', parent: m[1], id: m[4], operation: m[5] };
  return undefined;
}

interface Operation {
  name: string;
  metadata: Record<string, unknown>;
  done: true;
  response: { '@type': string };
}

class VertexEmulator {
  private readonly opts: VertexEmulatorOptions;
  private readonly files: JobFiles;
  private readonly records = new Map<string, JobRecord>();
  private readonly runners = new Map<string, JobRunner>();
  private readonly operations = new Map<string, Operation>();
  private readonly calls = new Map<string, number>();
  private readonly shutdown = new AbortController();
  private readonly slots = new JobSlots();
  private readonly storage: Storage;
  private lastId = 0n;
  private jobFault: VertexEmulatorOptions['jobFault'];
  private transportFaults: TransportFault[];
  private onlineMs: number;
  private slowMs: number;
  /** The waits of online calls in progress, so that closing ends them at once. */
  private readonly onlineWaits = new Set<AbortController>();
  private closing = false;

  constructor(opts: VertexEmulatorOptions) {
    this.opts = opts;
    this.files = new JobFiles(opts.dataDir);
    // Integrity checks stay on; the faster CRC32C keeps GB-sized shards cheap.
    this.storage = new Storage({
      apiEndpoint: opts.gcsEndpoint.replace(/\/+$/, ''),
      projectId: opts.projectId ?? 'emulator-project',
      crc32cGenerator,
    });
    this.jobFault = opts.jobFault;
    this.transportFaults = [...opts.transportFaults];
    this.onlineMs = opts.onlineMs ?? DEFAULT_ONLINE_MS;
    this.slowMs = opts.slowMs;
  }

  settings(): RunnerSettings {
    const { queueMs, queueExpireMs = DEFAULT_QUEUE_EXPIRE_MS, lineMs, imagePadBytes, image = 'full' } = this.opts;
    return {
      queueMs,
      queueExpireMs,
      lineMs,
      slowMs: this.slowMs,
      imagePadBytes,
      image,
      maxRunningJobs: this.opts.maxRunningJobs ?? 0,
      jobFault: this.jobFault,
    };
  }

  setFaults(f: { jobFault?: VertexEmulatorOptions['jobFault']; transportFaults?: TransportFault[] }): void {
    if (f.jobFault !== undefined) this.jobFault = f.jobFault;
    if (f.transportFaults !== undefined) {
      this.transportFaults = [...f.transportFaults];
      // "The Nth call" counts from the moment the faults are set.
      this.calls.clear();
    }
  }

  setOnlineMs(ms: number): void {
    this.onlineMs = Math.max(0, ms);
  }

  setSlowMs(ms: number): void {
    this.slowMs = Math.max(0, ms);
  }

  callCount(method: string): number {
    return this.calls.get(method) ?? 0;
  }

  /** Loads persisted jobs and resumes the unfinished ones. */
  async open(): Promise<void> {
    for (const record of await this.files.loadAll()) {
      this.records.set(record.id, record);
      if (BigInt(record.id) > this.lastId) this.lastId = BigInt(record.id);
      if (record.job.state === 'JOB_STATE_CANCELLING') {
        // The runner that would have finished the cancel is gone.
        const now = timestamp();
        Object.assign(record.job, { state: 'JOB_STATE_CANCELLED', endTime: now, updateTime: now });
        await this.files.save(record);
      } else if (!isTerminal(record.job.state)) {
        this.startRunner(record);
      }
    }
  }

  /** Online calls still waiting answer 503 now, later ones at once: the server can close without waiting for them. */
  stopOnline(): void {
    this.closing = true;
    for (const wait of this.onlineWaits) wait.abort();
  }

  async close(): Promise<void> {
    this.stopOnline();
    this.shutdown.abort();
    await Promise.allSettled([...this.runners.values()].map((r) => r.done));
    await this.files.flush();
  }

  private startRunner(record: JobRecord): void {
    const runner = new JobRunner(record, {
      storage: this.storage,
      settings: () => this.settings(),
      save: (r) => this.files.save(r),
      shutdown: this.shutdown.signal,
      slots: this.slots,
    });
    this.runners.set(record.id, runner);
    void runner.done.finally(() => {
      if (this.runners.get(record.id) === runner) this.runners.delete(record.id);
    });
  }

  /** Numeric ids like Vertex's, increasing so that listings can page by id. */
  private nextId(): string {
    const now = BigInt(Date.now()) * 1_000_000n;
    this.lastId = now > this.lastId ? now : this.lastId + 1n;
    return this.lastId.toString();
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const r = route(req.method ?? 'GET', url.pathname);
    if (!r) {
      await drain(req);
      throw new HttpError(404, `The requested URL ${url.pathname} was not found on this server (${req.method}).`);
    }
    // The generated client asks for numeric enums: `$alt=json;enum-encoding=int`.
    const numericEnums = /enum-encoding=int/.test(url.searchParams.get('$alt') ?? '');
    const count = (this.calls.get(r.method) ?? 0) + 1;
    this.calls.set(r.method, count);
    const fault = this.transportFaults.find((f) => f.method === r.method && f.call === count);
    if (fault?.status === 'hang') {
      // Never answered: an online wait with no end, until the caller gives up or the emulator
      // closes, which then cuts the connection rather than answer.
      await drain(req);
      await this.onlineWait(HANG_MS, res);
      res.destroy();
      return;
    }
    if (fault) {
      await drain(req);
      throw new HttpError(
        fault.status,
        `Emulated transport fault: ${r.method} call ${count} answers ${fault.status} ${statusName(fault.status)}.`,
      );
    }
    const answerJob = (record: JobRecord) => sendJson(res, 200, renderJob(record.job, numericEnums));
    switch (r.method) {
      case 'CreateBatchPredictionJob': {
        const body = await readJsonBody(req, 16 * 1024 * 1024);
        return answerJob(await this.create(r.parent, body));
      }
      case 'GetBatchPredictionJob':
        await drain(req);
        return answerJob(this.find(r));
      case 'ListBatchPredictionJobs':
        await drain(req);
        return sendJson(res, 200, this.list(r.parent, url.searchParams, numericEnums));
      case 'CancelBatchPredictionJob':
        await drain(req);
        await this.cancel(r);
        return sendJson(res, 200, {});
      case 'DeleteBatchPredictionJob':
        await drain(req);
        return sendJson(res, 200, await this.delete(r));
      case 'GetOperation': {
        await drain(req);
        const op = this.operations.get(`${r.parent}/batchPredictionJobs/${r.id}/operations/${r.operation}`);
        if (!op) throw new HttpError(404, 'Operation not found.');
        return sendJson(res, 200, op);
      }
      case 'GenerateContent':
        return this.generateContent(r.model ?? '', req, res);
    }
  }

  /**
   * Online prediction: what Vertex's front end refuses (unknown model, no contents)
   * answers at once; everything else takes `onlineMs` (plus `slowMs` for
   * `[emulate:slow]`), then gets the same answer a batch line would. Nothing is
   * kept once the call is answered.
   */
  private async generateContent(resource: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const model = resolveModel(resource);
    if (!model) {
      await drain(req);
      throw new HttpError(
        404,
        `Publisher Model \`${resource}\` was not found or your project does not have access to it.`,
      );
    }
    const body = await readJsonBody(req, ONLINE_BODY_LIMIT);
    try {
      const request = checkGenerateContentRequest(body);
      const slow = requestDirectives(request).has('slow');
      if (!(await this.onlineWait(this.onlineMs + (slow ? this.slowMs : 0), res))) {
        if (res.destroyed) return; // the client went away: nobody to answer
        throw new HttpError(503, 'The service is currently unavailable: the emulator is shutting down.');
      }
      const text = await generateContent(request, {
        model,
        storage: this.storage,
        imagePadBytes: this.opts.imagePadBytes,
        image: this.opts.image,
      });
      if (res.destroyed) return;
      res.writeHead(200, {
        'content-type': 'application/json; charset=UTF-8',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
    } catch (err) {
      if (err instanceof GenerateContentError) throw new HttpError(err.code, err.message, err.statusName);
      throw err;
    }
  }

  /** Resolves true after `ms`, false as soon as the client disconnects or the emulator closes. */
  private async onlineWait(ms: number, res: ServerResponse): Promise<boolean> {
    if (this.closing || res.destroyed) return false;
    const wait = new AbortController();
    const abort = () => wait.abort();
    res.once('close', abort);
    this.onlineWaits.add(wait);
    try {
      await delay(ms, undefined, { signal: wait.signal });
      return true;
    } catch {
      return false;
    } finally {
      this.onlineWaits.delete(wait);
      res.off('close', abort);
    }
  }

  private async create(parent: string, body: unknown): Promise<JobRecord> {
    const { job } = validateBatchJob(body);
    const id = this.nextId();
    const now = timestamp();
    // Output-only fields in the request are ignored, as Vertex does.
    const {
      name: _n,
      state: _s,
      createTime: _c,
      updateTime: _u,
      startTime: _st,
      endTime: _e,
      error: _er,
      outputInfo: _o,
      completionStats: _cs,
      partialFailures: _p,
      resourcesConsumed: _r,
      ...input
    } = job;
    const resource = {
      ...input,
      name: `${parent}/batchPredictionJobs/${id}`,
      state: 'JOB_STATE_QUEUED',
      createTime: now,
      updateTime: now,
    } as JobResource;
    const record: JobRecord = { id, parent, job: resource };
    this.records.set(id, record);
    await this.files.save(record);
    // Answer the job as created: the runner may move it on before the answer is written.
    const created: JobRecord = { ...record, job: structuredClone(resource) };
    this.startRunner(record);
    return created;
  }

  private find(r: Route): JobRecord {
    const record = this.records.get(r.id ?? '');
    if (!record)
      throw new HttpError(404, `The BatchPredictionJob does not exist: ${r.parent}/batchPredictionJobs/${r.id}`);
    return record;
  }

  private async cancel(r: Route): Promise<void> {
    const record = this.find(r);
    const state = record.job.state;
    if (state === 'JOB_STATE_CANCELLING') return;
    if (isTerminal(state)) {
      throw new HttpError(
        400,
        `BatchPredictionJob ${record.job.name} is in state ${state} and cannot be cancelled.`,
        'FAILED_PRECONDITION',
      );
    }
    const runner = this.runners.get(record.id);
    if (runner) {
      runner.cancel();
    } else {
      const now = timestamp();
      Object.assign(record.job, { state: 'JOB_STATE_CANCELLED', endTime: now, updateTime: now });
      await this.files.save(record);
    }
  }

  private async delete(r: Route): Promise<Operation> {
    const record = this.find(r);
    if (!isTerminal(record.job.state)) {
      throw new HttpError(
        400,
        `BatchPredictionJob ${record.job.name} is in state ${record.job.state}; only a finished job (succeeded, failed, cancelled, …) can be deleted. Cancel it first.`,
        'FAILED_PRECONDITION',
      );
    }
    this.records.delete(record.id);
    await this.files.remove(record.id);
    const now = timestamp();
    const op: Operation = {
      name: `${record.job.name}/operations/${this.nextId()}`,
      metadata: {
        '@type': 'type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata',
        genericMetadata: { createTime: now, updateTime: now },
      },
      done: true,
      response: { '@type': 'type.googleapis.com/google.protobuf.Empty' },
    };
    this.operations.set(op.name, op);
    return op;
  }

  private list(parent: string, q: URLSearchParams, numericEnums: boolean): Record<string, unknown> {
    const matches = compileFilter(q.get('filter') ?? '');
    const pageSizeText = q.get('pageSize') ?? q.get('page_size');
    const pageSize = pageSizeText ? Number(pageSizeText) : 0;
    if (!Number.isInteger(pageSize) || pageSize < 0) throw new HttpError(400, `Invalid page_size: ${pageSizeText}`);
    const size = pageSize === 0 ? 100 : Math.min(pageSize, 1000);
    const tokenText = q.get('pageToken') ?? q.get('page_token') ?? '';
    let after: bigint | undefined;
    if (tokenText) {
      try {
        after = BigInt(Buffer.from(tokenText, 'base64url').toString('utf8'));
      } catch {
        throw new HttpError(400, 'Invalid page_token.');
      }
    }
    // Newest first; ids increase with creation time.
    const jobs = [...this.records.values()]
      .filter((rec) => rec.parent === parent && (after === undefined || BigInt(rec.id) < after) && matches(rec.job))
      .sort((a, b) => (BigInt(b.id) > BigInt(a.id) ? 1 : -1));
    const page = jobs.slice(0, size);
    const more = jobs.length > size;
    return {
      batchPredictionJobs: page.map((rec) => renderJob(rec.job, numericEnums)),
      ...(more ? { nextPageToken: Buffer.from(page[page.length - 1].id).toString('base64url') } : {}),
    };
  }
}

/** The job as JSON, with `state` as a number when the client asked for numeric enums. */
function renderJob(job: JobResource, numericEnums: boolean): Record<string, unknown> {
  return numericEnums ? { ...job, state: JOB_STATES.indexOf(job.state) } : { ...job };
}

/**
 * The subset of Vertex's list filter syntax the service needs: terms joined
 * by AND, each `labels.KEY=VALUE` / `labels.KEY="VALUE"` / `labels.KEY:*`,
 * `state=JOB_STATE_…` or `display_name="…"`.
 */
export function compileFilter(filter: string): (job: JobResource) => boolean {
  const text = filter.trim();
  if (text === '') return () => true;
  const tests = text.split(/\s+AND\s+/i).map((term) => {
    const m = /^([A-Za-z_][\w.-]*)\s*(=|!=|:)\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]*))$/.exec(term.trim());
    if (!m) throw new HttpError(400, `Unsupported filter term: ${term}`);
    const [, field, op, quoted, bare] = m;
    const value = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : bare;
    const compare = (actual: string | undefined): boolean => {
      if (op === ':' && value === '*') return actual !== undefined;
      if (op === '!=') return actual !== value;
      return actual === value;
    };
    if (field.startsWith('labels.')) {
      const key = field.slice('labels.'.length);
      return (job: JobResource) => compare(job.labels?.[key]);
    }
    if (field === 'state') {
      const wanted = /^\d+$/.test(value) ? JOB_STATES[Number(value)] : value;
      if (!JOB_STATES.includes(wanted as JobState)) throw new HttpError(400, `Unknown state in filter: ${value}`);
      return (job: JobResource) => (op === '!=' ? job.state !== wanted : job.state === wanted);
    }
    if (field === 'display_name' || field === 'displayName') return (job: JobResource) => compare(job.displayName);
    if (field === 'model' || field === 'model_display_name') return (job: JobResource) => compare(job.model);
    throw new HttpError(400, `Unsupported filter field: ${field}`);
  });
  return (job) => tests.every((t) => t(job));
}

export async function startVertexEmulator(opts: VertexEmulatorOptions): Promise<RunningVertexEmulator> {
  const emulator = new VertexEmulator(opts);
  await emulator.open();
  const server = createServer((req, res) => {
    emulator.handle(req, res).catch((err: unknown) => {
      const httpErr = err instanceof HttpError ? err : new HttpError(500, (err as Error)?.message ?? String(err));
      if (!(err instanceof HttpError)) console.error('[vertex-emulator]', err);
      sendError(res, httpErr);
      if (!req.complete) req.resume();
    });
  });
  // Longer than the clients' idle-socket timeout, so a client never reuses a socket the server is closing.
  server.keepAliveTimeout = 65_000;
  const address = await listen(server, opts.host ?? '127.0.0.1', opts.port ?? 0);
  return {
    ...address,
    setFaults: (f) => emulator.setFaults(f),
    setOnlineMs: (ms) => emulator.setOnlineMs(ms),
    setSlowMs: (ms) => emulator.setSlowMs(ms),
    callCount: (method) => emulator.callCount(method),
    close: async () => {
      emulator.stopOnline();
      await closeServer(server);
      await emulator.close();
    },
  };
}
