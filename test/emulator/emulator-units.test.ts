import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CRC32C, Storage } from '@google-cloud/storage';
import { describe, expect, it } from '@jest/globals';
import { PNG } from 'pngjs';
import { loadEmulatorConfig, parseTransportFaults } from '../../src/config.ts';
import { generateImage, generatePng, imageDimensions } from '../../src/emulator/image-generator.ts';
import { startEmulators } from '../../src/emulator/index.ts';
import { compileFilter } from '../../src/emulator/vertex-emulator.ts';
import type { JobResource } from '../../src/emulator/vertex-jobs.ts';
import { validateBatchJob } from '../../src/emulator/vertex-validation.ts';
import { Crc32c } from '../../src/storage/crc32c.ts';
import { decodeImage, meanDifference } from './image-decoders.ts';

describe('emulator settings', () => {
  it('has documented defaults', () => {
    expect(loadEmulatorConfig({})).toEqual({
      dataDir: path.resolve('./data'),
      emulator: {
        gcsPort: 4443,
        vertexPort: 8090,
        queueMs: 2000,
        queueExpireMs: 72 * 3_600_000,
        lineMs: 20,
        slowMs: 2000,
        onlineMs: 1500,
        imagePadBytes: 0,
        image: 'full',
        maxRunningJobs: 0,
        jobFault: 'none',
        transportFaults: [],
      },
    });
  });

  it('reads every variable and rejects bad values', () => {
    const s = loadEmulatorConfig({
      DATA_DIR: '/tmp/x',
      GCS_EMULATOR_PORT: '0',
      VERTEX_EMULATOR_PORT: '9999',
      VERTEX_EMULATOR_QUEUE_MS: '10',
      VERTEX_EMULATOR_QUEUE_EXPIRE_MS: '90s',
      VERTEX_EMULATOR_LINE_MS: '1',
      VERTEX_EMULATOR_SLOW_MS: '5',
      VERTEX_EMULATOR_ONLINE_MS: '250ms',
      VERTEX_EMULATOR_IMAGE_PAD_BYTES: '1000000',
      VERTEX_EMULATOR_IMAGE: 'tiny',
      VERTEX_EMULATOR_MAX_RUNNING_JOBS: '3',
      VERTEX_EMULATOR_JOB_FAULT: 'stuck',
      VERTEX_EMULATOR_FAULTS:
        'GetBatchPredictionJob:3:503, CreateBatchPredictionJob:1:429, GenerateContent:2:503, GenerateContent:3:504, GenerateContent:4:hang',
    });
    expect(s.dataDir).toBe('/tmp/x');
    expect(s.emulator).toMatchObject({
      gcsPort: 0,
      vertexPort: 9999,
      queueMs: 10,
      queueExpireMs: 90_000,
      lineMs: 1,
      slowMs: 5,
      onlineMs: 250,
      imagePadBytes: 1_000_000,
      image: 'tiny',
      maxRunningJobs: 3,
      jobFault: 'stuck',
    });
    expect(s.emulator.transportFaults).toEqual([
      { method: 'GetBatchPredictionJob', call: 3, status: 503 },
      { method: 'CreateBatchPredictionJob', call: 1, status: 429 },
      { method: 'GenerateContent', call: 2, status: 503 },
      { method: 'GenerateContent', call: 3, status: 504 },
      { method: 'GenerateContent', call: 4, status: 'hang' },
    ]);
    expect(() => loadEmulatorConfig({ VERTEX_EMULATOR_LINE_MS: '-1' })).toThrow(/VERTEX_EMULATOR_LINE_MS/);
    expect(() => loadEmulatorConfig({ VERTEX_EMULATOR_ONLINE_MS: 'fast' })).toThrow(/VERTEX_EMULATOR_ONLINE_MS/);
    expect(() => loadEmulatorConfig({ GCS_EMULATOR_PORT: '70000' })).toThrow(/GCS_EMULATOR_PORT/);
    expect(() => loadEmulatorConfig({ VERTEX_EMULATOR_JOB_FAULT: 'boom' })).toThrow(/JOB_FAULT/);
    expect(() => loadEmulatorConfig({ VERTEX_EMULATOR_QUEUE_EXPIRE_MS: 'soon' })).toThrow(/QUEUE_EXPIRE_MS/);
    expect(() => loadEmulatorConfig({ VERTEX_EMULATOR_IMAGE: 'huge' })).toThrow(/VERTEX_EMULATOR_IMAGE/);
    expect(() => loadEmulatorConfig({ VERTEX_EMULATOR_MAX_RUNNING_JOBS: '-1' })).toThrow(/MAX_RUNNING_JOBS/);
  });

  it('parses transport fault specs strictly', () => {
    const problems: string[] = [];
    expect(parseTransportFaults('', problems)).toEqual([]);
    expect(parseTransportFaults('ListBatchPredictionJobs:2:500', problems)).toEqual([
      { method: 'ListBatchPredictionJobs', call: 2, status: 500 },
    ]);
    expect(problems).toEqual([]);
    for (const bad of ['GetJob:1:503', 'GetBatchPredictionJob:0:503', 'GetBatchPredictionJob:1:404']) {
      const found: string[] = [];
      expect(parseTransportFaults(bad, found)).toEqual([]);
      expect(found).toHaveLength(1);
    }
  });
});

