import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import {
  type ByteRange,
  type ImageSink,
  type PredictionFile,
  type ReorderStats,
  type ShardLine,
  type StitchCounts,
  stitchShard,
} from '../../src/pipeline/stitcher.ts';

/** A Writable collecting what it is given; a small highWaterMark exercises backpressure. */
class Collector extends Writable {
  chunks: Buffer[] = [];
  constructor() {
    super({ highWaterMark: 64 });
  }
  _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(Buffer.from(chunk));
    setImmediate(cb);
  }
  lines(): Array<Record<string, any>> {
    const text = Buffer.concat(this.chunks).toString('utf8');
    expect(text === '' || text.endsWith('\n')).toBe(true);
    return text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l));
  }
}

/** A deterministic base64 image for (line, img): long enough to be handled as a byte range. */
function imageFor(line: number, img: number, bytes = 3000): string {
  const buf = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) buf[i] = (line * 31 + img * 7 + i) & 0xff;
  return buf.toString('base64');
}

function okPrediction(line: number, img: number, data = imageFor(line, img)): string {
  return JSON.stringify({
    request: {
      contents: [{ role: 'user', parts: [{ text: `prompt ${line}` }] }],
      labels: { ibg_line: String(line), ibg_img: String(img) },
    },
    status: '',
    response: {
      candidates: [
        { content: { role: 'model', parts: [{ inlineData: { mimeType: 'image/png', data } }] }, finishReason: 'STOP' },
      ],
      usageMetadata: {
        promptTokenCount: 10,
        candidatesTokenCount: 1290,
        totalTokenCount: 1300,
        promptTokensDetails: [{ modality: 'TEXT', tokenCount: 10 }],
      },
      modelVersion: 'gemini-2.5-flash-image',
    },
    processed_time: '2026-11-21T10:00:00.000Z',
  });
}

function failedPrediction(line: number, img: number, status: string): string {
  return JSON.stringify({
    request: { labels: { ibg_line: String(line), ibg_img: String(img) } },
    status,
    processed_time: '2026-11-21T10:00:00Z',
  });
}

function blockedPrediction(line: number, img: number): string {
  return JSON.stringify({
    request: { labels: { ibg_line: String(line), ibg_img: String(img) } },
    status: '',
    response: {
      promptFeedback: { blockReason: 'PROHIBITED_CONTENT' },
      usageMetadata: { promptTokenCount: 10, totalTokenCount: 10 },
    },
  });
}

/** A predictions file in memory, read whole or by range, in chunks of `chunkSize`. */
function streamOf(text: string, chunkSize: number): PredictionFile {
  return (range?: ByteRange) => {
    const whole = Buffer.from(text);
    const buf = range ? whole.subarray(range.start, range.end + 1) : whole;
    const chunks: Buffer[] = [];
    for (let i = 0; i < buf.length; i += chunkSize) chunks.push(buf.subarray(i, i + chunkSize));
    return Readable.from(chunks);
  };
}

/** What range-capable factories were asked for, and the most range reads open at once. */
interface RangeLog {
  wholeReads: number;
  ranges: Array<{ file: number; range: ByteRange }>;
  open: number;
  maxOpen: number;
}

/**
 * Predictions files that log what they are asked for. A range read is open until its last chunk
 * is taken; each chunk comes a turn later, as from a remote store, so reads that were started
 * ahead overlap.
 */
function rangeFiles(files: string[][], chunkSize: number, log: RangeLog): PredictionFile[] {
  return files.map((f, file) => {
    const whole = streamOf(f.map((l) => `${l}\n`).join(''), chunkSize);
    const bytes = Buffer.from(f.map((l) => `${l}\n`).join(''));
    return (range?: ByteRange) => {
      if (range === undefined) {
        log.wholeReads++;
        return whole();
      }
      log.ranges.push({ file, range });
      log.maxOpen = Math.max(log.maxOpen, ++log.open);
      async function* slowly() {
        try {
          for (let i = range!.start; i <= range!.end; i += chunkSize) {
            await new Promise((resolve) => setImmediate(resolve));
            yield bytes.subarray(i, Math.min(i + chunkSize, range!.end + 1));
          }
        } finally {
          log.open--;
        }
      }
      return Readable.from(slowly());
    };
  });
}

function newRangeLog(): RangeLog {
  return { wholeReads: 0, ranges: [], open: 0, maxOpen: 0 };
}

async function* shardLines(lines: ShardLine[]): AsyncIterable<ShardLine> {
  yield* lines;
}

async function stitch(
  lines: ShardLine[],
  files: string[][],
  chunkSize = 1000,
  onLine?: (l: ShardLine, ok: number) => void,
) {
  const output = new Collector();
  const errorOutput = new Collector();
  let next = 0;
  const counts: StitchCounts = await stitchShard({
    lines: shardLines(lines),
    predictionFiles: files.map((f) => streamOf(f.map((l) => `${l}\n`).join(''), chunkSize)),
    output,
    errorOutput,
    newRequestId: () => `batch_req_${next++}`,
    onLine,
  });
  return { counts, out: output.lines(), err: errorOutput.lines() };
}

