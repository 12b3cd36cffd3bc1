import { describe, expect, it } from '@jest/globals';
import { isSizeProblem, resolveSize } from '../../src/vertex/sizes.ts';
import { type ImageRequestBody, sizeTier, toGeminiLines } from '../../src/vertex/translate.ts';
import { testModel } from './fixtures.ts';

const model = testModel({ imageSizes: ['1K', '2K', '4K'] });

function req(extra: Partial<ImageRequestBody> = {}): ImageRequestBody {
  return { model: model.id, prompt: 'a red cube', ...extra };
}

describe('size mapping', () => {
  it.each([
    ['1024x1024', '1:1', '1K'],
    ['1536x1024', '3:2', '1K'],
    ['1024x1536', '2:3', '1K'],
    ['1792x1024', '16:9', '1K'],
    ['1024x1792', '9:16', '1K'],
    ['2048x2048', '1:1', '2K'],
    ['4096x4096', '1:1', '4K'],
    ['auto', '1:1', '1K'],
    [undefined, '1:1', '1K'],
    ['512x512', '1:1', '1K'],
    ['1344x768', '16:9', '2K'],
    ['2048x1536', '4:3', '2K'],
    ['3000x2000', '3:2', '4K'],
    ['864x1184', '3:4', '2K'], // the long-side rule: Gemini's own 1K pixel sizes exceed 1024,
  ])('%s → %s %s', (size, aspectRatio, imageSize) => {
    expect(resolveSize(req({ size }), model)).toEqual({ aspectRatio, imageSize });
    expect(sizeTier(req({ size }), model)).toBe(imageSize);
  });

  it('rejects sizes whose ratio the model lacks, or tiers it lacks', () => {
    const r = resolveSize(req({ size: '1000x300' }), model);
    expect(isSizeProblem(r) && r.param).toBe('body.size');
    const small = testModel({ imageSizes: ['1K'] });
    const r2 = resolveSize(req({ size: '2048x2048' }), small);
    expect(isSizeProblem(r2) && r2.param).toBe('body.size');
    expect(() => sizeTier(req({ size: '4096x4096' }), small)).toThrow(/4K/);
  });

  it('lets image_config win over size, field by field', () => {
    expect(
      resolveSize(req({ size: '1536x1024', image_config: { aspect_ratio: '21:9', image_size: '4K' } }), model),
    ).toEqual({ aspectRatio: '21:9', imageSize: '4K' });
    expect(resolveSize(req({ size: '1536x1024', image_config: { image_size: '2k' } }), model)).toEqual({
      aspectRatio: '3:2',
      imageSize: '2K',
    });
    expect(resolveSize(req({ image_config: { aspect_ratio: '9:16' } }), model)).toEqual({
      aspectRatio: '9:16',
      imageSize: '1K',
    });
    const r = resolveSize(req({ image_config: { aspect_ratio: '7:1' } }), model);
    expect(isSizeProblem(r) && r.param).toBe('body.image_config.aspect_ratio');
  });

  it('uses the model default tier, and ignores quality', () => {
    const m2 = testModel({ imageSizes: ['1K', '2K'], defaultImageSize: '2K' });
    expect(sizeTier(req(), m2)).toBe('2K');
    expect(sizeTier(req({ quality: 'hd' }), model)).toBe('1K');
    expect(sizeTier(req({ quality: 'high', size: '1024x1024' }), model)).toBe('1K');
  });
});

describe('toGeminiLines', () => {
  it('expands n into labelled requests with the prompt, references and image config', () => {
    const lines = toGeminiLines(req({ n: 3, size: '1792x1024', output_format: 'jpeg', output_compression: 80 }), {
      lineIndex: 41,
      model,
      references: [
        { gcsUri: 'gs://b/ref/1.png', mimeType: 'image/png' },
        { gcsUri: 'gs://b/ref/2.jpg', mimeType: 'image/jpeg' },
      ],
    });
    expect(lines).toHaveLength(3);
    const parsed = lines.map((l) => JSON.parse(JSON.stringify(l)));
    expect(parsed.map((l) => l.request.labels)).toEqual([0, 1, 2].map((k) => ({ ibg_line: '41', ibg_img: String(k) })));
    expect(parsed[2]).toEqual({
      request: {
        contents: [
          {
            role: 'user',
            parts: [
              { text: 'a red cube' },
              { fileData: { fileUri: 'gs://b/ref/1.png', mimeType: 'image/png' } },
              { fileData: { fileUri: 'gs://b/ref/2.jpg', mimeType: 'image/jpeg' } },
            ],
          },
        ],
        generationConfig: {
          responseModalities: ['IMAGE'],
          imageConfig: {
            aspectRatio: '16:9',
            imageSize: '1K',
            imageOutputOptions: { mimeType: 'image/jpeg', compressionQuality: 80 },
          },
        },
        labels: { ibg_line: '41', ibg_img: '2' },
      },
    });
  });

  it('defaults to one image, no output options, and labels Vertex accepts', () => {
    const lines = toGeminiLines(req({ size: 'auto' }), { lineIndex: 199_999, model, references: [] }) as Array<{
      request: any;
    }>;
    expect(lines).toHaveLength(1);
    expect(lines[0].request.contents[0].parts).toEqual([{ text: 'a red cube' }]);
    expect(lines[0].request.generationConfig.imageConfig).toEqual({ aspectRatio: '1:1', imageSize: '1K' });
    for (const [k, v] of Object.entries(lines[0].request.labels as Record<string, string>)) {
      expect(k).toMatch(/^[a-z][a-z0-9_-]{0,62}$/);
      expect(v).toMatch(/^[a-z0-9_-]{0,63}$/);
    }
  });

  it('refuses a size the model cannot serve', () => {
    expect(() => toGeminiLines(req({ size: '1000x300' }), { lineIndex: 0, model, references: [] })).toThrow(
      /not supported/,
    );
  });
});