describe('batch job validation against the shipped protos', () => {
  const good = {
    displayName: 'x',
    model: 'projects/p/locations/us-central1/publishers/google/models/gemini-3-pro-image-preview',
    inputConfig: { instancesFormat: 'jsonl', gcsSource: { uris: ['gs://bucket/in/input.jsonl'] } },
    outputConfig: { predictionsFormat: 'jsonl', gcsDestination: { outputUriPrefix: 'gs://bucket/out' } },
    labels: { batch: 'b-1', shard: 's_2' },
  };

  it('accepts a valid job, in camelCase or snake_case field names', () => {
    expect(validateBatchJob(good).model.id).toBe('gemini-3-pro-image-preview');
    const { displayName, ...rest } = good;
    expect(() => validateBatchJob({ ...rest, display_name: displayName })).not.toThrow();
  });

  it('rejects unknown fields at any depth, with the path', () => {
    expect(() => validateBatchJob({ ...good, colour: 'red' })).toThrow(
      /Unknown name "colour" at 'batch_prediction_job'/,
    );
    expect(() =>
      validateBatchJob({
        ...good,
        inputConfig: { ...good.inputConfig, gcsSource: { uris: good.inputConfig.gcsSource.uris, bucket: 'x' } },
      }),
    ).toThrow(/Unknown name "bucket" at 'batch_prediction_job.input_config.gcs_source'/);
  });

  it('enforces label rules', () => {
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    expect(() => validateBatchJob({ ...good, labels: many })).toThrow(/At most 64 labels/);
    expect(() => validateBatchJob({ ...good, labels: { ['k'.repeat(64)]: 'v' } })).toThrow(/Label key/);
    expect(() => validateBatchJob({ ...good, labels: { k: 'v'.repeat(64) } })).toThrow(/Label value/);
    expect(() => validateBatchJob({ ...good, labels: { '1k': 'v' } })).toThrow(/Label key/);
  });
});

describe('crc32c', () => {
  it('matches the Storage client for any length and split', () => {
    for (const n of [0, 1, 7, 8, 9, 1000, 65_537]) {
      const data = randomBytes(n);
      const reference = new CRC32C();
      reference.update(data);
      const ours = new Crc32c().update(data.subarray(0, n >> 1)).update(data.subarray(n >> 1));
      expect(ours.toBase64()).toBe(reference.toString());
    }
  });
});

describe('list filters', () => {
  const job = {
    labels: { shard: 'abc', batch: 'b1' },
    state: 'JOB_STATE_RUNNING',
    displayName: 'n',
  } as unknown as JobResource;
  it('matches labels quoted and bare, AND-joined, plus state', () => {
    expect(compileFilter('labels.shard="abc"')(job)).toBe(true);
    expect(compileFilter('labels.shard=abc AND labels.batch="b1"')(job)).toBe(true);
    expect(compileFilter('labels.shard=abc and labels.batch="b2"')(job)).toBe(false);
    expect(compileFilter('labels.batch:*')(job)).toBe(true);
    expect(compileFilter('labels.other:*')(job)).toBe(false);
    expect(compileFilter('state=JOB_STATE_RUNNING')(job)).toBe(true);
    expect(() => compileFilter('labels.a="x" OR labels.b="y"')).toThrow();
    expect(() => compileFilter('colour="red"')).toThrow();
  });
});