describe('stitchShard', () => {
  it('puts out-of-order predictions from two files back in input order', async () => {
    const lines: ShardLine[] = [
      { lineIndex: 0, customId: 'a', n: 1 },
      { lineIndex: 1, customId: 'b', n: 3 },
      { lineIndex: 2, customId: 'c', n: 2 },
    ];
    const fileA = [okPrediction(2, 1), okPrediction(1, 2), okPrediction(0, 0)];
    const fileB = [okPrediction(1, 0), okPrediction(2, 0), okPrediction(1, 1)];
    for (const chunkSize of [1, 13, 1_000_000]) {
      const { counts, out, err } = await stitch(lines, [fileA, fileB], chunkSize);
      expect(counts).toEqual({
        linesSucceeded: 3,
        linesPartial: 0,
        linesFailed: 0,
        imagesSucceeded: 6,
        imagesFailed: 0,
        predictionsIgnored: 0,
        predictionsDuplicate: 0,
      });
      expect(err).toEqual([]);
      expect(out.map((l) => l.custom_id)).toEqual(['a', 'b', 'c']);
      expect(out[1].response.body.data.map((d: { b64_json: string }) => d.b64_json)).toEqual([
        imageFor(1, 0),
        imageFor(1, 1),
        imageFor(1, 2),
      ]);
      expect(out[2].response.body.data.map((d: { b64_json: string }) => d.b64_json)).toEqual([
        imageFor(2, 0),
        imageFor(2, 1),
      ]);
      expect(out[0]).toEqual({
        id: 'batch_req_0',
        custom_id: 'a',
        response: {
          status_code: 200,
          request_id: 'vertex_batch_req_0',
          body: {
            created: Date.parse('2026-11-21T10:00:00.000Z') / 1000,
            data: [{ b64_json: imageFor(0, 0) }],
            usage: {
              total_tokens: 1300,
              input_tokens: 10,
              output_tokens: 1290,
              input_tokens_details: { text_tokens: 10, image_tokens: 0 },
            },
          },
        },
        error: null,
      });
      expect(out[1].response.body.usage.total_tokens).toBe(3900);
    }
  });

  it('sends a line whose images all failed to the error file', async () => {
    const lines: ShardLine[] = [
      { lineIndex: 0, customId: 'fail', n: 2 },
      { lineIndex: 1, customId: 'blocked', n: 1 },
      { lineIndex: 2, customId: 'ok', n: 1 },
      { lineIndex: 3, customId: 'gone', n: 1 },
    ];
    const file = [
      failedPrediction(0, 0, 'Internal error: 503 backend unavailable'),
      failedPrediction(0, 1, 'Internal error: 503 backend unavailable'),
      blockedPrediction(1, 0),
      okPrediction(2, 0),
    ];
    const seen: Array<[number, number]> = [];
    const { counts, out, err } = await stitch(lines, [file], 1000, (l, ok) => seen.push([l.lineIndex, ok]));
    expect(seen).toEqual([
      [0, 0],
      [1, 0],
      [2, 1],
      [3, 0],
    ]);
    expect(counts).toMatchObject({
      linesSucceeded: 1,
      linesPartial: 0,
      linesFailed: 3,
      imagesSucceeded: 1,
      imagesFailed: 4,
    });
    expect(out.map((l) => l.custom_id)).toEqual(['ok']);
    expect(err.map((l) => [l.custom_id, l.error.code])).toEqual([
      ['fail', 'image_generation_failed'],
      ['blocked', 'content_blocked'],
      ['gone', 'missing_prediction'],
    ]);
    expect(err[0].response).toEqual({
      status_code: 503,
      request_id: `vertex_${err[0].id}`,
      body: {
        error: {
          message: expect.stringContaining('all 2 images failed'),
          type: 'server_error',
          code: 'image_generation_failed',
        },
      },
    });
    expect(err[1].response.status_code).toBe(400);
    expect(err[1].response.body.error.type).toBe('invalid_request_error');
    expect(err[1].error.message).toContain('PROHIBITED_CONTENT');
    expect(err[2].response).toBeNull();
    for (const l of err) expect(Object.keys(l)).toEqual(['id', 'custom_id', 'response', 'error']);
  });

  it('splits a partial line over both files with the right counts', async () => {
    const lines: ShardLine[] = [{ lineIndex: 5, customId: 'part', n: 4 }];
    const file = [okPrediction(5, 3), blockedPrediction(5, 1), okPrediction(5, 0)]; // image 2 never came
    const seen: Array<[number, number]> = [];
    const { counts, out, err } = await stitch(lines, [file], 1000, (l, ok) => seen.push([l.lineIndex, ok]));
    expect(counts).toMatchObject({
      linesSucceeded: 0,
      linesPartial: 1,
      linesFailed: 0,
      imagesSucceeded: 2,
      imagesFailed: 2,
    });
    expect(seen).toEqual([[5, 2]]);
    expect(out).toHaveLength(1);
    expect(out[0].error).toBeNull();
    expect(out[0].response.body.data.map((d: { b64_json: string }) => d.b64_json)).toEqual([
      imageFor(5, 0),
      imageFor(5, 3),
    ]);
    expect(err).toHaveLength(1);
    expect(err[0]).toEqual({
      id: out[0].id,
      custom_id: 'part',
      response: null,
      error: {
        code: 'partial_failure',
        message: expect.stringMatching(/^2 of 4 images failed: 1 content_blocked .*; 1 missing_prediction/),
      },
    });
  });

  it('counts duplicates once (a success wins) and ignores predictions of other lines', async () => {
    const lines: ShardLine[] = [
      { lineIndex: 0, customId: 'a', n: 1 },
      { lineIndex: 1, customId: 'b', n: 1 },
    ];
    const file = [
      failedPrediction(0, 0, 'transient'),
      okPrediction(0, 0),
      okPrediction(1, 0),
      okPrediction(1, 0, imageFor(9, 9)),
      okPrediction(7, 0), // not a line of this shard
      JSON.stringify({ request: { labels: { ibg_line: 'X' } }, status: '' }),
      '{"truncated": ',
    ];
    const { counts, out } = await stitch(lines, [file]);
    expect(counts).toEqual({
      linesSucceeded: 2,
      linesPartial: 0,
      linesFailed: 0,
      imagesSucceeded: 2,
      imagesFailed: 0,
      predictionsIgnored: 3,
      predictionsDuplicate: 2,
    });
    expect(out.map((l) => l.response.body.data[0].b64_json)).toEqual([imageFor(0, 0), imageFor(1, 0)]);
  });

  it('copies tiny inline images and escaped strings correctly', async () => {
    const lines: ShardLine[] = [{ lineIndex: 0, customId: 'we"ird\\id', n: 2 }];
    const tricky = JSON.stringify({
      request: {
        contents: [{ parts: [{ text: `quote " and backslash \\ ${'\\"'.repeat(300)}` }] }],
        labels: { ibg_line: '0', ibg_img: '1' },
      },
      status: '',
      response: {
        candidates: [
          {
            content: {
              parts: [{ text: 'x'.repeat(400) }, { inlineData: { mimeType: 'image/png', data: imageFor(0, 1, 2000) } }],
            },
          },
        ],
      },
    });
    const file = [okPrediction(0, 0, 'iVBORw0KGgo='), tricky];
    for (const chunkSize of [1, 7, 4096]) {
      const { out } = await stitch(lines, [file], chunkSize);
      expect(out[0].custom_id).toBe('we"ird\\id');
      expect(out[0].response.body.data).toEqual([{ b64_json: 'iVBORw0KGgo=' }, { b64_json: imageFor(0, 1, 2000) }]);
    }
  });

  it('reads local prediction files (as streams), leaving them behind', async () => {
    const srcDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ibg-stitch-src-'));
    try {
      const files = [path.join(srcDir, 'p0.jsonl'), path.join(srcDir, 'p1.jsonl')];
      // A big image spans several 1 MiB scan reads; the last line has no newline.
      fs.writeFileSync(files[0], `${okPrediction(1, 0, imageFor(1, 0, 2_500_000))}\n${okPrediction(0, 1)}`);
      fs.writeFileSync(files[1], `${okPrediction(0, 0)}\n${failedPrediction(1, 1, 'boom')}\n`);
      const output = new Collector();
      const errorOutput = new Collector();
      let next = 0;
      const counts = await stitchShard({
        lines: shardLines([
          { lineIndex: 0, customId: 'a', n: 2 },
          { lineIndex: 1, customId: 'b', n: 2 },
        ]),
        predictionFiles: files.map((f) => (range?: ByteRange) => fs.createReadStream(f, range)),
        output,
        errorOutput,
        newRequestId: () => `batch_req_${next++}`,
      });
      expect(counts).toMatchObject({ linesSucceeded: 1, linesPartial: 1, imagesSucceeded: 3, imagesFailed: 1 });
      const out = output.lines();
      expect(out[0].response.body.data).toEqual([{ b64_json: imageFor(0, 0) }, { b64_json: imageFor(0, 1) }]);
      expect(out[1].response.body.data).toEqual([{ b64_json: imageFor(1, 0, 2_500_000) }]);
      expect(errorOutput.lines().map((l) => [l.custom_id, l.error.code])).toEqual([['b', 'partial_failure']]);
      expect(fs.readdirSync(srcDir).sort()).toEqual(['p0.jsonl', 'p1.jsonl']);
    } finally {
      fs.rmSync(srcDir, { recursive: true, force: true });
    }
  });
});

