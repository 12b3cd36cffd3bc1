import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { IMAGE_LABEL, LINE_LABEL } from '../vertex/translate.ts';
import {
  failedLine,
  IMAGE_SEPARATOR,
  partialLine,
  successLineHead,
  successLineTail,
  type ImageFailure,
  type LineUsage,
} from './output-lines.ts';

/** One request of the shard, in input order. */
export interface ShardLine {
  lineIndex: number;
  customId: string;
  n: number;
}

export interface StitchCounts {
  /** Lines whose n images all succeeded (output file only). */
  linesSucceeded: number;
  /** Lines with some images: output file (the images) and error file (`partial_failure`). */
  linesPartial: number;
  /** Lines without any image (error file only). */
  linesFailed: number;
  imagesSucceeded: number;
  imagesFailed: number;
  /** Prediction lines that were unreadable or whose labels match no (line, image) of the shard. */
  predictionsIgnored: number;
  /** Extra predictions for a (line, image) already answered: counted once (a success wins). */
  predictionsDuplicate: number;
}

export interface StitchOptions {
  lines: AsyncIterable<ShardLine>;
  /**
   * Every predictions file of the shard; each is opened once. A whole-file fs.ReadStream is read
   * in place (by path); any other stream (e.g. from GCS) is copied to workDir first.
   */
  predictionFiles: Array<() => Readable>;
  /** Local scratch directory: streamed predictions are copied here for random access, and removed after. */
  workDir: string;
  /** Successes and partial successes. Not ended here: the caller ends it. */
  output: Writable;
  /** Failures and the shortfall of partial lines. Not ended here: the caller ends it. */
  errorOutput: Writable;
  newRequestId(): string;
  /** Told each line's outcome, in order (e.g. to bill successful images by size tier). */
  onLine?(line: ShardLine, imagesSucceeded: number): void;
}

/** finishReason / blockReason values that mean the safety system withheld the image. */
const BLOCK_REASONS = new Set([
  'SAFETY', 'BLOCKLIST', 'PROHIBITED_CONTENT', 'SPII', 'IMAGE_SAFETY', 'IMAGE_PROHIBITED_CONTENT',
  'MODEL_ARMOR', 'JAILBREAK', 'RECITATION', 'IMAGE_RECITATION',
]);

/** Most images of a line read back in one piece; bigger ones in pieces of this size. */
const READ_PIECE = 4 * 1024 * 1024;
/** Read size when scanning a local file: large reads cost far fewer syscalls than 64 KiB stream chunks. */
const SCAN_READ = 1024 * 1024;
/** JSON strings longer than this are not kept in memory while scanning: only their byte range is. */
const SHORT_STRING = 256;
/** `n` is at most 10: (line, image) → one number key. */
const IMAGES_PER_LINE_KEY = 16;

/**
 * Stitch a shard's predictions into output and error lines in input order, one line per request.
 *
 * Vertex writes predictions in any order and over several files, and each holds a ~1 MB base64
 * image. Pass 1 copies every predictions file to local disk (unless it already is a local file)
 * while a scanner records, per (line, image), only the byte range of the image's base64 and a
 * few numbers — the JSON around it is parsed with the long strings cut out, so no image ever
 * becomes a JS string. Pass 2 walks the shard's lines in order and copies each image's bytes,
 * by offset, from the local file into the output.
 * Memory: the index (a few numbers per image) plus two images in flight (one read ahead).
 */
export async function stitchShard(opts: StitchOptions): Promise<StitchCounts> {
  const index = new PredictionIndex();
  const localPaths: string[] = [];
  const handles: fsp.FileHandle[] = [];
  const tag = randomBytes(4).toString('hex');
  try {
    const readPaths: string[] = [];
    for (let f = 0; f < opts.predictionFiles.length; f++) {
      const source = opts.predictionFiles[f]();
      const onDisk = wholeLocalFile(source);
      if (onDisk !== null) {
        // Already a local file: read it in place, no copy needed.
        source.destroy();
        readPaths.push(onDisk);
        await indexLocalFile(onDisk, f, index);
      } else {
        const local = path.join(opts.workDir, `predictions-${tag}-${f}.jsonl`);
        localPaths.push(local);
        readPaths.push(local);
        await copyAndIndex(source, local, f, index);
      }
    }
    for (const p of readPaths) handles.push(await fsp.open(p, 'r'));
    const counts = await writeLines(opts, index, handles);
    counts.predictionsIgnored = index.unreadable + index.remaining();
    counts.predictionsDuplicate = index.duplicates;
    return counts;
  } finally {
    await Promise.all(handles.map((h) => h.close().catch(() => {})));
    await Promise.all(localPaths.map((p) => fsp.rm(p, { force: true })));
  }
}

