import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { protos } from '@google-cloud/aiplatform';
import { Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { generateContent } from '../../src/emulator/gemini-responder.ts';
import type { RunningEmulators } from '../../src/emulator/index.ts';
import { startEmulators } from '../../src/emulator/index.ts';
import { KNOWN_MODELS } from '../../src/emulator/models.ts';
import type { PredictionServiceClient } from '../../src/vertex/job-client.ts';
import { createPredictionClient } from '../../src/vertex/job-client.ts';
import { decodeImage } from './image-decoders.ts';

type Request = protos.google.cloud.aiplatform.v1.IGenerateContentRequest;
type Response = protos.google.cloud.aiplatform.v1.IGenerateContentResponse;

const MODEL = 'projects/test-project/locations/us-central1/publishers/google/models/gemini-2.5-flash-image';
const ONLINE_MS = 20;
const SLOW_MS = 300;

interface Spec {
  prompt: string;
  model?: string;
  aspectRatio?: string;
  imageSize?: string;
  modalities?: Array<'TEXT' | 'IMAGE'>;
  output?: { mimeType: string; compressionQuality?: number };
  references?: Buffer[];
}

function request(spec: Spec): Request {
  const parts: protos.google.cloud.aiplatform.v1.IPart[] = [{ text: spec.prompt }];
  for (const data of spec.references ?? []) parts.push({ inlineData: { mimeType: 'image/png', data } });
  return {
    model: spec.model ?? MODEL,
    contents: [{ role: 'user', parts }],
    generationConfig: {
      // The generated types want the enum; the client sends names and numbers alike as numbers.
      responseModalities: (spec.modalities ?? [
        'IMAGE',
      ]) as unknown as protos.google.cloud.aiplatform.v1.GenerationConfig.Modality[],
      imageConfig: {
        aspectRatio: spec.aspectRatio ?? '16:9',
        imageSize: spec.imageSize ?? '1K',
        ...(spec.output ? { imageOutputOptions: spec.output } : {}),
      },
    },
    labels: { ibg_request: 'test' },
  };
}

function imagePart(response: Response): { mimeType: string; data: Buffer } {
  const part = response.candidates?.[0]?.content?.parts?.find((p) => p.inlineData);
  expect(part?.inlineData).toBeTruthy();
  return { mimeType: part!.inlineData!.mimeType!, data: part!.inlineData!.data as Buffer };
}

describe('Vertex AI online prediction (:generateContent) through PredictionServiceClient', () => {
  let dataDir: string;
  let emulators: RunningEmulators;
  let client: PredictionServiceClient;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'vertex-online-'));
    emulators = await startEmulators({
      dataDir,
      vertex: {
        queueMs: 0,
        lineMs: 0,
        slowMs: SLOW_MS,
        onlineMs: ONLINE_MS,
        imagePadBytes: 0,
        jobFault: 'none',
        transportFaults: [],
      },
    });
    client = createPredictionClient({ location: 'us-central1', endpoint: emulators.vertex.url });
  });

  afterAll(async () => {
    await client?.close();
    await emulators?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('answers an image as a Buffer that decodes as a PNG of the asked size, with usage and model version', async () => {
    const [response] = await client.generateContent(
      request({ prompt: 'a red fox', aspectRatio: '9:16', imageSize: '2K' }),
    );
    const candidate = response.candidates![0];
    expect(candidate.finishReason).toBe('STOP');
    expect(candidate.content?.parts).toHaveLength(1); // IMAGE only: no text part
    const image = imagePart(response);
    expect(image.mimeType).toBe('image/png');
    // `bytes` field: the client decodes the base64 and hands back a Buffer.
    expect(Buffer.isBuffer(image.data)).toBe(true);
    const decoded = await decodeImage('image/png', image.data);
    expect([decoded.width, decoded.height]).toEqual([1536, 2688]);
    expect(response.modelVersion).toBe('gemini-2.5-flash-image');
    expect(response.responseId).toBeTruthy();
    expect(response.usageMetadata).toMatchObject({ candidatesTokenCount: 1290 });
    expect(Number(response.usageMetadata?.promptTokenCount)).toBeGreaterThan(0);
    expect(response.promptFeedback).toBeFalsy();

    const [again] = await client.generateContent(
      request({ prompt: 'a red fox', aspectRatio: '9:16', imageSize: '2K' }),
    );
    expect(imagePart(again).data.equals(image.data)).toBe(true); // deterministic
    const [other] = await client.generateContent(
      request({ prompt: 'a blue whale', aspectRatio: '9:16', imageSize: '2K' }),
    );
    expect(imagePart(other).data.equals(image.data)).toBe(false);
  });

  it('gives the same picture as a batch line of the same request', async () => {
    const model = KNOWN_MODELS['gemini-2.5-flash-image'];
    const storage = new Storage({ apiEndpoint: emulators.gcs.url, projectId: 'test-project' });
    const { model: _m, ...body } = request({ prompt: 'a lighthouse at dusk' });
    const batch = JSON.parse(
      await generateContent(JSON.parse(JSON.stringify(body)), { model, storage, imagePadBytes: 0 }),
    );
    const [online] = await client.generateContent(request({ prompt: 'a lighthouse at dusk' }));
    expect(
      imagePart(online).data.equals(Buffer.from(batch.candidates[0].content.parts[0].inlineData.data, 'base64')),
    ).toBe(true);
  });

  it('adds a text part when TEXT is asked for as well', async () => {
    const [response] = await client.generateContent(request({ prompt: 'a cat', modalities: ['TEXT', 'IMAGE'] }));
    const parts = response.candidates![0].content!.parts!;
    expect(parts).toHaveLength(2);
    expect(parts[0].text).toMatch(/placeholder image for: a cat/);
    expect(imagePart(response).mimeType).toBe('image/png');
  });

  it('answers JPEG when imageOutputOptions asks for it', async () => {
    const [response] = await client.generateContent(
      request({ prompt: 'a harbour', aspectRatio: '3:4', output: { mimeType: 'image/jpeg', compressionQuality: 80 } }),
    );
    const image = imagePart(response);
    expect(image.mimeType).toBe('image/jpeg');
    expect(image.data.subarray(0, 3).toString('hex')).toBe('ffd8ff');
    const decoded = await decodeImage('image/jpeg', image.data);
    expect([decoded.width, decoded.height]).toEqual([864, 1184]);
  });

  it('derives the picture from inline reference images', async () => {
    const plain = imagePart((await client.generateContent(request({ prompt: 'a portrait' })))[0]).data;
    const refA = Buffer.from('reference image A, only bytes to hash');
    const refB = Buffer.from('reference image B, only bytes to hash');
    const withA = imagePart((await client.generateContent(request({ prompt: 'a portrait', references: [refA] })))[0]);
    const withA2 = imagePart((await client.generateContent(request({ prompt: 'a portrait', references: [refA] })))[0]);
    const withB = imagePart((await client.generateContent(request({ prompt: 'a portrait', references: [refB] })))[0]);
    expect(withA.data.equals(plain)).toBe(false);
    expect(withA.data.equals(withB.data)).toBe(false);
    expect(withA.data.equals(withA2.data)).toBe(true);
    const [response] = await client.generateContent(request({ prompt: 'a portrait', references: [refA, refB] }));
    expect(Number(response.usageMetadata?.promptTokenCount)).toBeGreaterThanOrEqual(2 * 258);
  });

  it('answers a blocked prompt with promptFeedback and no candidates', async () => {
    const [response] = await client.generateContent(request({ prompt: 'forbidden [emulate:block]' }));
    expect(response.promptFeedback?.blockReason).toBe('PROHIBITED_CONTENT');
    expect(response.promptFeedback?.blockReasonMessage).toMatch(/emulate:block/);
    expect(response.candidates ?? []).toHaveLength(0);
  });

  it('fails [emulate:fail] with INTERNAL (code 13)', async () => {
    await expect(client.generateContent(request({ prompt: 'broken [emulate:fail]' }))).rejects.toMatchObject({
      code: 13,
      message: expect.stringMatching(/emulated by \[emulate:fail\]/),
    });
  });

  it('refuses an unknown model (NOT_FOUND, code 5) and empty contents (INVALID_ARGUMENT, code 3)', async () => {
    const unknown = 'projects/test-project/locations/us-central1/publishers/google/models/no-such-model';
    await expect(client.generateContent(request({ prompt: 'x', model: unknown }))).rejects.toMatchObject({
      code: 5,
      message: expect.stringContaining(`Publisher Model \`${unknown}\` was not found`),
    });
    await expect(
      client.generateContent(request({ prompt: 'x', model: 'publishers/google/models/no-such-model' })),
    ).rejects.toMatchObject({ code: 5 });
    await expect(client.generateContent({ ...request({ prompt: 'x' }), contents: [] })).rejects.toMatchObject({
      code: 3,
    });
    await expect(client.generateContent(request({ prompt: 'x', aspectRatio: '7:3' }))).rejects.toMatchObject({
      code: 3,
    });
  });

  it('serves the global model path and a model @version', async () => {
    const [global] = await client.generateContent(
      request({ prompt: 'a tree', model: 'publishers/google/models/gemini-3-pro-image-preview' }),
    );
    expect(global.modelVersion).toBe('gemini-3-pro-image-preview');
    expect(global.usageMetadata?.candidatesTokenCount).toBe(1120);
    const [versioned] = await client.generateContent(request({ prompt: 'a tree', model: `${MODEL}@001` }));
    expect(versioned.modelVersion).toBe('gemini-2.5-flash-image');
  });

  it('answers transport faults as client errors, not retried by the client by default', async () => {
    emulators.vertex.setFaults({ transportFaults: [{ method: 'GenerateContent', call: 1, status: 429 }] });
    await expect(client.generateContent(request({ prompt: 'q' }))).rejects.toMatchObject({ code: 8 }); // RESOURCE_EXHAUSTED
    await client.generateContent(request({ prompt: 'q' }));
    emulators.vertex.setFaults({
      transportFaults: [
        { method: 'GenerateContent', call: 1, status: 503 },
        { method: 'GenerateContent', call: 2, status: 500 },
      ],
    });
    // UNAVAILABLE is retryable for idempotent methods only; GenerateContent has no retry codes.
    await expect(client.generateContent(request({ prompt: 'q' }))).rejects.toMatchObject({ code: 14 });
    await expect(client.generateContent(request({ prompt: 'q' }), { maxRetries: 0 })).rejects.toMatchObject({
      code: 13,
    });
    const [ok] = await client.generateContent(request({ prompt: 'q' }), { retry: null });
    expect(imagePart(ok).mimeType).toBe('image/png');
    emulators.vertex.setFaults({ transportFaults: [] });
  });

  it('takes onlineMs per call, slowMs more for [emulate:slow]', async () => {
    emulators.vertex.setOnlineMs(150);
    try {
      let started = Date.now();
      await client.generateContent(request({ prompt: 'timed' }));
      expect(Date.now() - started).toBeGreaterThanOrEqual(145);
      started = Date.now();
      await client.generateContent(request({ prompt: 'timed [emulate:slow]' }));
      expect(Date.now() - started).toBeGreaterThanOrEqual(145 + SLOW_MS);
    } finally {
      emulators.vertex.setOnlineMs(ONLINE_MS);
    }
  });

  it('honours the call options timeout (code 4) and signal (code 1)', async () => {
    emulators.vertex.setOnlineMs(2000);
    try {
      let started = Date.now();
      await expect(client.generateContent(request({ prompt: 'late' }), { timeout: 100 })).rejects.toMatchObject({
        code: 4,
      });
      expect(Date.now() - started).toBeLessThan(1500);
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 100);
      started = Date.now();
      await expect(
        client.generateContent(request({ prompt: 'late' }), { signal: controller.signal }),
      ).rejects.toMatchObject({ code: 1 });
      expect(Date.now() - started).toBeLessThan(1500);
    } finally {
      emulators.vertex.setOnlineMs(ONLINE_MS);
    }
  });

  it('serves many calls at once', async () => {
    const WAIT_MS = 4000;
    emulators.vertex.setOnlineMs(WAIT_MS);
    try {
      const started = Date.now();
      const answers = await Promise.all(
        Array.from({ length: 32 }, (_, i) => client.generateContent(request({ prompt: `parallel ${i}` }))),
      );
      const elapsed = Date.now() - started;
      expect(new Set(answers.map(([r]) => imagePart(r).data.toString('base64'))).size).toBe(32);
      // One after another the waits alone would take 32 × 4 s; at once they take 4 s plus making
      // the images (one at a time, slow on a busy machine), far below half the serial time.
      expect(elapsed).toBeGreaterThanOrEqual(WAIT_MS);
      expect(elapsed).toBeLessThan((32 * WAIT_MS) / 2);
    } finally {
      emulators.vertex.setOnlineMs(ONLINE_MS);
    }
  });

  it('ends calls in progress when it closes (UNAVAILABLE), without waiting for their latency', async () => {
    const own = await startEmulators({
      dataDir: path.join(dataDir, 'closing'),
      vertex: {
        queueMs: 0,
        lineMs: 0,
        slowMs: 0,
        onlineMs: 30_000,
        imagePadBytes: 0,
        jobFault: 'none',
        transportFaults: [],
      },
    });
    const ownClient = createPredictionClient({ location: 'us-central1', endpoint: own.vertex.url });
    try {
      const outcome = ownClient.generateContent(request({ prompt: 'never answered' })).then(
        () => 'answered',
        (err: { code?: number }) => err.code,
      );
      await new Promise((r) => setTimeout(r, 100));
      const started = Date.now();
      await own.close();
      expect(Date.now() - started).toBeLessThan(2000);
      expect(await outcome).toBe(14);
    } finally {
      await ownClient.close();
    }
  });
});

describe('the shared responder reads enums as names and numbers', () => {
  const ctx = {
    model: KNOWN_MODELS['gemini-2.5-flash-image'],
    storage: new Storage({ apiEndpoint: 'http://127.0.0.1:9', projectId: 'unused' }),
    imagePadBytes: 0,
  };
  const body = (responseModalities: unknown[]) => ({
    contents: [{ role: 'user', parts: [{ text: 'enum test' }] }],
    generationConfig: { responseModalities, imageConfig: { aspectRatio: '1:1' } },
  });
  const kinds = async (modalities: unknown[]) =>
    JSON.parse(await generateContent(body(modalities), ctx)).candidates[0].content.parts.map((p: object) =>
      Object.keys(p).join(),
    );

  it('TEXT = 1, IMAGE = 2', async () => {
    expect(await kinds([2])).toEqual(['inlineData']);
    expect(await kinds(['IMAGE'])).toEqual(['inlineData']);
    expect(await kinds([1, 2])).toEqual(['text', 'inlineData']);
    expect(await kinds(['TEXT', 'IMAGE'])).toEqual(['text', 'inlineData']);
    expect(await kinds([1])).toEqual(['text']);
  });
});