/** A shard of `count` lines (n = 1..4) with failed, blocked, partial and never-answered images, and its predictions in input order. */
function shard(count: number): { lines: ShardLine[]; predictions: string[] } {
  const lines: ShardLine[] = [];
  const predictions: string[] = [];
  for (let i = 0; i < count; i++) {
    const n = 1 + ((i * 7) % 4);
    lines.push({ lineIndex: 100 + i, customId: `req-${i}`, n });
    for (let k = 0; k < n; k++) {
      if (i % 9 === 4 && k === n - 1) continue; // never answered
      if (i % 11 === 2) predictions.push(failedPrediction(100 + i, k, 'Internal error: 500 boom'));
      else if (i % 6 === 1 && k === 0) predictions.push(blockedPrediction(100 + i, k));
      else predictions.push(okPrediction(100 + i, k));
    }
  }
  return { lines, predictions };
}

/** A deterministic shuffle (LCG), so a failure reproduces. */
function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Round-robin over `count` files. */
function deal(predictions: string[], count: number): string[][] {
  const files: string[][] = Array.from({ length: count }, () => []);
  for (const [i, p] of predictions.entries()) files[i % count].push(p);
  return files;
}

interface RawRun {
  counts: StitchCounts;
  stats: ReorderStats;
  output: string;
  errors: string;
  seen: Array<[number, number]>;
}

