import { describe, expect, it } from '@jest/globals';
import { CollectSink, JsonLineScanner, type JsonPath } from '../../src/files/json-line-scanner.ts';

/** Every string value of the lines, with its path, as the scanner sees them when fed `chunks`. */
function scanAll(chunks: Buffer[]) {
  const lines: Array<Array<[string, string | null]>> = [];
  let current: Array<[string, CollectSink]> = [];
  const scanner = new JsonLineScanner((path: JsonPath) => {
    const sink = new CollectSink(1 << 20);
    current.push([path.join('.'), sink]);
    return sink;
  });
  const finish = () => {
    lines.push(current.map(([p, s]) => [p, s.value]));
    current = [];
  };
  for (const chunk of chunks) {
    let at = 0;
    while (at < chunk.length) {
      const end = scanner.scan(chunk, at);
      if (end === -1) break;
      finish();
      at = end;
    }
  }
  if (!scanner.atLineStart) {
    scanner.reset();
    finish();
  }
  return lines;
}

/** The same text cut into pieces of `size` bytes. */
const cut = (text: string, size: number) => {
  const bytes = Buffer.from(text);
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
};

const LINE = JSON.stringify({
  id: 'batch_req_1',
  custom_id: 'odd "id" \\ with \u00e9 and \n newline',
  response: {
    status_code: 200,
    body: {
      created: 17,
      data: [{ b64_json: 'iVBORw0KGgo=' }, { url: 'https://x/links/a?b=1' }],
      flags: [true, null, -1.5e3, []],
    },
  },
  error: null,
  empty: {},
});

describe('json line scanner', () => {
  it('finds every string value with its path, however the bytes are cut', () => {
    const expected = [
      ['id', 'batch_req_1'],
      ['custom_id', 'odd "id" \\ with \u00e9 and \n newline'],
      ['response.body.data.0.b64_json', 'iVBORw0KGgo='],
      ['response.body.data.1.url', 'https://x/links/a?b=1'],
    ];
    for (const size of [1, 2, 3, 7, 64, 10_000]) {
      const lines = scanAll(cut(`${LINE}\n${LINE}\r\n\n${LINE}`, size));
      expect(lines).toEqual([expected, expected, [], expected]);
    }
  });

  it('reports where each line ends, one line per call', () => {
    const scanner = new JsonLineScanner(() => null);
    const text = Buffer.from('{"a":"x"}\n{"b":[1,2]}\n');
    expect(scanner.scan(text)).toBe(10);
    expect(scanner.atLineStart).toBe(true);
    expect(scanner.scan(text, 10)).toBe(text.length);
    expect(scanner.scan(Buffer.from('{"c":'))).toBe(-1);
    expect(scanner.atLineStart).toBe(false);
  });

  it('never lets a broken line swallow the next one', () => {
    // An unterminated string, and an escape cut by the line feed: each line still ends at its LF.
    const lines = scanAll(cut('{"custom_id":"abc\n{"custom_id":"x\\\n{"custom_id":"ok"}\n', 3));
    expect(lines.at(-1)).toEqual([['custom_id', 'ok']]);
    expect(lines).toHaveLength(3);
  });

  it('keeps only what a sink asks for', () => {
    const sink = new CollectSink(4);
    const scanner = new JsonLineScanner((path) => (path[0] === 'big' ? sink : null));
    scanner.scan(Buffer.from(`{"big":"${'A'.repeat(100_000)}","small":"b"}\n`));
    expect(sink.raw.toString()).toBe('AAAA');
    expect(sink.truncated).toBe(true);
    expect(sink.value).toBeNull();
    expect(sink.ended).toBe(true);
  });
});
