import { Readable } from 'node:stream';
import type { ModelInfo } from '../../src/billing/model-catalog.ts';

/** A Gemini-like model as the catalog would return it. */
export function testModel(overrides: Partial<ModelInfo> = {}): ModelInfo {
  return {
    id: 'gemini-2.5-flash-image',
    publisherModel: 'publishers/google/models/gemini-2.5-flash-image',
    aspectRatios: ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'],
    imageSizes: ['1K', '2K'],
    defaultImageSize: '1K',
    maxPromptChars: 100,
    maxReferenceImages: 3,
    unitPrices: { '1K': 5000, '2K': 5000, '4K': 12500 },
    batchRatio: 0.5,
    enabled: true,
    ...overrides,
  };
}

/** A stream delivering `text` in chunks of `chunkSize` bytes, to exercise lines split across chunks. */
export function streamOf(text: string | Buffer, chunkSize = 7): Readable {
  const buf = typeof text === 'string' ? Buffer.from(text) : text;
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunkSize) chunks.push(buf.subarray(i, i + chunkSize));
  return Readable.from(chunks);
}

export function line(customId: string, body: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ custom_id: customId, method: 'POST', url: '/v1/images/generations', body, ...extra });
}

export function body(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: 'gemini-2.5-flash-image', prompt: 'a red cube', ...extra };
}