/** Stitch and return the output files as text (to compare byte for byte) and the reorder stats. */
async function stitchRaw(
  lines: ShardLine[],
  files: string[][],
  options: { chunkSize?: number; reorderBufferBytes?: number; ranges?: RangeLog; images?: ImageSink } = {},
): Promise<RawRun> {
  const output = new Collector();
  const errorOutput = new Collector();
  const seen: Array<[number, number]> = [];
  let stats: ReorderStats | null = null;
  let next = 0;
  const counts = await stitchShard({
    lines: shardLines(lines),
    predictionFiles: options.ranges
      ? rangeFiles(files, options.chunkSize ?? 1000, options.ranges)
      : files.map((f) => streamOf(f.map((l) => `${l}\n`).join(''), options.chunkSize ?? 1000)),
    output,
    errorOutput,
    newRequestId: () => `batch_req_${next++}`,
    onLine: (l, ok) => seen.push([l.lineIndex, ok]),
    reorderBufferBytes: options.reorderBufferBytes,
    onReorderStats: (s) => (stats = s),
    images: options.images,
  });
  const text = (c: Collector) => Buffer.concat(c.chunks).toString('utf8');
  return { counts, stats: stats!, output: text(output), errors: text(errorOutput), seen };
}

/** Base64 bytes of one test image (imageFor's default size). */
const IMAGE_B64 = imageFor(0, 0).length;

