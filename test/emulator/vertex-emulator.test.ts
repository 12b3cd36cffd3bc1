import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { protos, v1 } from '@google-cloud/aiplatform';
import { Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { GoogleAuth, PassThroughClient } from 'google-auth-library';
import { PNG } from 'pngjs';
import type { RunningEmulator } from '../../src/emulator/gcs-emulator.ts';
import { startGcsEmulator } from '../../src/emulator/gcs-emulator.ts';
import type { RunningVertexEmulator, VertexEmulatorOptions } from '../../src/emulator/vertex-emulator.ts';
import { startVertexEmulator } from '../../src/emulator/vertex-emulator.ts';
import { decodeImage } from './image-decoders.ts';

type Job = protos.google.cloud.aiplatform.v1.IBatchPredictionJob;
const JobState = protos.google.cloud.aiplatform.v1.JobState;
const TERMINAL = new Set<number>([
  JobState.JOB_STATE_SUCCEEDED,
  JobState.JOB_STATE_FAILED,
  JobState.JOB_STATE_CANCELLED,
  JobState.JOB_STATE_PARTIALLY_SUCCEEDED,
  JobState.JOB_STATE_EXPIRED,
]);

const BUCKET = 'vertex-emulator-test';
const PARENT = 'projects/test-project/locations/us-central1';
const MODEL = 'publishers/google/models/gemini-2.5-flash-image';

function jobClient(port: number): v1.JobServiceClient {
  return new v1.JobServiceClient({
    apiEndpoint: '127.0.0.1',
    port,
    protocol: 'http',
    fallback: true,
    auth: new GoogleAuth({ authClient: new PassThroughClient() }),
  });
}

interface LineSpec {
  prompt: string;
  line: number;
  aspectRatio?: string;
  imageSize?: string;
  reference?: string;
  /** imageConfig.imageOutputOptions, as the service sends it. */
  output?: { mimeType: string; compressionQuality?: number };
}

function inputLine(spec: LineSpec): string {
  const parts: unknown[] = [{ text: spec.prompt }];
  if (spec.reference) parts.push({ fileData: { fileUri: spec.reference, mimeType: 'image/png' } });
  return JSON.stringify({
    request: {
      contents: [{ role: 'user', parts }],
      generationConfig: {
        responseModalities: ['IMAGE'],
        imageConfig: {
          aspectRatio: spec.aspectRatio ?? '16:9',
          imageSize: spec.imageSize ?? '1K',
          ...(spec.output ? { imageOutputOptions: spec.output } : {}),
        },
      },
      labels: { ibg_line: String(spec.line), ibg_img: '0' },
    },
  });
}

function stateOf(job: Job): number {
  return typeof job.state === 'number' ? job.state : JobState[job.state as keyof typeof JobState];
}

describe('Vertex AI JobService emulator through @google-cloud/aiplatform', () => {
  let dataDir: string;
  let gcs: RunningEmulator;
  let vertex: RunningVertexEmulator;
  let storage: Storage;
  let client: v1.JobServiceClient;
  const options = (dir: string, gcsUrl: string): VertexEmulatorOptions => ({
    dataDir: dir,
    gcsEndpoint: gcsUrl,
    queueMs: 60,
    lineMs: 5,
    slowMs: 400,
    imagePadBytes: 0,
    jobFault: 'none',
    transportFaults: [],
  });

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'vertex-emu-'));
    gcs = await startGcsEmulator({ dataDir: path.join(dataDir, 'gcs') });
    vertex = await startVertexEmulator(options(path.join(dataDir, 'vertex'), gcs.url));
    storage = new Storage({ apiEndpoint: gcs.url, projectId: 'test-project' });
    client = jobClient(vertex.port);
  });

  afterAll(async () => {
    await client?.close();
    await vertex?.close();
    await gcs?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  async function writeInput(name: string, lines: string[]): Promise<string> {
    await storage
      .bucket(BUCKET)
      .file(name)
      .save(`${lines.join('\n')}\n`, { resumable: false, contentType: 'application/jsonl' });
    return `gs://${BUCKET}/${name}`;
  }

  async function createJob(inputUri: string, labels: Record<string, string> = {}, c = client): Promise<Job> {
    const [job] = await c.createBatchPredictionJob({
      parent: PARENT,
      batchPredictionJob: {
        displayName: 'emulator-test',
        model: MODEL,
        inputConfig: { instancesFormat: 'jsonl', gcsSource: { uris: [inputUri] } },
        outputConfig: {
          predictionsFormat: 'jsonl',
          gcsDestination: { outputUriPrefix: `gs://${BUCKET}/out/${labels.shard ?? 'x'}` },
        },
        labels,
      },
    });
    return job;
  }

  /** Polls get until the predicate holds (short interval, hard deadline). */
  async function waitFor(name: string, predicate: (job: Job) => boolean, timeoutMs = 60_000, c = client): Promise<Job> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const [job] = await c.getBatchPredictionJob({ name });
      if (predicate(job)) return job;
      if (Date.now() > deadline) throw new Error(`timed out waiting on ${name}: ${JSON.stringify(job)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Finds predictions.jsonl by listing outputInfo.gcsOutputDirectory, then parses it. */
  async function readPredictions(job: Job): Promise<Array<Record<string, any>>> {
    const dir = job.outputInfo?.gcsOutputDirectory ?? '';
    const m = /^gs:\/\/([^/]+)\/(.+)$/.exec(dir);
    expect(m).not.toBeNull();
    const [files] = await storage.bucket(m![1]).getFiles({ prefix: m![2] });
    const predictions = files.find((f) => f.name.endsWith('/predictions.jsonl'));
    expect(predictions).toBeDefined();
    const [content] = await predictions!.download();
    return content
      .toString('utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  }

  function imageOf(line: Record<string, any>): Buffer {
    return Buffer.from(line.response.candidates[0].content.parts[0].inlineData.data, 'base64');
  }

  it('runs a job QUEUED → RUNNING → SUCCEEDED and writes decodable, deterministic images', async () => {
    await storage.bucket(BUCKET).file('refs/cat.png').save(Buffer.from('not really a png, only bytes to hash'));
    const uri = await writeInput('in/ok.jsonl', [
      inputLine({ prompt: 'a red fox in snow', line: 0 }),
      inputLine({ prompt: 'a red fox in snow', line: 1 }),
      inputLine({ prompt: 'a blue whale', line: 2 }),
      inputLine({ prompt: 'a red fox in snow', line: 3, reference: `gs://${BUCKET}/refs/cat.png` }),
      inputLine({ prompt: 'a tall tower', line: 4, aspectRatio: '9:16', imageSize: '2K' }),
    ]);
    const created = await createJob(uri, { batch: 'b1', shard: 'ok' });
    expect(created.name).toMatch(/^projects\/test-project\/locations\/us-central1\/batchPredictionJobs\/\d+$/);
    expect(stateOf(created)).toBe(JobState.JOB_STATE_QUEUED);
    expect(created.createTime).toBeTruthy();

    const seen = new Set<number>();
    const done = await waitFor(created.name!, (job) => {
      seen.add(stateOf(job));
      return TERMINAL.has(stateOf(job));
    });
    expect(stateOf(done)).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(seen.has(JobState.JOB_STATE_RUNNING) || seen.has(JobState.JOB_STATE_PENDING)).toBe(true);
    expect(done.completionStats).toMatchObject({ successfulCount: '5', failedCount: '0', incompleteCount: '0' });
    for (const t of ['createTime', 'startTime', 'endTime', 'updateTime'] as const) expect(done[t]).toBeTruthy();
    expect(done.outputInfo?.gcsOutputDirectory).toMatch(new RegExp(`^gs://${BUCKET}/out/ok/prediction-model-[^/]+/$`));
    expect(done.labels).toEqual({ batch: 'b1', shard: 'ok' });

    const lines = await readPredictions(done);
    expect(lines.map((l) => l.request.labels.ibg_line)).toEqual(['0', '1', '2', '3', '4']);
    for (const l of lines) {
      expect(l.status).toBe('');
      expect(l.response.modelVersion).toBe('gemini-2.5-flash-image');
      expect(l.response.candidates[0].finishReason).toBe('STOP');
      expect(l.response.candidates[0].content.parts[0].inlineData.mimeType).toBe('image/png');
      expect(l.response.usageMetadata.candidatesTokenCount).toBe(1290);
      expect(l.processed_time).toBeTruthy();
    }
    const decoded = PNG.sync.read(imageOf(lines[0]));
    expect([decoded.width, decoded.height]).toEqual([1344, 768]);
    const tall = PNG.sync.read(imageOf(lines[4]));
    expect([tall.width, tall.height]).toEqual([1536, 2688]);
    expect(imageOf(lines[0]).equals(imageOf(lines[1]))).toBe(true); // same prompt, same bytes
    expect(imageOf(lines[0]).equals(imageOf(lines[2]))).toBe(false); // other prompt
    expect(imageOf(lines[0]).equals(imageOf(lines[3]))).toBe(false); // derived from the reference
  });

  it('answers JPEG and WebP when the request asks for them: decodable, right size and mimeType, deterministic', async () => {
    const uri = await writeInput('in/formats.jsonl', [
      inputLine({ prompt: 'a lighthouse', line: 0, output: { mimeType: 'image/jpeg' } }),
      inputLine({ prompt: 'a lighthouse', line: 1, output: { mimeType: 'image/jpeg' } }),
      inputLine({ prompt: 'a lighthouse', line: 2, output: { mimeType: 'image/webp', compressionQuality: 80 } }),
      inputLine({ prompt: 'a lighthouse', line: 3, output: { mimeType: 'image/webp', compressionQuality: 80 } }),
      inputLine({
        prompt: 'a lighthouse',
        line: 4,
        output: { mimeType: 'image/jpeg', compressionQuality: 20 },
        aspectRatio: '3:4',
      }),
      inputLine({ prompt: 'a lighthouse', line: 5, output: { mimeType: 'image/png' } }),
      inputLine({ prompt: 'a lighthouse', line: 6, output: { mimeType: 'image/gif' } }),
    ]);
    const done = await waitFor((await createJob(uri, { shard: 'formats' })).name!, (job) => TERMINAL.has(stateOf(job)));
    expect(stateOf(done)).toBe(JobState.JOB_STATE_PARTIALLY_SUCCEEDED);
    expect(done.completionStats).toMatchObject({ successfulCount: '6', failedCount: '1' });
    const lines = await readPredictions(done);
    const mimeTypes = lines.slice(0, 6).map((l) => l.response.candidates[0].content.parts[0].inlineData.mimeType);
    expect(mimeTypes).toEqual(['image/jpeg', 'image/jpeg', 'image/webp', 'image/webp', 'image/jpeg', 'image/png']);
    const sizes = [];
    for (const [i, mimeType] of mimeTypes.entries()) {
      const decoded = await decodeImage(mimeType, imageOf(lines[i]));
      sizes.push([decoded.width, decoded.height]);
    }
    expect(sizes).toEqual([
      [1344, 768],
      [1344, 768],
      [1344, 768],
      [1344, 768],
      [864, 1184],
      [1344, 768],
    ]);
    expect(imageOf(lines[0]).equals(imageOf(lines[1]))).toBe(true); // same prompt, same bytes
    expect(imageOf(lines[2]).equals(imageOf(lines[3]))).toBe(true);
    expect(imageOf(lines[0]).subarray(0, 3).toString('hex')).toBe('ffd8ff');
    expect(imageOf(lines[2]).toString('latin1', 8, 12)).toBe('WEBP');
    expect(lines[6].response).toBeUndefined();
    expect(lines[6].status).toMatch(/image\/gif.*INVALID_ARGUMENT/);
  });

  it('ends PARTIALLY_SUCCEEDED when lines fail, and answers blocked prompts with promptFeedback', async () => {
    const uri = await writeInput('in/partial.jsonl', [
      inputLine({ prompt: 'fine', line: 0 }),
      inputLine({ prompt: 'broken [emulate:fail]', line: 1 }),
      inputLine({ prompt: 'forbidden [emulate:block]', line: 2 }),
    ]);
    const created = await createJob(uri, { shard: 'partial' });
    const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)));
    expect(stateOf(done)).toBe(JobState.JOB_STATE_PARTIALLY_SUCCEEDED);
    expect(done.completionStats).toMatchObject({ successfulCount: '2', failedCount: '1', incompleteCount: '0' });
    const lines = await readPredictions(done);
    const byLine = new Map(lines.map((l) => [l.request.labels.ibg_line, l]));
    expect(byLine.get('0')!.status).toBe('');
    expect(byLine.get('1')!.status).not.toBe('');
    expect(byLine.get('1')!.response?.candidates).toBeUndefined();
    expect(byLine.get('2')!.status).toBe('');
    expect(byLine.get('2')!.response.promptFeedback.blockReason).toBe('PROHIBITED_CONTENT');
    expect(byLine.get('2')!.response.candidates).toBeUndefined();
  });

  it('cancels a running job: CANCELLED, with the finished lines written', async () => {
    const lines = Array.from({ length: 40 }, (_, i) =>
      inputLine({ prompt: `slow picture ${i} [emulate:slow]`, line: i }),
    );
    const created = await createJob(await writeInput('in/cancel.jsonl', lines), { shard: 'cancel' });
    await waitFor(created.name!, (job) => Number(job.completionStats?.successfulCount ?? 0) >= 1);
    await client.cancelBatchPredictionJob({ name: created.name });
    const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)));
    expect(stateOf(done)).toBe(JobState.JOB_STATE_CANCELLED);
    const written = await readPredictions(done);
    expect(written.length).toBeGreaterThanOrEqual(1);
    expect(written.length).toBeLessThan(40);
    expect(Number(done.completionStats?.incompleteCount)).toBe(40 - written.length);
  });

  it('lists by label filter, with and without auto-pagination', async () => {
    const uri = await writeInput('in/list.jsonl', [inputLine({ prompt: 'x', line: 0 })]);
    const names: string[] = [];
    for (let i = 0; i < 3; i++) names.push((await createJob(uri, { batch: 'listed', shard: 'abc' })).name!);
    await createJob(uri, { batch: 'listed', shard: 'other' });

    const [all] = await client.listBatchPredictionJobs({ parent: PARENT, filter: 'labels.shard="abc"', pageSize: 2 });
    expect(all.map((j) => j.name).sort()).toEqual([...names].sort());

    const [page1, next] = await client.listBatchPredictionJobs(
      { parent: PARENT, filter: 'labels.shard=abc AND labels.batch="listed"', pageSize: 2 },
      { autoPaginate: false },
    );
    expect(page1).toHaveLength(2);
    expect(next?.pageToken).toBeTruthy();
    const [page2, last] = await client.listBatchPredictionJobs(next!, { autoPaginate: false });
    expect(page2).toHaveLength(1);
    expect(last).toBeNull();
    expect([...page1, ...page2].map((j) => j.name).sort()).toEqual([...names].sort());

    const [none] = await client.listBatchPredictionJobs({ parent: PARENT, filter: 'labels.shard="nope"' });
    expect(none).toEqual([]);
  });

  it('refuses to delete an unfinished job and deletes a finished one (an Operation)', async () => {
    const uri = await writeInput('in/delete.jsonl', [
      inputLine({ prompt: 'slow [emulate:slow]', line: 0 }),
      inputLine({ prompt: 'y', line: 1 }),
    ]);
    const created = await createJob(uri, { shard: 'delete' });
    await expect(client.deleteBatchPredictionJob({ name: created.name })).rejects.toMatchObject({ code: 9 }); // FAILED_PRECONDITION
    const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)));
    expect(stateOf(done)).toBe(JobState.JOB_STATE_SUCCEEDED);
    const [op] = await client.deleteBatchPredictionJob({ name: created.name });
    await op.promise();
    await expect(client.getBatchPredictionJob({ name: created.name })).rejects.toMatchObject({ code: 5 }); // NOT_FOUND
  });

  it('rejects bad requests with INVALID_ARGUMENT', async () => {
    const good = {
      displayName: 'bad-request-test',
      model: MODEL,
      inputConfig: { instancesFormat: 'jsonl', gcsSource: { uris: [`gs://${BUCKET}/in/ok.jsonl`] } },
      outputConfig: { predictionsFormat: 'jsonl', gcsDestination: { outputUriPrefix: `gs://${BUCKET}/out/bad` } },
    };
    const bad: Job[] = [
      { ...good, labels: { Shard: 'abc' } },
      { ...good, labels: { shard: 'ABC' } },
      { ...good, inputConfig: { ...good.inputConfig, instancesFormat: 'csv' } },
      { ...good, outputConfig: { ...good.outputConfig, predictionsFormat: 'bigquery' } },
      { ...good, inputConfig: { instancesFormat: 'jsonl', gcsSource: { uris: [] } } },
      { ...good, model: 'publishers/google/models/no-such-model' },
      { ...good, displayName: '' },
    ];
    for (const batchPredictionJob of bad) {
      await expect(client.createBatchPredictionJob({ parent: PARENT, batchPredictionJob })).rejects.toMatchObject({
        code: 3,
      });
    }
    await expect(client.getBatchPredictionJob({ name: `${PARENT}/batchPredictionJobs/42` })).rejects.toMatchObject({
      code: 5,
    });
  });

  it('answers transport faults as the client error, then serves the next call', async () => {
    const uri = await writeInput('in/fault.jsonl', [inputLine({ prompt: 'z', line: 0 })]);
    const created = await createJob(uri, { shard: 'fault' });
    vertex.setFaults({
      transportFaults: [
        { method: 'GetBatchPredictionJob', call: 2, status: 503 },
        { method: 'CreateBatchPredictionJob', call: 1, status: 429 },
      ],
    });
    await client.getBatchPredictionJob({ name: created.name });
    await expect(client.getBatchPredictionJob({ name: created.name })).rejects.toMatchObject({ code: 14 }); // UNAVAILABLE
    await client.getBatchPredictionJob({ name: created.name });
    await expect(createJob(uri, { shard: 'fault' })).rejects.toMatchObject({ code: 8 }); // RESOURCE_EXHAUSTED
    await createJob(uri, { shard: 'fault' });
    vertex.setFaults({ transportFaults: [{ method: 'ListBatchPredictionJobs', call: 1, status: 500 }] });
    await expect(
      client.listBatchPredictionJobs({ parent: PARENT, filter: 'labels.shard="fault"' }),
    ).rejects.toMatchObject({ code: 13 }); // INTERNAL
    const [listed] = await client.listBatchPredictionJobs({ parent: PARENT, filter: 'labels.shard="fault"' });
    expect(listed).toHaveLength(2);
    vertex.setFaults({ transportFaults: [] });
  });

  it('VERTEX_EMULATOR_IMAGE=tiny answers every line with one small image of the format it asks for', async () => {
    const tiny = await startVertexEmulator({
      ...options(path.join(dataDir, 'vertex-tiny'), gcs.url),
      image: 'tiny',
      lineMs: 0,
    });
    const tinyClient = jobClient(tiny.port);
    try {
      const uri = await writeInput('in/tiny.jsonl', [
        inputLine({ prompt: 'a red fox in snow', line: 0 }),
        inputLine({ prompt: 'a blue whale', line: 1, aspectRatio: '9:16', imageSize: '2K' }),
        inputLine({ prompt: 'a lighthouse', line: 2, output: { mimeType: 'image/jpeg' } }),
        inputLine({ prompt: 'a lighthouse', line: 3, output: { mimeType: 'image/webp' } }),
        inputLine({ prompt: 'broken [emulate:fail]', line: 4 }),
      ]);
      const created = await createJob(uri, { shard: 'tiny' }, tinyClient);
      const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)), 10_000, tinyClient);
      expect(stateOf(done)).toBe(JobState.JOB_STATE_PARTIALLY_SUCCEEDED);
      const lines = await readPredictions(done);
      expect(lines.map((l) => l.request.labels.ibg_line)).toEqual(['0', '1', '2', '3', '4']);
      // The same bytes whatever the prompt or size; still a usage and a decodable image of the asked format.
      expect(imageOf(lines[0]).equals(imageOf(lines[1]))).toBe(true);
      expect(lines[1].response.usageMetadata.candidatesTokenCount).toBe(1290);
      for (const [i, mimeType] of [
        [0, 'image/png'],
        [2, 'image/jpeg'],
        [3, 'image/webp'],
      ] as const) {
        expect(lines[i].response.candidates[0].content.parts[0].inlineData.mimeType).toBe(mimeType);
        const image = await decodeImage(mimeType, imageOf(lines[i]));
        expect([image.width, image.height]).toEqual([8, 8]);
      }
      expect(imageOf(lines[0]).length).toBeLessThan(1024);
      expect(lines[4].status).toMatch(/emulate:fail/);
    } finally {
      await tinyClient.close();
      await tiny.close();
    }
  });

  it('fails a job whose input cannot be read (NOT_FOUND, naming the file), and keeps running the others', async () => {
    const present = await writeInput('in/present.jsonl', [inputLine({ prompt: 'present', line: 0 })]);
    const missingObject = `gs://${BUCKET}/in/never-written.jsonl`;
    const missingBucket = 'gs://no-such-bucket-here/in/x.jsonl';
    const running = await createJob(
      await writeInput('in/alongside.jsonl', [
        inputLine({ prompt: 'slow [emulate:slow]', line: 0 }),
        inputLine({ prompt: 'after it', line: 1 }),
      ]),
      { shard: 'alongside' },
    );
    const failing = [
      { uris: [missingObject], named: missingObject },
      // The first file reads fine: the error names the one that does not.
      { uris: [present, missingObject], named: missingObject },
      { uris: [missingBucket], named: missingBucket },
    ];
    for (const { uris, named } of failing) {
      const [created] = await client.createBatchPredictionJob({
        parent: PARENT,
        batchPredictionJob: {
          displayName: 'missing-input',
          model: MODEL,
          inputConfig: { instancesFormat: 'jsonl', gcsSource: { uris } },
          outputConfig: {
            predictionsFormat: 'jsonl',
            gcsDestination: { outputUriPrefix: `gs://${BUCKET}/out/missing` },
          },
        },
      });
      const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)));
      expect(stateOf(done)).toBe(JobState.JOB_STATE_FAILED);
      expect(done.error?.code).toBe(5); // NOT_FOUND
      expect(done.error?.message).toContain(named);
      expect(done.endTime).toBeTruthy();
    }
    // The job that was running meanwhile, and one created after, both succeed.
    const after = await createJob(await writeInput('in/after-missing.jsonl', [inputLine({ prompt: 'q', line: 0 })]), {
      shard: 'after-missing',
    });
    for (const job of [running, after]) {
      const done = await waitFor(job.name!, (j) => TERMINAL.has(stateOf(j)));
      expect(stateOf(done)).toBe(JobState.JOB_STATE_SUCCEEDED);
    }
  });

  it('runs at most maxRunningJobs jobs at once: the others wait QUEUED, in the order they came', async () => {
    const limited = await startVertexEmulator({
      ...options(path.join(dataDir, 'vertex-limited'), gcs.url),
      maxRunningJobs: 1,
      lineMs: 40,
    });
    const limitedClient = jobClient(limited.port);
    try {
      const lines = Array.from({ length: 8 }, (_, i) => inputLine({ prompt: `slowly ${i}`, line: i }));
      const first = await createJob(await writeInput('in/first.jsonl', lines), { shard: 'first' }, limitedClient);
      const second = await createJob(await writeInput('in/second.jsonl', lines), { shard: 'second' }, limitedClient);
      await waitFor(first.name!, (job) => stateOf(job) === JobState.JOB_STATE_RUNNING, 10_000, limitedClient);
      // The first runs for 8 × 40 ms, far longer than the queue time (60 ms): the second waits.
      await new Promise((r) => setTimeout(r, 150));
      const [waiting] = await limitedClient.getBatchPredictionJob({ name: second.name });
      expect(stateOf(waiting)).toBe(JobState.JOB_STATE_QUEUED);
      const [a, b] = await Promise.all(
        [first, second].map((j) => waitFor(j.name!, (job) => TERMINAL.has(stateOf(job)), 10_000, limitedClient)),
      );
      expect([stateOf(a), stateOf(b)]).toEqual([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_SUCCEEDED]);
      const at = (t: Job['startTime']) => Number(t?.seconds ?? 0) * 1e3 + (t?.nanos ?? 0) / 1e6;
      expect(at(b.startTime)).toBeGreaterThanOrEqual(at(a.endTime));
    } finally {
      await limitedClient.close();
      await limited.close();
    }
  });

  describe('job faults and restarts (own emulator instance)', () => {
    let dir: string;
    let own: RunningVertexEmulator;
    let ownClient: v1.JobServiceClient;

    beforeAll(async () => {
      dir = path.join(dataDir, 'vertex-faults');
      own = await startVertexEmulator({ ...options(dir, gcs.url), jobFault: 'fail' });
      ownClient = jobClient(own.port);
    });

    afterAll(async () => {
      await ownClient?.close();
      await own?.close();
    });

    it("jobFault 'fail' ends the job FAILED with an error", async () => {
      own.setFaults({ jobFault: 'fail' });
      const created = await createJob(
        await writeInput('in/jobfail.jsonl', [inputLine({ prompt: 'q', line: 0 })]),
        { shard: 'jobfail' },
        ownClient,
      );
      const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)), 10_000, ownClient);
      expect(stateOf(done)).toBe(JobState.JOB_STATE_FAILED);
      expect(done.error?.code).toBe(13);
      expect(done.error?.message).toBeTruthy();
    });

    it("jobFault 'stuck' keeps the job QUEUED until it is cancelled", async () => {
      own.setFaults({ jobFault: 'stuck' });
      const created = await createJob(
        await writeInput('in/stuck.jsonl', [inputLine({ prompt: 'q', line: 0 })]),
        { shard: 'stuck' },
        ownClient,
      );
      await new Promise((r) => setTimeout(r, 300)); // well past queueMs: asserting that nothing happens
      const [still] = await ownClient.getBatchPredictionJob({ name: created.name });
      expect(stateOf(still)).toBe(JobState.JOB_STATE_QUEUED);
      await ownClient.cancelBatchPredictionJob({ name: created.name });
      const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)), 10_000, ownClient);
      expect(stateOf(done)).toBe(JobState.JOB_STATE_CANCELLED);
    });

    it('a job still QUEUED after queueExpireMs ends EXPIRED, with an error and no output', async () => {
      const expiring = await startVertexEmulator({
        ...options(path.join(dataDir, 'vertex-expiry'), gcs.url),
        jobFault: 'stuck',
        queueExpireMs: 300,
      });
      const expiringClient = jobClient(expiring.port);
      try {
        const input = await writeInput('in/expire.jsonl', [inputLine({ prompt: 'q', line: 0 })]);
        const created = await createJob(input, { shard: 'expire' }, expiringClient);
        expect(stateOf(created)).toBe(JobState.JOB_STATE_QUEUED);
        const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)), 10_000, expiringClient);
        expect(stateOf(done)).toBe(JobState.JOB_STATE_EXPIRED);
        expect(done.error?.code).toBe(4);
        expect(done.error?.message).toMatch(/expired/);
        expect(done.endTime).toBeTruthy();
        expect(done.startTime).toBeFalsy();
        expect(done.outputInfo?.gcsOutputDirectory).toBeFalsy();
        const [written] = await storage.bucket(BUCKET).getFiles({ prefix: 'out/expire' });
        expect(written).toEqual([]);
      } finally {
        await expiringClient.close();
        await expiring.close();
      }
    });

    it('resumes unfinished jobs after a restart', async () => {
      own.setFaults({ jobFault: 'none' });
      const lines = Array.from({ length: 30 }, (_, i) => inputLine({ prompt: `restart ${i}`, line: i }));
      const created = await createJob(await writeInput('in/restart.jsonl', lines), { shard: 'restart' }, ownClient);
      await waitFor(created.name!, (job) => Number(job.completionStats?.successfulCount ?? 0) >= 2, 10_000, ownClient);
      await ownClient.close();
      await own.close();
      own = await startVertexEmulator({ ...options(dir, gcs.url), jobFault: 'none' });
      ownClient = jobClient(own.port);
      const done = await waitFor(created.name!, (job) => TERMINAL.has(stateOf(job)), 10_000, ownClient);
      expect(stateOf(done)).toBe(JobState.JOB_STATE_SUCCEEDED);
      const written = await readPredictions(done);
      expect(written.map((l) => Number(l.request.labels.ibg_line))).toEqual(lines.map((_, i) => i));
    });
  });
});