describe('placeholder images', () => {
  it('pads to about the requested size and stays decodable', () => {
    const png = generatePng({ width: 1024, height: 1024, seed: 'pad', padToBytes: 1_000_000 });
    expect(png.length).toBe(1_000_000);
    const decoded = PNG.sync.read(png);
    expect([decoded.width, decoded.height]).toEqual([1024, 1024]);
  });

  it('encodes a 4K image quickly', () => {
    const dims = imageDimensions('16:9', '4K');
    expect(dims).toEqual({ width: 5376, height: 3072 });
    // CPU time, not wall time: on a loaded machine (the other test worker) wall time made this flaky.
    const before = process.cpuUsage();
    const png = generatePng({ ...dims, seed: 'big' });
    const used = process.cpuUsage(before);
    expect((used.user + used.system) / 1000).toBeLessThan(3000);
    expect(PNG.sync.read(png).width).toBe(5376);
  });

  it("encodes JPEG and WebP with the PNG's pixels, deterministically", async () => {
    const spec = { width: 640, height: 360, seed: 'formats' };
    const png = await decodeImage('image/png', generatePng(spec));
    for (const mimeType of ['image/jpeg', 'image/webp'] as const) {
      const image = await generateImage({ ...spec, mimeType, quality: 90 });
      expect(image.mimeType).toBe(mimeType);
      const decoded = await decodeImage(mimeType, image.data);
      expect([decoded.width, decoded.height]).toEqual([640, 360]);
      // Lossy, but the same picture: a few levels of difference at most on average.
      expect(meanDifference(decoded, png)).toBeLessThan(4);
      expect((await generateImage({ ...spec, mimeType, quality: 90 })).data.equals(image.data)).toBe(true);
      expect((await generateImage({ ...spec, mimeType, quality: 30 })).data.equals(image.data)).toBe(false);
    }
    expect(generatePng(spec).equals((await generateImage(spec)).data)).toBe(true); // PNG stays the default
  });

  it('pads JPEG and WebP to the requested size and they stay decodable', async () => {
    for (const mimeType of ['image/jpeg', 'image/webp'] as const) {
      for (const padToBytes of [300_000, 1_000_001]) {
        const image = await generateImage({ width: 512, height: 512, seed: 'pad', mimeType, padToBytes });
        expect(image.data.length).toBeGreaterThanOrEqual(padToBytes - 1);
        expect(image.data.length).toBeLessThanOrEqual(padToBytes);
        const decoded = await decodeImage(mimeType, image.data);
        expect([decoded.width, decoded.height]).toEqual([512, 512]);
        const plain = await decodeImage(
          mimeType,
          (await generateImage({ width: 512, height: 512, seed: 'pad', mimeType })).data,
        );
        expect(Buffer.from(decoded.data).equals(Buffer.from(plain.data))).toBe(true); // padding changes no pixel
      }
    }
    const webp = (
      await generateImage({ width: 64, height: 48, seed: 'pad', mimeType: 'image/webp', padToBytes: 10_000 })
    ).data;
    expect(webp.toString('latin1', 12, 16)).toBe('VP8X'); // unknown chunks need the extended format
    expect(webp.readUInt32LE(4)).toBe(webp.length - 8); // RIFF size rewritten
  });

  it('encodes 4K JPEG and WebP in well under seconds of CPU time', async () => {
    const dims = imageDimensions('1:1', '4K');
    await generateImage({ width: 64, height: 64, seed: 'warm-up', mimeType: 'image/webp' }); // compiles the codec
    for (const mimeType of ['image/jpeg', 'image/webp'] as const) {
      // CPU time, not wall time: other processes on a busy test machine do not count (about 0.4 s idle).
      const before = process.cpuUsage();
      const image = await generateImage({ ...dims, seed: 'big', mimeType });
      const used = process.cpuUsage(before);
      // CPU time of the whole test process (GC and jest included), so a loaded run measured 3.8 s:
      // the bound catches an encoder gone pathological (tens of seconds), not ordinary noise.
      expect((used.user + used.system) / 1000).toBeLessThan(10_000);
      expect(image.data.length).toBeGreaterThan(10_000);
    }
  });

  it('knows the aspect ratios and sizes', () => {
    expect(imageDimensions(undefined, undefined)).toEqual({ width: 1024, height: 1024 });
    expect(imageDimensions('3:4', '2K')).toEqual({ width: 1728, height: 2368 });
    expect(() => imageDimensions('7:3', '1K')).toThrow();
    expect(() => imageDimensions('1:1', '8K')).toThrow();
  });
});

describe('startEmulators', () => {
  it('starts both on random ports, wired together, and closes them', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'emus-'));
    const emus = await startEmulators({
      dataDir,
      vertex: { queueMs: 0, lineMs: 0, slowMs: 0, imagePadBytes: 0, jobFault: 'none', transportFaults: [] },
    });
    try {
      expect(emus.gcs.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(emus.vertex.port).not.toBe(emus.gcs.port);
      const storage = new Storage({ apiEndpoint: emus.gcs.url, projectId: 'p' });
      await storage.bucket('wired').file('x').save('y', { resumable: false });
    } finally {
      await emus.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