// ---------------------------------------------------------------------------------------------
// Pass 1: copy + scan

const OUTCOME_IMAGE = 0;
const OUTCOME_INLINE = 1;
const OUTCOME_FAILED = 2;

/** Per (line, image) facts, column-wise in plain number arrays: compact for 200,000 images. */
class PredictionIndex {
  private readonly slots = new Map<number, number>();
  private readonly outcome: number[] = [];
  private readonly file: number[] = [];
  private readonly start: number[] = [];
  private readonly length: number[] = [];
  private readonly created: number[] = [];
  private readonly inputTokens: number[] = [];
  private readonly outputTokens: number[] = [];
  private readonly totalTokens: number[] = [];
  private readonly textTokens: number[] = [];
  private readonly imageTokens: number[] = [];
  /** Rare: failures and tiny (≤ SHORT_STRING) images kept as strings. */
  private readonly failures = new Map<number, ImageFailure>();
  private readonly inline = new Map<number, string>();
  duplicates = 0;
  unreadable = 0;

  add(key: number, p: ScannedPrediction): void {
    let slot = this.slots.get(key);
    if (slot !== undefined) {
      this.duplicates++;
      // A retried request may have failed once and succeeded later: the success wins.
      if (this.outcome[slot] !== OUTCOME_FAILED || p.outcome === OUTCOME_FAILED) return;
      this.failures.delete(slot);
    } else {
      slot = this.outcome.length;
      this.slots.set(key, slot);
    }
    this.outcome[slot] = p.outcome;
    this.file[slot] = p.file;
    this.start[slot] = p.start;
    this.length[slot] = p.length;
    this.created[slot] = p.created;
    this.inputTokens[slot] = p.usage.inputTokens;
    this.outputTokens[slot] = p.usage.outputTokens;
    this.totalTokens[slot] = p.usage.totalTokens;
    this.textTokens[slot] = p.usage.textTokens;
    this.imageTokens[slot] = p.usage.imageTokens;
    if (p.failure) this.failures.set(slot, p.failure);
    if (p.inline !== null) this.inline.set(slot, p.inline);
  }

  /** The slot of (line, image), removed from the index so leftovers can be counted. */
  take(lineIndex: number, img: number): number | undefined {
    const key = lineIndex * IMAGES_PER_LINE_KEY + img;
    const slot = this.slots.get(key);
    if (slot !== undefined) this.slots.delete(key);
    return slot;
  }

  remaining(): number {
    return this.slots.size;
  }

  isImage(slot: number): boolean {
    return this.outcome[slot] !== OUTCOME_FAILED;
  }

  failure(slot: number): ImageFailure {
    return this.failures.get(slot)!;
  }

  inlineData(slot: number): string | undefined {
    return this.outcome[slot] === OUTCOME_INLINE ? this.inline.get(slot) : undefined;
  }

  location(slot: number): { file: number; start: number; length: number } {
    return { file: this.file[slot], start: this.start[slot], length: this.length[slot] };
  }

  createdOf(slot: number): number {
    return this.created[slot];
  }

  addUsage(slot: number, u: LineUsage): void {
    u.inputTokens += this.inputTokens[slot];
    u.outputTokens += this.outputTokens[slot];
    u.totalTokens += this.totalTokens[slot];
    u.textTokens += this.textTokens[slot];
    u.imageTokens += this.imageTokens[slot];
  }
}

interface ScannedPrediction {
  outcome: number;
  file: number;
  start: number;
  length: number;
  inline: string | null;
  created: number;
  usage: LineUsage;
  failure: ImageFailure | null;
}

/** The path of a stream that reads a whole local file from its start, else null. */
function wholeLocalFile(source: Readable): string | null {
  if (!(source instanceof fs.ReadStream)) return null;
  const { path: p, start, end } = source as fs.ReadStream & { start?: number; end?: number };
  if (typeof p !== 'string') return null;
  if (start !== undefined && start !== 0) return null;
  if (end !== undefined && end !== Infinity) return null;
  return p;
}