describe('stitchShard reordering', () => {
  const { lines, predictions } = shard(40);

  it('writes predictions that arrive in input order straight through: nothing waits beyond its line', async () => {
    const okOnly = lines.flatMap((l) => Array.from({ length: l.n }, (_, k) => okPrediction(l.lineIndex, k)));
    const ranges = newRangeLog();
    const run = await stitchRaw(lines, [okOnly], { ranges });
    expect(run.stats).toMatchObject({ rereadImages: 0, rereadBytes: 0 });
    expect(ranges).toMatchObject({ wholeReads: 1, ranges: [] });
    // At most the first n-1 images of a line wait for its last one.
    expect(run.stats.peakBufferedBytes).toBeLessThanOrEqual(3 * IMAGE_B64);
    expect(run.counts.linesSucceeded).toBe(lines.length);
  });

  it('gives the same bytes for shuffled predictions over two files as for predictions in order', async () => {
    const inOrder = await stitchRaw(lines, [predictions]);
    expect(inOrder.stats.rereadImages).toBe(0);
    expect(inOrder.counts).toMatchObject({
      linesPartial: expect.any(Number),
      predictionsIgnored: 0,
      predictionsDuplicate: 0,
    });
    expect(inOrder.counts.linesPartial).toBeGreaterThan(0);
    expect(inOrder.counts.linesFailed).toBeGreaterThan(0);
    for (const seed of [1, 2, 3]) {
      const run = await stitchRaw(lines, deal(shuffled(predictions, seed), 2), { chunkSize: 777 });
      expect(run.output).toBe(inOrder.output);
      expect(run.errors).toBe(inOrder.errors);
      expect(run.counts).toEqual(inOrder.counts);
      expect(run.seen).toEqual(inOrder.seen);
      expect(run.stats.rereadImages).toBe(0); // the default buffer holds this small shard
    }
  });

  it('does not hold every line after a failed one to the end when the images are small', async () => {
    // Small images hardly count against the reorder buffer: without a bound on the predictions
    // waiting, the failed first line (which waits for a retry's success) would hold all the others.
    const count = 12_000;
    const many = Array.from({ length: count }, (_, i) => ({ lineIndex: i, customId: `c${i}`, n: 1 }));
    const predictions = many.map((l) =>
      l.lineIndex === 0 ? failedPrediction(0, 0, 'Internal error: 500') : okPrediction(l.lineIndex, 0, 'iVBORw0KGgo='),
    );
    const output = new Collector();
    let writtenBeforeTheEnd = -1;
    const file: PredictionFile = () =>
      Readable.from(
        (function* () {
          for (let i = 0; i < predictions.length; i += 100) {
            if (i + 100 >= predictions.length) writtenBeforeTheEnd = output.chunks.length;
            yield Buffer.from(
              predictions
                .slice(i, i + 100)
                .map((l) => `${l}\n`)
                .join(''),
            );
          }
        })(),
      );
    let next = 0;
    const counts = await stitchShard({
      lines: shardLines(many),
      predictionFiles: [file],
      output,
      errorOutput: new Collector(),
      newRequestId: () => `batch_req_${next++}`,
    });
    expect(counts).toMatchObject({ linesSucceeded: count - 1, linesFailed: 1 });
    expect(writtenBeforeTheEnd).toBeGreaterThan(0);
    expect(output.lines().map((l) => l.custom_id)).toEqual(many.slice(1).map((l) => l.customId));
  });

  it('reads images dropped from a full reorder buffer again by range, with the same bytes and the buffer bound kept', async () => {
    const inOrder = await stitchRaw(lines, [predictions]);
    for (const budget of [0, 5 * IMAGE_B64, 20 * IMAGE_B64]) {
      const ranges = newRangeLog();
      const run = await stitchRaw(lines, deal(shuffled(predictions, 7), 2), {
        reorderBufferBytes: budget,
        chunkSize: 4096,
        ranges,
      });
      expect(run.output).toBe(inOrder.output);
      expect(run.errors).toBe(inOrder.errors);
      expect(run.counts).toEqual(inOrder.counts);
      expect(run.seen).toEqual(inOrder.seen);
      expect(run.stats.rereadImages).toBeGreaterThan(0);
      expect(run.stats.rereadBytes).toBe(run.stats.rereadImages * IMAGE_B64);
      expect(run.stats.peakBufferedBytes).toBeLessThanOrEqual(budget);
    }
  });

  it('asks each file for exactly the bytes of the base64 of each dropped image, once', async () => {
    const files = deal(shuffled(predictions, 3), 2);
    const texts = files.map((f) => Buffer.from(f.map((l) => `${l}\n`).join('')));
    const ranges = newRangeLog();
    const run = await stitchRaw(lines, files, { reorderBufferBytes: 0, chunkSize: 500, ranges });
    expect(ranges.wholeReads).toBe(2);
    expect(ranges.ranges).toHaveLength(run.stats.rereadImages);
    const images = new Set(lines.flatMap((l) => Array.from({ length: l.n }, (_, k) => imageFor(l.lineIndex, k))));
    const asked = new Set<string>();
    for (const { file, range } of ranges.ranges) {
      const bytes = texts[file].subarray(range.start, range.end + 1).toString();
      expect(images.has(bytes)).toBe(true);
      expect(texts[file][range.start - 1]).toBe(0x22); // the string's opening quote
      expect(texts[file][range.end + 1]).toBe(0x22); // and its closing one
      asked.add(`${file}:${range.start}`);
    }
    expect(asked.size).toBe(ranges.ranges.length);
  });

  it('reads ahead at most 4 images at once, and fewer big ones', async () => {
    const ranges = newRangeLog();
    await stitchRaw(lines, [[...predictions].reverse()], { reorderBufferBytes: 0, chunkSize: 256, ranges });
    expect(ranges.ranges.length).toBeGreaterThan(20);
    expect(ranges.maxOpen).toBe(4);
    // 5.3 MB of base64 each: three fit in the 16 MiB read ahead, a fourth does not.
    const big = Array.from({ length: 6 }, (_, k) => imageFor(0, k, 4_000_000));
    const bigRanges = newRangeLog();
    const run = await stitchRaw(
      [{ lineIndex: 0, customId: 'a', n: 6 }],
      [big.map((b, k) => okPrediction(0, k, b)).reverse()],
      {
        reorderBufferBytes: 0,
        chunkSize: 1 << 20,
        ranges: bigRanges,
      },
    );
    expect(bigRanges.maxOpen).toBe(3);
    expect(JSON.parse(run.output).response.body.data.map((d: { b64_json: string }) => d.b64_json)).toEqual(big);
  });

  it('fails rather than write wrong bytes when a range reads back short', async () => {
    const file = [okPrediction(1, 0), okPrediction(0, 0)].map((l) => `${l}\n`).join('');
    const truncating: PredictionFile = (range?: ByteRange) => {
      const bytes = Buffer.from(file);
      return Readable.from([range ? bytes.subarray(range.start, range.end) : bytes]);
    };
    await expect(
      stitchShard({
        lines: shardLines([
          { lineIndex: 0, customId: 'a', n: 1 },
          { lineIndex: 1, customId: 'b', n: 1 },
        ]),
        predictionFiles: [truncating],
        output: new Collector(),
        errorOutput: new Collector(),
        newRequestId: () => 'id',
        reorderBufferBytes: 0,
      }),
    ).rejects.toThrow(/read back as/);
  });

  it('lets a line with a failed image wait for a retry until the buffer is full, then writes the failure', async () => {
    const two: ShardLine[] = [
      { lineIndex: 0, customId: 'a', n: 1 },
      { lineIndex: 1, customId: 'b', n: 1 },
      { lineIndex: 2, customId: 'c', n: 1 },
    ];
    const file = [failedPrediction(0, 0, 'transient'), okPrediction(1, 0), okPrediction(2, 0), okPrediction(0, 0)];
    const roomy = await stitchRaw(two, [file]);
    expect(roomy.counts).toMatchObject({ linesSucceeded: 3, linesFailed: 0, predictionsDuplicate: 1 });
    // Two images fill this buffer: line 0 is written failed before its retry comes, which then counts as a duplicate.
    const tight = await stitchRaw(two, [file], { reorderBufferBytes: IMAGE_B64 });
    expect(tight.counts).toMatchObject({ linesSucceeded: 2, linesFailed: 1, predictionsDuplicate: 1 });
    expect(tight.seen).toEqual([
      [0, 0],
      [1, 1],
      [2, 1],
    ]);
    expect(tight.stats.rereadImages).toBe(0);
  });

  it('reads the shard lines only as far ahead as the predictions need', async () => {
    let pulled = 0;
    const pulledAtLine: number[] = [];
    const ones = lines.map((l) => ({ ...l, n: 1 }));
    async function* counted(): AsyncIterable<ShardLine> {
      for (const l of ones) {
        pulled++;
        yield l;
      }
    }
    await stitchShard({
      lines: counted(),
      predictionFiles: [
        streamOf(
          ones
            .slice(0, 5)
            .map((l) => `${okPrediction(l.lineIndex, 0)}\n`)
            .join(''),
          1000,
        ),
      ],
      output: new Collector(),
      errorOutput: new Collector(),
      newRequestId: () => 'id',
      onLine: () => pulledAtLine.push(pulled),
    });
    // Line k is written once its prediction came, with lines up to k read (not all 40).
    expect(pulledAtLine.slice(0, 5)).toEqual([1, 2, 3, 4, 5]);
    expect(pulledAtLine).toHaveLength(40);
  });
});

