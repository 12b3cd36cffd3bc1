import { describe, expect, it } from '@jest/globals';
import { type ValidationContext, validateBatchInput } from '../../src/pipeline/line-validator.ts';
import { body, line, streamOf, testModel } from './fixtures.ts';

function context(extra: Partial<ValidationContext> = {}): ValidationContext & { calls: string[][] } {
  const calls: string[][] = [];
  const owned = new Set(['file_ok1', 'file_ok2', 'file_ok3']);
  const pro = testModel({ id: 'gemini-3-pro-image', imageSizes: ['1K', '2K', '4K'] });
  return {
    models: new Map([
      ['gemini-2.5-flash-image', testModel()],
      [pro.id, pro],
    ]),
    maxRequests: 1000,
    maxErrors: 100,
    async findOwnedVisionFiles(ids: string[]) {
      calls.push(ids);
      return new Set(ids.filter((id) => owned.has(id) || id.startsWith('own_')));
    },
    calls,
    ...extra,
  };
}

async function validate(text: string | Buffer, ctx = context(), chunkSize = 7) {
  return validateBatchInput(streamOf(text, chunkSize), ctx);
}

describe('validateBatchInput', () => {
  it('accepts a valid file and sums images per size tier', async () => {
    const text = [
      line('a', body({ n: 2 })),
      line('b', body({ size: '2048x2048' })),
      JSON.stringify({
        custom_id: 'c',
        body: body({ image_config: { aspect_ratio: '16:9', image_size: '2K' }, n: 3 }),
      }),
      line('d', body({ size: 'auto', response_format: 'url' })),
      line('e', body({ response_format: 'b64_json' })),
    ].join('\n');
    const r = await validate(text);
    expect(r.errors).toEqual([]);
    expect(r.errorCount).toBe(0);
    expect(r.requestCount).toBe(5);
    expect(r.imageCount).toBe(8);
    expect(r.model).toBe('gemini-2.5-flash-image');
    expect(r.imagesBySize).toEqual({ '1K': 4, '2K': 4 });
  });

  it('tolerates a BOM, CRLF line ends and blank lines, and keeps physical line numbers', async () => {
    const text =
      '\uFEFF' +
      line('a', body()) +
      '\r\n\r\n   \r\n' +
      line('b', body({ n: 0 })) +
      '\r\n\n' +
      line('c', body()) +
      '\r\n';
    for (const chunkSize of [1, 3, 64, 100_000]) {
      const r = await validate(text, context(), chunkSize);
      expect(r.requestCount).toBe(2);
      expect(r.errors).toEqual([{ code: 'invalid_value', message: expect.any(String), param: 'body.n', line: 4 }]);
    }
  });

  it('reports every error code with its line number and param', async () => {
    const lines = [
      line('ok1', body()), // 1
      '{"custom_id": "x", "body": ', // 2
      line('ok1', body()), // 3 duplicate
      line('m', body({ model: 'nope' })), // 4
      line('mm', body({ model: 'gemini-3-pro-image' })), // 5
      line('n', body({ n: 11 })), // 6
      line('s', body({ size: '1000x300' })), // 7
      line('p', body({ prompt: '   ' })), // 8
      line('p2', body({ prompt: 'x'.repeat(101) })), // 9
      line('meth', body(), { method: 'GET' }), // 10
      line('url', body(), { url: '/v1/chat/completions' }), // 11
      JSON.stringify({ body: body() }), // 12
      line('', body()), // 13
      line('f', body({ image_file_ids: ['file_ok1', 'file_missing'] })), // 14
      line('k', body(), { extra: 1 }), // 15
      line('u', body({ sise: '1024x1024' })), // 16
      line('ar', body({ image_config: { aspect_ratio: '7:1' } })), // 17
      line('is', body({ image_config: { image_size: '4K' } })), // 18
      line('ref', body({ image_file_ids: ['file_ok1', 'file_ok2', 'file_ok3', 'own_4'] })), // 19
      line('rf', body({ response_format: 'png' })), // 20
      '[1,2]', // 21
      line('np', { model: 'gemini-2.5-flash-image' }), // 22
      line('f2', body({ image_file_id: 'file_missing' })), // 23
    ];
    const r = await validate(lines.join('\n'));
    const got = r.errors.map((e) => [e.line, e.code, e.param]);
    expect(got).toEqual([
      [2, 'invalid_json', null],
      [3, 'duplicate_custom_id', 'custom_id'],
      [4, 'model_not_found', 'body.model'],
      [5, 'model_mismatch', 'body.model'],
      [6, 'invalid_value', 'body.n'],
      [7, 'unsupported_size', 'body.size'],
      [8, 'invalid_prompt', 'body.prompt'],
      [9, 'invalid_prompt', 'body.prompt'],
      [10, 'invalid_method', 'method'],
      [11, 'invalid_url', 'url'],
      [12, 'missing_custom_id', 'custom_id'],
      [13, 'invalid_custom_id', 'custom_id'],
      [14, 'file_not_found', 'body.image_file_ids[1]'],
      [15, 'invalid_line', 'extra'],
      [16, 'unknown_parameter', 'body.sise'],
      [17, 'unsupported_size', 'body.image_config.aspect_ratio'],
      [18, 'unsupported_size', 'body.image_config.image_size'],
      [19, 'too_many_reference_images', 'body.image_file_ids'],
      [20, 'invalid_value', 'body.response_format'],
      [21, 'invalid_line', null],
      [22, 'missing_required_parameter', 'body.prompt'],
      [23, 'file_not_found', 'body.image_file_id'],
    ]);
    expect(r.errors[12].message).toContain('file_missing');
    expect(r.errorCount).toBe(22);
    expect(r.requestCount).toBe(1);
    expect(r.imageCount).toBe(1);
    expect(r.imagesBySize).toEqual({ '1K': 1 });
  });

  it('reports an empty file', async () => {
    for (const text of ['', '\n\n  \r\n', '\uFEFF']) {
      const r = await validate(text);
      expect(r.errors.map((e) => e.code)).toEqual(['empty_file']);
      expect(r.requestCount).toBe(0);
      expect(r.model).toBeNull();
    }
  });

  it('reports too many requests once and stops checking', async () => {
    const lines = Array.from({ length: 8 }, (_, i) => line(`id${i}`, body()));
    lines.push('not json');
    const r = await validate(lines.join('\n'), context({ maxRequests: 5 }));
    expect(r.errors.map((e) => [e.code, e.line])).toEqual([['too_many_requests', 6]]);
    expect(r.requestCount).toBe(5);
  });

  it('reports an overlong line without buffering it, split across chunks or not', async () => {
    const long = line('long', body({ prompt: 'y'.repeat(5000) }));
    const text = [line('a', body()), long, line('b', body({ n: 'x' })), long].join('\n');
    for (const chunkSize of [100, 1_000_000]) {
      const r = await validate(text, context({ maxLineBytes: 1000 }), chunkSize);
      expect(r.errors.map((e) => [e.code, e.line, e.param])).toEqual([
        ['line_too_long', 2, null],
        ['invalid_type', 3, 'body.n'],
        ['line_too_long', 4, null],
      ]);
      expect(r.requestCount).toBe(1);
    }
  });

  it('caps the error list but counts every problem, in line order', async () => {
    const lines: string[] = [];
    // Missing files are only known after a lookup, i.e. after later lines were checked.
    lines.push(line('f0', body({ image_file_id: 'gone' })));
    for (let i = 0; i < 300; i++) lines.push(`bad ${i}`);
    const r = await validate(lines.join('\n'), context({ maxErrors: 10 }), 4096);
    expect(r.errorCount).toBe(301);
    expect(r.errors).toHaveLength(10);
    expect(r.errors[0]).toMatchObject({ code: 'file_not_found', line: 1 });
    expect(r.errors.slice(1).map((e) => e.line)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('looks up referenced files in chunks of at most 1000 distinct ids', async () => {
    const ctx = context();
    const lines: string[] = [];
    for (let i = 0; i < 2500; i++) {
      // Every line references a shared file and a file of its own; every 500th is missing.
      const own = i % 500 === 7 ? `missing_${i}` : `own_${i}`;
      lines.push(line(`id${i}`, body({ image_file_ids: ['file_ok1', own] })));
    }
    const r = await validate(lines.join('\n'), { ...ctx, maxRequests: 200_000 }, 65536);
    expect(ctx.calls.length).toBe(3);
    expect(ctx.calls.every((c) => c.length <= 1000)).toBe(true);
    expect(new Set(ctx.calls.flat()).size).toBe(2501); // each distinct id looked up once
    expect(r.errors.map((e) => [e.code, e.line])).toEqual(
      [7, 507, 1007, 1507, 2007].map((i) => ['file_not_found', i + 1]),
    );
    expect(r.requestCount).toBe(2495);
    expect(r.imageCount).toBe(2495);
    expect(r.imagesBySize).toEqual({ '1K': 2495 });
  });
});