/** Scan a local predictions file with large reads into one reused buffer (the scanner copies what it keeps). */
async function indexLocalFile(file: string, fileIndex: number, index: PredictionIndex): Promise<void> {
  const fh = await fsp.open(file, 'r');
  const scanner = new PredictionScanner(fileIndex, index);
  try {
    const buf = Buffer.allocUnsafe(SCAN_READ);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      scanner.push(buf.subarray(0, bytesRead));
    }
    scanner.end();
  } finally {
    await fh.close();
  }
}

/** Copy one predictions stream to `localPath`, feeding every chunk to the scanner on the way. */
async function copyAndIndex(source: Readable, localPath: string, file: number, index: PredictionIndex): Promise<void> {
  const out = fs.createWriteStream(localPath, { highWaterMark: 1024 * 1024 });
  const scanner = new PredictionScanner(file, index);
  try {
    for await (const chunk of source) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      if (!out.write(buf)) await once(out, 'drain');
      scanner.push(buf);
    }
    scanner.end();
  } finally {
    out.end();
    await once(out, 'close').catch(() => {});
  }
  if (out.errored) throw out.errored;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
/** Stands in for a long string in the parsed skeleton of a line: "\u0000" + its number. */
const PLACEHOLDER_PREFIX = '\u0000';

/**
 * Splits a predictions stream into lines and reduces each to a small JSON skeleton: strings
 * longer than SHORT_STRING (the base64 images, long prompts) are replaced by placeholders and
 * remembered as absolute byte ranges of the file. Strings are skipped with Buffer.indexOf (native
 * memchr), so the JS loop only visits the few structural bytes between strings.
 */
class PredictionScanner {
  private readonly fileIndex: number;
  private readonly index: PredictionIndex;
  private offset = 0; // absolute offset of the current chunk
  private inString = false;
  private skeleton: Buffer[] = [];
  private skeletonLength = 0;
  private blobs: number[] = []; // [start, end) pairs of long strings of the current line
  private stringStart = 0; // absolute offset of the current string's first content byte
  private stringLength = 0;
  private stringPieces: Buffer[] | null = null; // while the string is still short
  private trailingBackslashes = 0; // of the current string at the end of the previous chunk

  constructor(fileIndex: number, index: PredictionIndex) {
    this.fileIndex = fileIndex;
    this.index = index;
  }

  push(chunk: Buffer): void {
    const len = chunk.length;
    let pos = 0;
    while (pos < len) {
      if (this.inString) {
        pos = this.continueString(chunk, pos);
        continue;
      }
      let i = pos;
      while (i < len) {
        const c = chunk[i];
        if (c === QUOTE || c === NEWLINE) break;
        i++;
      }
      // Copied: the chunk's buffer may be reused for the next read.
      if (i > pos) this.addSkeleton(Buffer.from(chunk.subarray(pos, i)));
      if (i === len) break;
      if (chunk[i] === NEWLINE) {
        this.endLine();
      } else {
        this.inString = true;
        this.stringStart = this.offset + i + 1;
        this.stringLength = 0;
        this.stringPieces = [];
        this.trailingBackslashes = 0;
      }
      pos = i + 1;
    }
    this.offset += len;
  }

  end(): void {
    if (this.inString) {
      // Truncated last line: nothing usable.
      this.inString = false;
      this.index.unreadable++;
      this.resetLine();
    } else if (this.skeletonLength > 0) {
      this.endLine();
    }
  }

  /** Look for the closing quote from `pos`; returns where the scan goes on. */
  private continueString(chunk: Buffer, pos: number): number {
    const len = chunk.length;
    let from = pos;
    let carried = this.trailingBackslashes;
    let q = chunk.indexOf(QUOTE, from);
    while (q !== -1 && isEscaped(chunk, from, q, carried)) {
      from = q + 1;
      carried = 0;
      q = chunk.indexOf(QUOTE, from);
    }
    if (q === -1) {
      this.addString(chunk, pos, len);
      let run = 0;
      while (run < len - from && chunk[len - 1 - run] === BACKSLASH) run++;
      this.trailingBackslashes = run === len - from ? carried + run : run;
      return len;
    }
    this.addString(chunk, pos, q);
    this.finishString(this.offset + q);
    return q + 1;
  }

  private addString(chunk: Buffer, start: number, end: number): void {
    if (end <= start) return;
    this.stringLength += end - start;
    if (this.stringPieces === null) return;
    if (this.stringLength > SHORT_STRING) this.stringPieces = null;
    else this.stringPieces.push(Buffer.from(chunk.subarray(start, end)));
  }

