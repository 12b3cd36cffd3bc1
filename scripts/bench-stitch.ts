/**
 * Throughput and memory of the shard stitcher on the production path — predictions arriving as
 * generic streams (as from Cloud Storage), output to a generic stream — against a plain byte
 * copy of the same bytes through the same kind of streams to the same disk.
 *
 * Input: 2,000 images of ~1 MB (1,000,000 random bytes → 1.33 MB of base64; not a real PNG — the
 * stitcher never decodes), n = 1..4 per line, a few failed lines and a few partial (blocked)
 * ones, every request answered (as a job that completed writes it). Written twice: in input order
 * in one file (as one Vertex file usually comes), and shuffled over 2 files. Both give the same
 * output, byte for byte (checked in the first round).
 *
 * (d) is url mode (`response_format: "url"` on every line) over the same in-order file: each image
 * is decoded from its base64 and stored as an object through the production image sink
 * (src/pipeline/image-sink.ts, signing each link with the real LinkSigner), with a store whose
 * objects are files on the same disk (fs.createWriteStream per image, up to 4 at once as the
 * stitcher allows) — not the GCS emulator, whose HTTP hop would be measured instead — and the
 * output lines hold links. Its output is a few hundred bytes per line.
 *
 * Each round runs (a) the copy, (b) stitch in order, (c) stitch shuffled, (d) url mode, each in
 * a fresh process after `sync`; rounds alternate.
 *
 *   node_modules/.bin/node scripts/bench-stitch.ts [rounds=5] [images=2000]
 */

import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { ByteRange, ImageSink, ReorderStats, ShardLine } from '../src/pipeline/stitcher.ts';
import type { ObjectStore } from '../src/storage/object-store.ts';
import {
  closeStream,
  makeTempDir,
  multiSummary,
  prng,
  type RunReport,
  report,
  runChild,
  writeAll,
} from './bench-lib.ts';

const IMAGE_BYTES = 1_000_000;
/** Distinct random payloads, reused: generating 2 GB of randomness adds nothing. */
const PAYLOADS = 8;

interface Prediction {
  line: number;
  img: number;
  kind: 'ok' | 'failed' | 'blocked';
}

interface Inputs {
  inOrder: string[];
  shuffled: string[];
  linesFile: string;
  bytes: number;
}

function plan(images: number): { lines: ShardLine[]; predictions: Prediction[] } {
  const rand = prng(7);
  const lines: ShardLine[] = [];
  const predictions: Prediction[] = [];
  let count = 0;
  for (let i = 0; count < images; i++) {
    const n = Math.min(1 + Math.floor(rand() * 4), images - count);
    lines.push({ lineIndex: i, customId: `request-${i}`, n });
    const lineFails = i % 50 === 3; // ~2 % of lines fail entirely
    for (let k = 0; k < n; k++) {
      let kind: Prediction['kind'] = 'ok';
      if (lineFails) kind = 'failed';
      else if (i % 40 === 5 && k === 0) kind = 'blocked'; // some partial lines (or blocked n=1 lines)
      predictions.push({ line: i, img: k, kind });
      count++;
    }
  }
  return { lines, predictions };
}