/**
 * An image sink that keeps what it is given, as a store would: each image is stored a few event
 * loop turns later (so uploads overlap), and the test sees how many were in flight at once.
 */
function memorySink(opts: { turns?: number; failOn?: string } = {}) {
  const stored = new Map<string, { mimeType: string; bytes: Buffer }>();
  const log = { calls: 0, inFlight: 0, maxInFlight: 0 };
  const sink: ImageSink = (image) => {
    const name = `${image.requestId}-${image.img}`;
    log.calls++;
    log.maxInFlight = Math.max(log.maxInFlight, ++log.inFlight);
    expect(image.bytes).toBe(image.data.reduce((sum, piece) => sum + piece.length, 0));
    const done = (async () => {
      try {
        for (let i = 0; i < (opts.turns ?? 3); i++) await new Promise((resolve) => setImmediate(resolve));
        if (name === opts.failOn) throw new Error(`store failed for ${name}`);
        stored.set(name, { mimeType: image.mimeType, bytes: Buffer.concat(image.data) });
      } finally {
        log.inFlight--;
      }
    })();
    return { url: `https://links.test/${name}?sig=1`, stored: done };
  };
  return { sink, stored, log };
}

/** The decoded bytes of imageFor(line, img). */
const imageBytes = (line: number, img: number, bytes?: number) => Buffer.from(imageFor(line, img, bytes), 'base64');