  private finishString(endOffset: number): void {
    this.inString = false;
    if (this.stringPieces !== null) {
      this.addSkeleton(QUOTE_BUFFER);
      for (const p of this.stringPieces) this.addSkeleton(p);
      this.addSkeleton(QUOTE_BUFFER);
    } else {
      const n = this.blobs.length / 2;
      this.blobs.push(this.stringStart, endOffset);
      this.addSkeleton(Buffer.from(`"\\u0000${n}"`));
    }
    this.stringPieces = null;
  }

  private addSkeleton(piece: Buffer): void {
    this.skeleton.push(piece);
    this.skeletonLength += piece.length;
  }

  private endLine(): void {
    const text = Buffer.concat(this.skeleton, this.skeletonLength).toString('utf8');
    const blobs = this.blobs;
    this.resetLine();
    if (!/\S/.test(text)) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.index.unreadable++;
      return;
    }
    const p = readPrediction(parsed, blobs, this.fileIndex);
    if (p === null) this.index.unreadable++;
    else this.index.add(p.key, p.prediction);
  }

  private resetLine(): void {
    this.skeleton = [];
    this.skeletonLength = 0;
    this.blobs = [];
  }
}

const QUOTE_BUFFER = Buffer.from('"');

/** Is the quote at `q` escaped, i.e. preceded by an odd run of backslashes? */
function isEscaped(chunk: Buffer, from: number, q: number, carried: number): boolean {
  let k = q - 1;
  let run = 0;
  while (k >= from && chunk[k] === BACKSLASH) {
    run++;
    k--;
  }
  if (k < from) run += carried;
  return run % 2 === 1;
}

// ---------------------------------------------------------------------------------------------
// Reading one prediction's skeleton

interface InlineData {
  mimeType?: string;
  data?: string;
}
interface Part {
  inlineData?: InlineData;
  text?: string;
}
interface Candidate {
  content?: { parts?: Part[] };
  finishReason?: string;
  finishMessage?: string;
}
interface PredictionLine {
  request?: { labels?: Record<string, string> };
  status?: string;
  response?: {
    candidates?: Candidate[];
    promptFeedback?: { blockReason?: string; blockReasonMessage?: string };
    usageMetadata?: {
      promptTokenCount?: number;
      candidatesTokenCount?: number;
      totalTokenCount?: number;
      promptTokensDetails?: Array<{ modality?: string; tokenCount?: number }>;
    };
  };
  processed_time?: string;
}

function readPrediction(parsed: unknown, blobs: number[], file: number): { key: number; prediction: ScannedPrediction } | null {
  if (typeof parsed !== 'object' || parsed === null) return null;
  const line = parsed as PredictionLine;
  const labels = line.request?.labels;
  const lineIndex = toIndex(labels?.[LINE_LABEL]);
  const img = toIndex(labels?.[IMAGE_LABEL]);
  if (lineIndex === null || img === null || img >= IMAGES_PER_LINE_KEY) return null;
  const prediction: ScannedPrediction = {
    outcome: OUTCOME_FAILED,
    file,
    start: 0,
    length: 0,
    inline: null,
    created: toUnixSeconds(line.processed_time),
    usage: readUsage(line),
    failure: null,
  };
  const image = line.status ? undefined : findImage(line);
  if (image === undefined) {
    prediction.failure = describeFailure(line);
  } else if (image.startsWith(PLACEHOLDER_PREFIX)) {
    const b = Number(image.slice(1)) * 2;
    prediction.outcome = OUTCOME_IMAGE;
    prediction.start = blobs[b];
    prediction.length = blobs[b + 1] - blobs[b];
  } else {
    prediction.outcome = OUTCOME_INLINE;
    // Short enough to keep; re-escaped for the output's JSON string (base64 needs none).
    prediction.inline = JSON.stringify(image).slice(1, -1);
  }
  return { key: lineIndex * IMAGES_PER_LINE_KEY + img, prediction };
}

function toIndex(v: unknown): number | null {
  if (typeof v !== 'string' || !/^\d{1,9}$/.test(v)) return null;
  return Number(v);
}

function toUnixSeconds(time: string | undefined): number {
  const ms = time ? Date.parse(time) : NaN;
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : 0;
}