function shuffle<T>(items: T[], rand: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Write predictions round-robin over `files`. Everything depends on (line, img) only, not on the position. */
async function writePredictions(files: string[], predictions: Prediction[], payloads: Buffer[]): Promise<void> {
  const streams = files.map((f) => fs.createWriteStream(f, { highWaterMark: 1 << 20 }));
  for (let p = 0; p < predictions.length; p++) {
    const { line, img, kind } = predictions[p];
    const ws = streams[p % streams.length];
    const request =
      `{"request":{"contents":[{"role":"user","parts":[{"text":"a cinematic photo of a harbour at dawn, request ${line}"}]}],` +
      `"generationConfig":{"responseModalities":["IMAGE"],"imageConfig":{"aspectRatio":"1:1","imageSize":"1K"}},` +
      `"labels":{"ibg_line":"${line}","ibg_img":"${img}"}}`;
    const time = `"processed_time":"2026-11-21T10:${String(line % 60).padStart(2, '0')}:00.000Z"`;
    if (kind === 'failed') {
      await writeAll(ws, `${request},"status":"Internal error: 500 image generation failed",${time}}\n`);
    } else if (kind === 'blocked') {
      await writeAll(
        ws,
        `${request},"status":"","response":{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12}},${time}}\n`,
      );
    } else {
      await writeAll(
        ws,
        `${request},"status":"","response":{"candidates":[{"content":{"role":"model","parts":[{"inlineData":{"mimeType":"image/png","data":"`,
      );
      await writeAll(ws, payloads[(line * 4 + img) % PAYLOADS]);
      await writeAll(
        ws,
        `"}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":1290,"totalTokenCount":1302},"modelVersion":"gemini-2.5-flash-image"},${time}}\n`,
      );
    }
  }
  await Promise.all(streams.map((s) => closeStream(s)));
}

async function generate(dir: string, images: number): Promise<Inputs> {
  const { lines, predictions } = plan(images);
  const payloads = Array.from({ length: PAYLOADS }, () => Buffer.from(randomBytes(IMAGE_BYTES).toString('base64')));
  const inOrder = [path.join(dir, 'in-order.jsonl')];
  const shuffled = [path.join(dir, 'shuffled-0.jsonl'), path.join(dir, 'shuffled-1.jsonl')];
  await writePredictions(inOrder, predictions, payloads);
  await writePredictions(shuffled, shuffle(predictions, prng(11)), payloads);
  const linesFile = path.join(dir, 'lines.json');
  fs.writeFileSync(linesFile, JSON.stringify(lines));
  return { inOrder, shuffled, linesFile, bytes: inputBytes(inOrder) };
}

function inputBytes(files: string[]): number {
  return files.reduce((sum, f) => sum + fs.statSync(f).size, 0);
}

/** A file, or a byte range of it, read through a PassThrough: an opaque stream, as a GCS read stream is. */
function genericReader(file: string, range?: ByteRange): Readable {
  return fs.createReadStream(file, range ? { start: range.start, end: range.end } : {}).pipe(new PassThrough());
}

/** A PassThrough into a file: an opaque writable, as a GCS write stream is; `done` when the file is closed. */
function genericWriter(file: string): { stream: PassThrough; done: Promise<void> } {
  const stream = new PassThrough();
  return { stream, done: pipeline(stream, fs.createWriteStream(file)) };
}

async function childCopy(outDir: string, files: string[]): Promise<void> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < files.length; i++) {
    await pipeline(
      fs.createReadStream(files[i]),
      new PassThrough(),
      fs.createWriteStream(path.join(outDir, `copy-${i}.jsonl`)),
    );
  }
  report(start, inputBytes(files));
}

/**
 * The production image sink over a store whose objects are files in `dir` (only `writeStream`
 * is used by the sink), signing links with the real signer.
 */
async function diskImageSink(dir: string): Promise<{ sink: ImageSink; prefix: string }> {
  const { objectImageSink } = await import('../src/pipeline/image-sink.ts');
  const { LinkSigner } = await import('../src/storage/signed-links.ts');
  const prefix = 'tenants/1/batches/batch_bench/images-run/';
  fs.mkdirSync(path.join(dir, prefix), { recursive: true });
  const store = {
    writeStream: (key: string) => fs.createWriteStream(path.join(dir, key)),
  } as unknown as ObjectStore;
  const links = new LinkSigner({
    secret: 'bench-signing-secret-of-at-least-32-characters',
    baseUrl: () => 'https://images.example.com',
    ttlMs: 7 * 864e5,
  });
  return { sink: objectImageSink({ store, links, prefix }), prefix };
}

