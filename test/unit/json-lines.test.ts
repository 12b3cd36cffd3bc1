import { Readable } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import { readJsonLines } from '../../src/pipeline/json-lines.ts';
import { validateBatchInput } from '../../src/pipeline/line-validator.ts';
import { streamOf, testModel } from './fixtures.ts';

async function read(text: string, chunkSize: number) {
  const out: Array<{ line: number; index: number; value: unknown }> = [];
  for await (const x of readJsonLines(streamOf(text, chunkSize))) out.push(x);
  return out;
}

describe('readJsonLines', () => {
  // A BOM, CRLF, blank and white-space lines, a raw CR as JSON white space inside a line, and
  // U+2028 inside a string: validation takes all of them, so every later step must read the
  // same requests at the same indexes.
  const text =
    '\ufeff{"custom_id":"a","body":{"model":"gemini-2.5-flash-image","prompt":"p"}}\r\n' +
    '\n \t\r\n' +
    '{"custom_id":"b",\r"body":{"model":"gemini-2.5-flash-image","prompt":"q\u2028r é"}}\n' +
    '{"custom_id":"c","body":{"model":"gemini-2.5-flash-image","prompt":"s"}}';

  it('splits and parses lines as validation does, whatever the chunks', async () => {
    const model = testModel();
    const validated = await validateBatchInput(streamOf(text, 5), {
      models: new Map([[model.id, model]]),
      maxRequests: 10,
      maxErrors: 10,
      findOwnedVisionFiles: async () => new Set(),
    });
    expect(validated.errorCount).toBe(0);
    expect(validated.requestCount).toBe(3);
    for (const chunkSize of [1, 2, 3, 7, 64, 4096]) {
      const lines = await read(text, chunkSize);
      expect(lines.map((l) => [l.line, l.index, (l.value as { custom_id: string }).custom_id])).toEqual([
        [1, 0, 'a'],
        [4, 1, 'b'],
        [5, 2, 'c'],
      ]);
      expect((lines[1].value as { body: { prompt: string } }).body.prompt).toBe('q\u2028r é');
    }
  });

  it('reads string chunks and an empty stream', async () => {
    const out = [];
    for await (const x of readJsonLines(Readable.from(['{"a":', '1}\n{"b":2}\n']))) out.push(x.value);
    expect(out).toEqual([{ a: 1 }, { b: 2 }]);
    for await (const _ of readJsonLines(Readable.from([]))) throw new Error('no line expected');
  });
});