/** The first image part of the first candidate that has one. */
function findImage(line: PredictionLine): string | undefined {
  for (const c of line.response?.candidates ?? []) {
    for (const part of c.content?.parts ?? []) {
      const data = part.inlineData?.data;
      if (typeof data === 'string' && data.length > 0) return data;
    }
  }
  return undefined;
}

function readUsage(line: PredictionLine): LineUsage {
  const m = line.response?.usageMetadata;
  const input = m?.promptTokenCount ?? 0;
  const output = m?.candidatesTokenCount ?? 0;
  let text = 0;
  let image = 0;
  if (m?.promptTokensDetails?.length) {
    for (const d of m.promptTokensDetails) {
      if (d.modality === 'IMAGE') image += d.tokenCount ?? 0;
      else text += d.tokenCount ?? 0;
    }
  } else {
    text = input;
  }
  return { inputTokens: input, outputTokens: output, totalTokens: m?.totalTokenCount ?? input + output, textTokens: text, imageTokens: image };
}

function describeFailure(line: PredictionLine): ImageFailure {
  if (line.status) {
    const status = line.status.length > 500 ? `${line.status.slice(0, 500)}…` : line.status;
    const code = /\b([45]\d\d)\b/.exec(status);
    return { code: 'image_generation_failed', message: `Vertex AI: ${status}`, statusCode: code ? Number(code[1]) : 500 };
  }
  const feedback = line.response?.promptFeedback;
  if (feedback?.blockReason) {
    const detail = feedback.blockReasonMessage ? `: ${feedback.blockReasonMessage}` : '';
    return { code: 'content_blocked', message: `prompt blocked (${feedback.blockReason})${detail}`, statusCode: 400 };
  }
  const candidate = line.response?.candidates?.[0];
  const reason = candidate?.finishReason;
  if (reason && BLOCK_REASONS.has(reason)) {
    return { code: 'content_blocked', message: `image withheld by the safety system (${reason})`, statusCode: 400 };
  }
  const text = candidate?.content?.parts?.find((p) => typeof p.text === 'string' && !p.text.startsWith(PLACEHOLDER_PREFIX))?.text;
  const why = [reason && `finishReason ${reason}`, text && `model said: ${text.slice(0, 200)}`].filter(Boolean).join('; ');
  return { code: 'image_generation_failed', message: `no image in the response${why ? ` (${why})` : ''}`, statusCode: 500 };
}

// ---------------------------------------------------------------------------------------------
// Pass 2: lines in input order

/** A shard line with its predictions taken from the index. */
interface LinePlan {
  line: ShardLine;
  images: number[];
  failures: ImageFailure[];
}

function planLine(line: ShardLine, index: PredictionIndex): LinePlan {
  if (line.n > IMAGES_PER_LINE_KEY) throw new Error(`line ${line.lineIndex}: n = ${line.n} exceeds ${IMAGES_PER_LINE_KEY}`);
  const images: number[] = [];
  const failures: ImageFailure[] = [];
  for (let k = 0; k < line.n; k++) {
    const slot = index.take(line.lineIndex, k);
    if (slot === undefined) {
      failures.push({ code: 'missing_prediction', message: 'Vertex AI returned no prediction for this image (job cancelled, expired or failed)', statusCode: null });
    } else if (index.isImage(slot)) {
      images.push(slot);
    } else {
      failures.push(index.failure(slot));
    }
  }
  return { line, images, failures };
}

async function writeLines(opts: StitchOptions, index: PredictionIndex, handles: fsp.FileHandle[]): Promise<StitchCounts> {
  const counts: StitchCounts = {
    linesSucceeded: 0, linesPartial: 0, linesFailed: 0, imagesSucceeded: 0, imagesFailed: 0,
    predictionsIgnored: 0, predictionsDuplicate: 0,
  };
  const reader = new ImageReader(index, handles);
  const lines = opts.lines[Symbol.asyncIterator]();
  const nextPlan = async () => {
    const r = await lines.next();
    return r.done ? null : planLine(r.value, index);
  };
  // One line of lookahead, so the next line's first image is read while this line is written.
  let plan = await nextPlan();
  while (plan !== null) {
    const upcoming = await nextPlan();
    const { line, images, failures } = plan;
    const id = opts.newRequestId();
    counts.imagesSucceeded += images.length;
    counts.imagesFailed += failures.length;
    if (images.length > 0) await writeSuccessLine(opts.output, id, line.customId, images, index, reader, upcoming?.images[0]);
    else if (upcoming && upcoming.images.length > 0) reader.prefetch(upcoming.images[0]);
    if (failures.length === 0) {
      counts.linesSucceeded++;
    } else if (images.length > 0) {
      counts.linesPartial++;
      await write(opts.errorOutput, partialLine(id, line.customId, line.n, failures));
    } else {
      counts.linesFailed++;
      await write(opts.errorOutput, failedLine(id, line.customId, line.n, failures));
    }
    opts.onLine?.(line, images.length);
    plan = upcoming;
  }
  await reader.settle();
  return counts;
}