async function childStitch(
  outDir: string,
  verify: boolean,
  linesFile: string,
  files: string[],
  links = false,
): Promise<void> {
  // Imported here, not at the top: the copy's process must not carry the gateway's modules in its RSS.
  const { stitchShard } = await import('../src/pipeline/stitcher.ts');
  let lines = JSON.parse(fs.readFileSync(linesFile, 'utf8')) as ShardLine[];
  if (links) lines = lines.map((l) => ({ ...l, responseFormat: 'url' as const }));
  const images = links ? await diskImageSink(outDir) : null;
  const outputFile = path.join(outDir, 'output.jsonl');
  const errorFile = path.join(outDir, 'errors.jsonl');
  const start = process.hrtime.bigint();
  const output = genericWriter(outputFile);
  const errorOutput = genericWriter(errorFile);
  let next = 0;
  async function* shardLines() {
    yield* lines;
  }
  let reorder: ReorderStats | null = null;
  const counts = await stitchShard({
    lines: shardLines(),
    // Range-capable, as finalize passes them: images dropped from the reorder buffer are read again by range.
    predictionFiles: files.map((f) => (range?: ByteRange) => genericReader(f, range)),
    output: output.stream,
    errorOutput: errorOutput.stream,
    // As long as a real id (batch_req_ + 24 characters): the url lines are as long as in production.
    newRequestId: () => `batch_req_${(next++).toString(36).padStart(24, '0')}`,
    onReorderStats: (s) => (reorder = s),
    images: images?.sink,
  });
  output.stream.end();
  errorOutput.stream.end();
  await Promise.all([output.done, errorOutput.done]);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  // Not timed: proof that in-order and shuffled input give the same bytes.
  const digest = verify ? { output: await sha256(outputFile), errors: await sha256(errorFile) } : undefined;
  report(start, inputBytes(files), {
    seconds,
    counts,
    reorder,
    outputBytes: fs.statSync(outputFile).size,
    ...(await lineLengths(outputFile)),
    digest,
    images: images ? storedImages(path.join(outDir, images.prefix)) : undefined,
  });
}

/** The images a url-mode run stored: how many, their bytes, and how many are not the 1,000,000 bytes they were. */
function storedImages(dir: string): { count: number; bytes: number; wrongSize: number } {
  const sizes = fs.readdirSync(dir).map((f) => fs.statSync(path.join(dir, f)).size);
  return {
    count: sizes.length,
    bytes: sizes.reduce((a, b) => a + b, 0),
    wrongSize: sizes.filter((size) => size !== IMAGE_BYTES).length,
  };
}

/** How many lines a file has and the longest one's bytes (newline excluded), read in chunks. */
async function lineLengths(file: string): Promise<{ lines: number; longestLine: number }> {
  let lines = 0;
  let longestLine = 0;
  let current = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) {
    const buf = chunk as Buffer;
    let from = 0;
    for (let nl = buf.indexOf(0x0a); nl !== -1; nl = buf.indexOf(0x0a, from)) {
      longestLine = Math.max(longestLine, current + nl - from);
      current = 0;
      lines++;
      from = nl + 1;
    }
    current += buf.length - from;
  }
  return { lines, longestLine };
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex').slice(0, 16);
}

