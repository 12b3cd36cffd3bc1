/**
 * Throughput and memory of the shard stitcher against a plain byte copy of the same
 * predictions files (node streams `pipeline`, same disk). Predictions: 2,000 images of ~1 MB
 * (1,000,000 random bytes → 1.33 MB of base64; not a real PNG — the stitcher never decodes),
 * n = 1..4 per line, a few failed or blocked lines and a few partial ones, shuffled over 2 files.
 * Each round runs in a fresh process; rounds alternate.
 *
 *   node_modules/.bin/node scripts/bench-stitch.ts [rounds=3] [images=2000]
 */
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { PassThrough } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { stitchShard, type ShardLine } from '../src/pipeline/stitcher.ts';
import { closeStream, makeTempDir, prng, report, runChild, summary, writeAll, type RunReport } from './bench-lib.ts';

const IMAGE_BYTES = 1_000_000;
/** Distinct random payloads, reused round-robin: generating 2 GB of randomness adds nothing. */
const PAYLOADS = 8;

interface Prediction {
  line: number;
  img: number;
  kind: 'ok' | 'failed' | 'blocked';
}

async function generate(dir: string, images: number): Promise<{ files: string[]; linesFile: string; bytes: number }> {
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
      if (!(i % 97 === 11 && k === n - 1)) predictions.push({ line: i, img: k, kind }); // a few never answered
      count++;
    }
  }
  for (let i = predictions.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [predictions[i], predictions[j]] = [predictions[j], predictions[i]];
  }
  const payloads = Array.from({ length: PAYLOADS }, () => Buffer.from(randomBytes(IMAGE_BYTES).toString('base64')));
  const files = [path.join(dir, 'predictions-0.jsonl'), path.join(dir, 'predictions-1.jsonl')];
  const streams = files.map((f) => fs.createWriteStream(f, { highWaterMark: 1 << 20 }));
  for (let p = 0; p < predictions.length; p++) {
    const { line, img, kind } = predictions[p];
    const ws = streams[p % 2];
    const request = `{"request":{"contents":[{"role":"user","parts":[{"text":"a cinematic photo of a harbour at dawn, request ${line}"}]}],` +
      `"generationConfig":{"responseModalities":["IMAGE"],"imageConfig":{"aspectRatio":"1:1","imageSize":"1K"}},` +
      `"labels":{"ibg_line":"${line}","ibg_img":"${img}"}}`;
    const time = `"processed_time":"2026-11-21T10:${String(p % 60).padStart(2, '0')}:00.000Z"`;
    if (kind === 'failed') {
      await writeAll(ws, `${request},"status":"Internal error: 500 image generation failed",${time}}\n`);
    } else if (kind === 'blocked') {
      await writeAll(ws, `${request},"status":"","response":{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12}},${time}}\n`);
    } else {
      await writeAll(ws, `${request},"status":"","response":{"candidates":[{"content":{"role":"model","parts":[{"inlineData":{"mimeType":"image/png","data":"`);
      await writeAll(ws, payloads[p % PAYLOADS]);
      await writeAll(ws, `"}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":1290,"totalTokenCount":1302},"modelVersion":"gemini-2.5-flash-image"},${time}}\n`);
    }
  }
  await Promise.all(streams.map((s) => closeStream(s)));
  const linesFile = path.join(dir, 'lines.json');
  fs.writeFileSync(linesFile, JSON.stringify(lines));
  const bytes = files.reduce((sum, f) => sum + fs.statSync(f).size, 0);
  return { files, linesFile, bytes };
}

function inputBytes(files: string[]): number {
  return files.reduce((sum, f) => sum + fs.statSync(f).size, 0);
}

async function childCopy(outDir: string, files: string[]): Promise<void> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < files.length; i++) {
    await pipeline(fs.createReadStream(files[i]), fs.createWriteStream(path.join(outDir, `copy-${i}.jsonl`)));
  }
  report(start, inputBytes(files));
}

/**
 * `local`: the stitcher gets fs.ReadStreams of whole files and reads them in place.
 * `streamed`: it gets opaque streams (as from GCS) and must copy them to its work dir first.
 */