describe('stitchShard url mode', () => {
  it('writes links for url-mode lines in input order, each image stored decoded, b64_json lines unchanged', async () => {
    const lines: ShardLine[] = [
      { lineIndex: 0, customId: 'inline', n: 1 },
      { lineIndex: 1, customId: 'linked', n: 3, responseFormat: 'url' },
      { lineIndex: 2, customId: 'linked-jpeg', n: 2, responseFormat: 'url' },
      { lineIndex: 3, customId: 'inline-too', n: 1, responseFormat: 'b64_json' },
    ];
    const jpeg = (line: number, img: number) => okPrediction(line, img).replace('"image/png"', '"image/jpeg"');
    const fileA = [jpeg(2, 1), okPrediction(1, 2), okPrediction(0, 0)];
    const fileB = [okPrediction(1, 0), jpeg(2, 0), okPrediction(3, 0), okPrediction(1, 1)];
    for (const chunkSize of [1, 13, 1_000_000]) {
      const { sink, stored, log } = memorySink();
      const output = new Collector();
      const seen: Array<[number, number]> = [];
      let next = 0;
      const counts = await stitchShard({
        lines: shardLines(lines),
        predictionFiles: [fileA, fileB].map((f) => streamOf(f.map((l) => `${l}\n`).join(''), chunkSize)),
        output,
        errorOutput: new Collector(),
        newRequestId: () => `batch_req_${next++}`,
        onLine: (l, ok) => seen.push([l.lineIndex, ok]),
        images: sink,
      });
      expect(log.inFlight).toBe(0); // every image stored before the stitch resolved
      expect(counts).toMatchObject({ linesSucceeded: 4, imagesSucceeded: 7, imagesFailed: 0 });
      expect(seen).toEqual([
        [0, 1],
        [1, 3],
        [2, 2],
        [3, 1],
      ]);
      const out = output.lines();
      expect(out.map((l) => l.custom_id)).toEqual(['inline', 'linked', 'linked-jpeg', 'inline-too']);
      expect(out[0].response.body.data).toEqual([{ b64_json: imageFor(0, 0) }]);
      expect(out[3].response.body.data).toEqual([{ b64_json: imageFor(3, 0) }]);
      expect(out[1]).toEqual({
        id: 'batch_req_1',
        custom_id: 'linked',
        response: {
          status_code: 200,
          request_id: 'vertex_batch_req_1',
          body: {
            created: Date.parse('2026-11-21T10:00:00.000Z') / 1000,
            data: [0, 1, 2].map((k) => ({ url: `https://links.test/batch_req_1-${k}?sig=1` })),
            usage: {
              total_tokens: 3900,
              input_tokens: 30,
              output_tokens: 3870,
              input_tokens_details: { text_tokens: 30, image_tokens: 0 },
            },
          },
        },
        error: null,
      });
      expect(out[2].response.body.data).toEqual([
        { url: 'https://links.test/batch_req_2-0?sig=1' },
        { url: 'https://links.test/batch_req_2-1?sig=1' },
      ]);
      const text = Buffer.concat(output.chunks).toString().split('\n');
      expect(Buffer.byteLength(text[1])).toBeLessThan(1000);
      expect([...stored.keys()].sort()).toEqual([
        'batch_req_1-0',
        'batch_req_1-1',
        'batch_req_1-2',
        'batch_req_2-0',
        'batch_req_2-1',
      ]);
      for (const k of [0, 1, 2])
        expect(stored.get(`batch_req_1-${k}`)).toEqual({ mimeType: 'image/png', bytes: imageBytes(1, k) });
      for (const k of [0, 1])
        expect(stored.get(`batch_req_2-${k}`)).toEqual({ mimeType: 'image/jpeg', bytes: imageBytes(2, k) });
    }
  });

  /** Stitch with a memory sink: the output text and what was stored. */
  async function stitchLinked(
    lines: ShardLine[],
    files: string[][],
    options: { chunkSize?: number; reorderBufferBytes?: number; ranges?: RangeLog; turns?: number } = {},
  ) {
    const { sink, stored, log } = memorySink({ turns: options.turns });
    return { ...(await stitchRaw(lines, files, { ...options, images: sink })), stored, log };
  }

  const { lines: plain, predictions } = shard(40);
  // Every other line asks for links: url and b64_json lines interleave in one shard.
  const lines = plain.map((l, i): ShardLine => (i % 2 ? { ...l, responseFormat: 'url' } : l));

  it('gives the same output and stores the same images for shuffled, dropped and re-read predictions', async () => {
    const inOrder = await stitchLinked(lines, [predictions]);
    expect(inOrder.stored.size).toBeGreaterThan(20);
    expect(inOrder.output).toContain('"url":');
    expect(inOrder.output).toContain('"b64_json":');
    expect(inOrder.stored.size).toBe((inOrder.output.match(/"url":/g) ?? []).length);
    for (const budget of [0, 5 * IMAGE_B64, undefined]) {
      const ranges = newRangeLog();
      const run = await stitchLinked(lines, deal(shuffled(predictions, 5), 2), {
        reorderBufferBytes: budget,
        chunkSize: 777,
        ranges,
      });
      expect(run.output).toBe(inOrder.output);
      expect(run.errors).toBe(inOrder.errors);
      expect(run.counts).toEqual(inOrder.counts);
      expect(run.stored).toEqual(inOrder.stored);
      if (budget === 0) expect(run.stats.rereadImages).toBeGreaterThan(0);
      expect(run.log.inFlight).toBe(0);
    }
  });

  it('stores each linked image as the bytes its base64 stands for', async () => {
    const run = await stitchLinked(lines, [predictions]);
    const out = run.output
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    let checked = 0;
    for (const l of out) {
      const shardLine = lines.find((x) => x.customId === l.custom_id)!;
      if (shardLine.responseFormat !== 'url') {
        expect(l.response.body.data[0].b64_json).toBeDefined();
        continue;
      }
      for (const { url } of l.response.body.data) {
        const [, name, img] = /\/(batch_req_\d+-(\d+))\?/.exec(url)!;
        expect(run.stored.get(name)!.bytes).toEqual(imageBytes(shardLine.lineIndex, Number(img)));
        checked++;
      }
    }
    expect(checked).toBe(run.stored.size);
  });

  it('keeps at most 4 uploads (and 32 MiB) in flight and resolves only once all are stored', async () => {
    const many: ShardLine[] = Array.from({ length: 30 }, (_, i) => ({
      lineIndex: i,
      customId: `l${i}`,
      n: 2,
      responseFormat: 'url',
    }));
    const files = [many.flatMap((l) => [okPrediction(l.lineIndex, 0), okPrediction(l.lineIndex, 1)])];
    const run = await stitchLinked(many, files, { turns: 20 });
    expect(run.log.calls).toBe(60);
    expect(run.log.maxInFlight).toBe(4);
    expect(run.log.inFlight).toBe(0);
    expect(run.stored.size).toBe(60);
    // 9 MB decoded each: three fit in the 32 MiB of uploads in flight, a fourth does not.
    const big: ShardLine[] = [{ lineIndex: 0, customId: 'big', n: 5, responseFormat: 'url' }];
    const bigRun = await stitchLinked(
      big,
      [Array.from({ length: 5 }, (_, k) => okPrediction(0, k, imageFor(0, k, 9_000_000)))],
      { turns: 20, chunkSize: 1 << 20 },
    );
    expect(bigRun.log.maxInFlight).toBe(3);
    expect(bigRun.stored.get('batch_req_0-4')!.bytes.equals(imageBytes(0, 4, 9_000_000))).toBe(true);
  });

  it('counts an image that is not valid base64 as failed and never stores it', async () => {
    const bad = '!'.repeat(600); // long: kept as input chunks, like a real image
    const lines: ShardLine[] = [
      { lineIndex: 0, customId: 'half', n: 2, responseFormat: 'url' },
      { lineIndex: 1, customId: 'none', n: 1, responseFormat: 'url' },
    ];
    const file = [okPrediction(0, 0), okPrediction(0, 1, bad), okPrediction(1, 0, 'QQ=*')];
    const seen: Array<[number, number]> = [];
    const { sink, stored } = memorySink();
    const output = new Collector();
    const errorOutput = new Collector();
    const counts = await stitchShard({
      lines: shardLines(lines),
      predictionFiles: [streamOf(file.map((l) => `${l}\n`).join(''), 100)],
      output,
      errorOutput,
      newRequestId: () => 'batch_req_x',
      onLine: (l, ok) => seen.push([l.lineIndex, ok]),
      images: sink,
    });
    expect(seen).toEqual([
      [0, 1],
      [1, 0],
    ]);
    expect(counts).toMatchObject({ linesPartial: 1, linesFailed: 1, imagesSucceeded: 1, imagesFailed: 2 });
    expect([...stored.keys()]).toEqual(['batch_req_x-0']);
    expect(output.lines()[0].response.body.data).toEqual([{ url: 'https://links.test/batch_req_x-0?sig=1' }]);
    expect(errorOutput.lines().map((l) => [l.custom_id, l.error.code, l.error.message])).toEqual([
      ['half', 'partial_failure', expect.stringContaining('not valid base64')],
      ['none', 'image_generation_failed', expect.stringContaining('not valid base64')],
    ]);
  });

  it('fails the stitch when an image cannot be stored, with no upload left running', async () => {
    const many: ShardLine[] = Array.from({ length: 10 }, (_, i) => ({
      lineIndex: i,
      customId: `l${i}`,
      n: 1,
      responseFormat: 'url',
    }));
    const { sink, log } = memorySink({ failOn: 'batch_req_3-0', turns: 5 });
    let next = 0;
    await expect(
      stitchShard({
        lines: shardLines(many),
        predictionFiles: [streamOf(many.map((l) => `${okPrediction(l.lineIndex, 0)}\n`).join(''), 1000)],
        output: new Collector(),
        errorOutput: new Collector(),
        newRequestId: () => `batch_req_${next++}`,
        images: sink,
      }),
    ).rejects.toThrow('store failed for batch_req_3-0');
    expect(log.inFlight).toBe(0);
  });

  it('refuses a url-mode line without an image sink', async () => {
    await expect(
      stitchShard({
        lines: shardLines([{ lineIndex: 0, customId: 'a', n: 1, responseFormat: 'url' }]),
        predictionFiles: [streamOf(`${okPrediction(0, 0)}\n`, 1000)],
        output: new Collector(),
        errorOutput: new Collector(),
        newRequestId: () => 'id',
      }),
    ).rejects.toThrow(/image sink/);
  });

  it('decodes base64 written with escaped slashes, wherever the chunks cut it', async () => {
    const raw = Buffer.concat([Buffer.alloc(600, 0xff), imageBytes(0, 0)]);
    const escaped = raw.toString('base64').replaceAll('/', '\\/');
    const prediction = okPrediction(0, 0, 'PLACEHOLDER').replace('PLACEHOLDER', escaped);
    for (const chunkSize of [1, 2, 5, 4096]) {
      const run = await stitchLinked([{ lineIndex: 0, customId: 'a', n: 1, responseFormat: 'url' }], [[prediction]], {
        chunkSize,
      });
      expect(run.stored.get('batch_req_0-0')!.bytes).toEqual(raw);
    }
  });
});