/** The stitch child's own timing (report() runs after the untimed digest). */
function timed(r: RunReport): RunReport {
  const d = r.detail as { seconds: number };
  return { ...r, seconds: d.seconds };
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'child') {
    const [which, outDir, ...more] = rest;
    if (which === 'copy') await childCopy(outDir, more);
    else await childStitch(outDir, which === 'stitch-verify', more[0], more.slice(1), which === 'stitch-url');
    return;
  }
  const rounds = Number(mode ?? 5);
  const images = Number(rest[0] ?? 2000);
  const script = fileURLToPath(import.meta.url);
  const dir = makeTempDir('ibg-bench-stitch-');
  try {
    const t0 = Date.now();
    const input = await generate(dir, images);
    console.log(
      `generated ${images} images, ${(input.bytes / 1e6).toFixed(0)} MB, in order (1 file) and shuffled (2 files), in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    const copy: RunReport[] = [];
    const inOrder: RunReport[] = [];
    const shuffled: RunReport[] = [];
    const linked: RunReport[] = [];
    const outDir = path.join(dir, 'out');
    const fresh = () => {
      fs.rmSync(outDir, { recursive: true, force: true });
      fs.mkdirSync(outDir);
      // Flush the previous run's dirty pages first: otherwise their writeback throttles
      // whichever run comes next, and the ratio measures the order of the runs.
      execFileSync('sync');
    };
    const fmt = (x: RunReport) =>
      `${(x.bytes / 1e6 / x.seconds).toFixed(0)} MB/s ${x.seconds.toFixed(1)} s (cpu ${x.cpuUser.toFixed(1)}u+${x.cpuSys.toFixed(1)}s) ${x.peakRssMb.toFixed(0)} MB`;
    for (let r = 0; r < rounds; r++) {
      const stitchMode = r === 0 ? 'stitch-verify' : 'stitch';
      fresh();
      const a = await runChild(script, ['copy', outDir, ...input.inOrder]);
      fresh();
      const b = timed(await runChild(script, [stitchMode, outDir, input.linesFile, ...input.inOrder]));
      fresh();
      const c = timed(await runChild(script, [stitchMode, outDir, input.linesFile, ...input.shuffled]));
      fresh();
      const d = timed(await runChild(script, ['stitch-url', outDir, input.linesFile, ...input.inOrder]));
      copy.push(a);
      inOrder.push(b);
      shuffled.push(c);
      linked.push(d);
      console.log(
        `round ${r + 1}: (a) copy ${fmt(a)} | (b) in order ${fmt(b)} | (c) shuffled ${fmt(c)} | (d) url mode ${fmt(d)}`,
      );
      if (r === 0) {
        const [db, dc] = [b.detail, c.detail] as Array<{ digest: unknown; counts: unknown; reorder: unknown }>;
        console.log(`  counts: ${JSON.stringify(db.counts)}`);
        console.log(`  reorder (b): ${JSON.stringify(db.reorder)}  (c): ${JSON.stringify(dc.reorder)}`);
        const same =
          JSON.stringify(db.digest) === JSON.stringify(dc.digest) &&
          JSON.stringify(db.counts) === JSON.stringify(dc.counts);
        console.log(
          `  output + errors sha256 (b) ${JSON.stringify(db.digest)} (c) ${JSON.stringify(dc.digest)}: ${same ? 'identical' : 'DIFFERENT'}`,
        );
        if (!same) throw new Error('in-order and shuffled predictions gave different output');
        const dd = d.detail as { counts: { imagesSucceeded: number }; images: { count: number; wrongSize: number } };
        console.log(`  url mode (d): images stored ${JSON.stringify(dd.images)}`);
        if (dd.images.count !== dd.counts.imagesSucceeded || dd.images.wrongSize > 0) {
          throw new Error('url mode did not store every image at its decoded size');
        }
      }
    }
    fresh();
    const sizes = (runs: RunReport[]) => runs[0].detail as { outputBytes: number; longestLine: number; lines: number };
    const [inlineOut, linkedOut] = [sizes(inOrder), sizes(linked)];
    console.log(
      multiSummary({
        title: 'bench-stitch (predictions and output as generic streams, as with GCS)',
        notes: [
          `input: ${images} images (1,000,000 random bytes each → 1.33 MB base64, ${PAYLOADS} distinct payloads reused; not real PNGs), n = 1..4, ~2 % failed lines, a few partial, every request answered, ${(input.bytes / 1e6).toFixed(0)} MB`,
          '(a) byte copy: fs.createReadStream → PassThrough → fs.createWriteStream, same disk',
          '(b) stitch, predictions in input order in 1 file; (c) stitch, predictions shuffled over 2 files; both read as fs.createReadStream(f, range?).pipe(PassThrough) (range-capable: images dropped from the reorder buffer are read again by range), output and errors written through a PassThrough into files on the same disk',
          '(d) url mode, predictions in input order in 1 file, read as (b); each image decoded and written by the production image sink to its own file on the same disk (≤ 4 in flight), links signed',
          `output file: (b) ${(inlineOut.outputBytes / 1e6).toFixed(0)} MB, longest line ${(inlineOut.longestLine / 1e6).toFixed(2)} MB; (d) ${(linkedOut.outputBytes / 1e3).toFixed(0)} kB for ${linkedOut.lines} lines (${(linkedOut.outputBytes / linkedOut.lines).toFixed(0)} B per line, longest ${linkedOut.longestLine} B)`,
          'MB/s = predictions bytes / wall time; ratio = median MB/s ÷ median MB/s of (a); `sync` before every run (not timed)',
        ],
        baseline: { name: '(a) byte copy', runs: copy },
        subjects: [
          { name: '(b) stitch in order', runs: inOrder, ratioTarget: 0.7 },
          { name: '(c) stitch shuffled', runs: shuffled, ratioTarget: 0.6 },
          { name: '(d) url mode', runs: linked, ratioTarget: 0.5 },
        ],
        rssTargetMb: 250,
      }),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