async function childStitch(variant: string, outDir: string, linesFile: string, files: string[]): Promise<void> {
  const lines = JSON.parse(fs.readFileSync(linesFile, 'utf8')) as ShardLine[];
  const workDir = path.join(outDir, 'work');
  fs.mkdirSync(workDir);
  const start = process.hrtime.bigint();
  const output = fs.createWriteStream(path.join(outDir, 'output.jsonl'));
  const errorOutput = fs.createWriteStream(path.join(outDir, 'errors.jsonl'));
  let next = 0;
  async function* shardLines() {
    yield* lines;
  }
  const counts = await stitchShard({
    lines: shardLines(),
    predictionFiles: files.map((f) => () =>
      variant === 'local' ? fs.createReadStream(f) : fs.createReadStream(f).pipe(new PassThrough())),
    workDir,
    output,
    errorOutput,
    newRequestId: () => `batch_req_${(next++).toString(36).padStart(8, '0')}`,
  });
  await Promise.all([closeStream(output), closeStream(errorOutput)]);
  report(start, inputBytes(files), { ...counts, outputMb: Math.round(fs.statSync(path.join(outDir, 'output.jsonl')).size / 1e6) });
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'child') {
    const [which, outDir, ...more] = rest;
    if (which === 'copy') await childCopy(outDir, more);
    else await childStitch(which === 'stitch-local' ? 'local' : 'streamed', outDir, more[0], more.slice(1));
    return;
  }
  const rounds = Number(mode ?? 3);
  const images = Number(rest[0] ?? 2000);
  const script = fileURLToPath(import.meta.url);
  const dir = makeTempDir('ibg-bench-stitch-');
  try {
    const t0 = Date.now();
    const { files, linesFile, bytes } = await generate(dir, images);
    console.log(`generated ${images} images over ${files.length} files, ${(bytes / 1e6).toFixed(0)} MB in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const baseline: RunReport[] = [];
    const subject: RunReport[] = [];
    const streamed: RunReport[] = [];
    const outDir = path.join(dir, 'out');
    const fresh = () => {
      fs.rmSync(outDir, { recursive: true, force: true });
      fs.mkdirSync(outDir);
      // Flush the previous round's dirty pages first: otherwise their writeback throttles
      // whichever run comes next, and the ratio measures the order of the runs.
      execFileSync('sync');
    };
    for (let r = 0; r < rounds; r++) {
      fresh();
      const b = await runChild(script, ['copy', outDir, ...files]);
      fresh();
      const s = await runChild(script, ['stitch-local', outDir, linesFile, ...files]);
      fresh();
      const t = await runChild(script, ['stitch-streamed', outDir, linesFile, ...files]);
      baseline.push(b);
      subject.push(s);
      streamed.push(t);
      const fmt = (x: RunReport) =>
        `${(x.bytes / 1e6 / x.seconds).toFixed(0)} MB/s ${x.seconds.toFixed(1)} s (cpu ${x.cpuUser.toFixed(1)}u+${x.cpuSys.toFixed(1)}s) ${x.peakRssMb.toFixed(0)} MB`;
      console.log(`round ${r + 1}: copy ${fmt(b)} | stitch local ${fmt(s)} | stitch streamed ${fmt(t)}`);
      if (r === 0) console.log(`  counts: ${JSON.stringify(t.detail)}`);
    }
    fresh();
    const common = {
      baselineName: 'byte copy',
      baseline,
      ratioTarget: 0.5,
      rssTargetMb: 250,
    };
    console.log(summary({
      ...common,
      title: 'bench-stitch (local prediction files, read in place)',
      subjectName: 'stitchShard',
      subject,
      notes: [
        `input: ${images} images (1,000,000 random bytes each → 1.33 MB base64, ${PAYLOADS} distinct payloads reused; not real PNGs), n = 1..4, shuffled over 2 files, ${(bytes / 1e6).toFixed(0)} MB`,
        'MB/s = predictions input bytes / wall time; output + error files written to the same disk as the copy; `sync` before every run (not timed)',
      ],
    }));
    console.log(summary({
      ...common,
      title: 'bench-stitch (opaque streams, e.g. GCS: copied to workDir first)',
      subjectName: 'stitchShard',
      subject: streamed,
      notes: ['same input; each file arrives as fs.createReadStream(f).pipe(new PassThrough()), so the stitcher copies it to workDir (same disk) while indexing'],
    }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