async function writeSuccessLine(
  out: Writable, id: string, customId: string, images: number[], index: PredictionIndex, reader: ImageReader,
  after: number | undefined,
): Promise<void> {
  const usage: LineUsage = { inputTokens: 0, outputTokens: 0, totalTokens: 0, textTokens: 0, imageTokens: 0 };
  let created = 0;
  for (const slot of images) {
    index.addUsage(slot, usage);
    created = Math.max(created, index.createdOf(slot));
  }
  if (created === 0) created = Math.floor(Date.now() / 1000);
  reader.prefetch(images[0]);
  await write(out, successLineHead(id, customId, created));
  for (let i = 0; i < images.length; i++) {
    if (i > 0) await write(out, IMAGE_SEPARATOR);
    const slot = images[i];
    const inline = index.inlineData(slot);
    if (inline !== undefined) {
      await write(out, inline);
      continue;
    }
    const whole = reader.take(slot);
    // Start reading the next image before this one is written: reading and writing overlap.
    const next = i + 1 < images.length ? images[i + 1] : after;
    if (next !== undefined) reader.prefetch(next);
    if (whole) await write(out, await whole);
    else await reader.copyInPieces(out, slot);
  }
  await write(out, successLineTail(usage));
}

/**
 * Reads images' base64 back from the predictions files, at most one read ahead of the writer
 * (so at most two images in memory). Images larger than READ_PIECE are copied in pieces instead.
 */
class ImageReader {
  private readonly index: PredictionIndex;
  private readonly handles: fsp.FileHandle[];
  private ahead: { slot: number; read: Promise<Buffer> } | null = null;

  constructor(index: PredictionIndex, handles: fsp.FileHandle[]) {
    this.index = index;
    this.handles = handles;
  }

  prefetch(slot: number): void {
    if (this.ahead?.slot === slot || this.index.inlineData(slot) !== undefined) return;
    const { file, start, length } = this.index.location(slot);
    if (length > READ_PIECE) return;
    // A read nobody takes (never expected) must not surface as an unhandled rejection.
    this.ahead?.read.catch(() => {});
    const read = readExactly(this.handles[file], start, length);
    read.catch(() => {});
    this.ahead = { slot, read };
  }

  /** The whole image if it is small enough to read at once, else null (use copyInPieces). */
  take(slot: number): Promise<Buffer> | null {
    if (this.ahead?.slot === slot) {
      const read = this.ahead.read;
      this.ahead = null;
      return read;
    }
    const { file, start, length } = this.index.location(slot);
    return length > READ_PIECE ? null : readExactly(this.handles[file], start, length);
  }

  /** Copy a large image's bytes as they are (no decoding), one piece at a time. */
  async copyInPieces(out: Writable, slot: number): Promise<void> {
    const { file, start, length } = this.index.location(slot);
    let position = start;
    let left = length;
    while (left > 0) {
      const buf = await readExactly(this.handles[file], position, Math.min(left, READ_PIECE));
      await write(out, buf);
      position += buf.length;
      left -= buf.length;
    }
  }

  /** Let a read still in flight finish before the file handles close. */
  async settle(): Promise<void> {
    await this.ahead?.read.catch(() => {});
    this.ahead = null;
  }
}

/** `length` bytes at `position`, into a fresh buffer (the stream may still hold the previous one). */
async function readExactly(fh: fsp.FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await fh.read(buf, filled, length - filled, position + filled);
    if (bytesRead === 0) throw new Error(`predictions file ends before offset ${position + filled}`);
    filled += bytesRead;
  }
  return buf;
}

/** Write with backpressure: wait for 'drain' when the stream's buffer is full. */
async function write(out: Writable, data: string | Buffer): Promise<void> {
  if (out.write(data)) return;
  await once(out, 'drain');
}
