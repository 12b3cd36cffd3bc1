import type { Readable, Writable } from 'node:stream';
import { writeWithBackpressure } from '../storage/streams.ts';
import { IMAGE_LABEL, LINE_LABEL } from '../vertex/translate.ts';
import { decodeJsonBase64, InvalidBase64Error } from './base64-decoder.ts';
import {
  failedLine,
  IMAGE_SEPARATOR,
  type ImageFailure,
  type LineUsage,
  linkedSuccessLine,
  partialLine,
  successLineHead,
  successLineTail,
} from './output-lines.ts';

/** One request of the shard, in input order. */
export interface ShardLine {
  lineIndex: number;
  customId: string;
  n: number;
  /** OpenAI's `response_format`: `url` stores the images (through `images`) and writes links; default `b64_json`. */
  responseFormat?: 'b64_json' | 'url';
}

/** A url-mode image to store, decoded. */
export interface ImageToStore {
  /** The output line's id (`batch_req_…`) and the image's index in its request. */
  requestId: string;
  img: number;
  /** As the prediction's `inlineData.mimeType` says. */
  mimeType: string;
  /** The image's bytes, in pieces, in order. */
  data: Buffer[];
  bytes: number;
}

/**
 * Starts storing an image and answers at once the absolute link it will be served at, with
 * `stored`, settled when the image is stored (or failed to be). The line is written meanwhile;
 * the stitch ends only once every image is stored.
 */
export type ImageSink = (image: ImageToStore) => { url: string; stored: Promise<void> };

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

/** How far out of order the predictions came: what waited in memory and what was read twice. */
export interface ReorderStats {
  /** Most image bytes (base64) held in memory at once while their line waited for its turn. */
  peakBufferedBytes: number;
  /** Images dropped from the full reorder buffer and read again by range from their predictions file, and their bytes. */
  rereadImages: number;
  rereadBytes: number;
}

/** Bytes `start` to `end` of a predictions file, both inclusive (as Cloud Storage and fs read streams take them). */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * Opens a predictions file: all of it without an argument, or exactly the given byte range of it.
 * Honouring the range is part of the contract: images dropped from the reorder buffer are read
 * again that way, and a range that reads back at another length fails the stitch.
 */
export type PredictionFile = (range?: ByteRange) => Readable;

export interface StitchOptions {
  /** Read only as far ahead as the predictions need (all of it when they come out of order). */
  lines: AsyncIterable<ShardLine>;
  /**
   * Every predictions file of the shard (e.g. GCS read streams); each is read whole once, all of
   * them at the same time. An image that arrives too far ahead of its turn is read again by range
   * when its turn comes.
   */
  predictionFiles: PredictionFile[];
  /** Successes and partial successes. Not ended here: the caller ends it. */
  output: Writable;
  /** Failures and the shortfall of partial lines. Not ended here: the caller ends it. */
  errorOutput: Writable;
  newRequestId(): string;
  /** Told each line's outcome, in order (e.g. to bill successful images by size tier). */
  onLine?(line: ShardLine, imagesSucceeded: number): void;
  /** Image bytes that may wait in memory for their line's turn before being dropped (to read again). Default 32 MiB. */
  reorderBufferBytes?: number;
  /** Told at the end how much reordering it took (for tests and benchmarks). */
  onReorderStats?(stats: ReorderStats): void;
  /** Where the images of url-mode lines go; needed only when a line asks for links. */
  images?: ImageSink;
}

/** finishReason / blockReason values that mean the safety system withheld the image. */
const BLOCK_REASONS = new Set([
  'SAFETY',
  'BLOCKLIST',
  'PROHIBITED_CONTENT',
  'SPII',
  'IMAGE_SAFETY',
  'IMAGE_PROHIBITED_CONTENT',
  'MODEL_ARMOR',
  'JAILBREAK',
  'RECITATION',
  'IMAGE_RECITATION',
]);

const DEFAULT_REORDER_BUFFER = 32 * 1024 * 1024;
/** Image bytes handed to `output` ahead of what it has taken: enough for reading and writing to overlap. */
const OUTPUT_AHEAD = 16 * 1024 * 1024;
/**
 * Dropped images read again ahead of their turn: at most this many reads in flight, so that the
 * latency of a remote store overlaps with writing, and at most this many bytes read and not yet
 * written (beyond that, one image at a time: the next one needed).
 */
const READS_IN_FLIGHT = 4;
const READ_AHEAD_BYTES = 16 * 1024 * 1024;
/**
 * Url-mode images being stored at once: enough for the latency of a remote store to overlap with
 * reading and writing, few and small enough that their decoded bytes (held until stored) stay
 * bounded whatever the image size (beyond the bytes, one at a time).
 */
const UPLOADS_IN_FLIGHT = 4;
const UPLOAD_BYTES_IN_FLIGHT = 32 * 1024 * 1024;
/** An image waiting in memory may keep this much of its input chunks alive beyond its own bytes, per piece. */
const CHUNK_SLACK = 64 * 1024;
/**
 * Predictions that may wait in pending lines, whatever their bytes: failures and small images
 * hardly count against the reorder buffer, yet each holds an object of its own. A line with a
 * failed image waits for a retry's success; past this many, such lines are written as they are
 * (as when the reorder buffer is full), or every line after a failure would wait to the end.
 */
const MAX_HELD_PREDICTIONS = 10_000;
/** JSON strings longer than this are kept as the stream's own chunks, never parsed or copied. */
const SHORT_STRING = 256;
/** `n` is at most 10: (line, image) → one number key. */
const IMAGES_PER_LINE_KEY = 16;

/**
 * Stitch a shard's predictions into output and error lines in input order, one line per request.
 *
 * One pass over the predictions streams, read side by side. A scanner splits each stream into
 * prediction lines and parses each with its long strings (the ~1 MB base64 images) cut out and
 * kept as the stream's own chunks, so no image is ever decoded, copied into a JS string, or
 * written to disk when it arrives in time. Vertex mostly writes a line's predictions together and in input order, so the
 * next output line is usually complete within a few predictions: it is written at once, its
 * image bytes going straight from the input chunks to `output`. Predictions that arrive ahead of
 * their turn wait in a reorder buffer (`reorderBufferBytes` of image bytes); past that they are
 * dropped, remembering where their base64 is in its predictions file, and that byte range is
 * read again shortly before their line's turn (a few reads in flight, see READS_IN_FLIGHT), so
 * nothing goes to local disk. After the last file, the remaining lines are written in order (a
 * never-answered image is a `missing_prediction`).
 *
 * A retried request may fail once and succeed later; the success wins. So a line with a failed
 * image is not written as soon as it is complete but only when the reorder buffer is full, when
 * MAX_HELD_PREDICTIONS wait, or when the input ends: a success that comes later still than that
 * is counted as a duplicate.
 *
 * A url-mode line (`responseFormat: 'url'`) is written with links instead: each image is decoded
 * piece by piece, handed to `images` (which stores it and answers its link at once) and the
 * short line written in turn, while up to UPLOADS_IN_FLIGHT images are still being stored. The
 * stitch resolves only once every image is stored; an image that is not valid base64 counts as
 * failed (never stored as wrong bytes).
 *
 * Memory: the reorder buffer, the prediction being scanned, up to OUTPUT_AHEAD of lines that
 * `output` has not taken yet, the small records of the lines read so far and of the predictions
 * waiting in them (at most MAX_HELD_PREDICTIONS when they come in order), READ_AHEAD_BYTES of
 * images read again (or one image, if bigger), and the decoded bytes of the images being stored
 * (UPLOAD_BYTES_IN_FLIGHT, or one image, if bigger).
 */
export async function stitchShard(opts: StitchOptions): Promise<StitchCounts> {
  const reads = new ReadAhead(opts.predictionFiles);
  const uploads = new Uploads();
  const stitcher = new Stitcher(opts, reads, uploads);
  try {
    await stitcher.readAllPredictions();
    await stitcher.finish();
    opts.onReorderStats?.(stitcher.stats);
    return stitcher.counts;
  } finally {
    reads.close();
    // Also when stitching failed: no upload may still be writing once the caller moves on.
    await uploads.settled();
  }
}

// ---------------------------------------------------------------------------------------------
// Reordering

/** One answered (line, image): a failure, or an image inline, in memory, or dropped to be read again. */
interface Prediction {
  lineIndex: number;
  img: number;
  failure: ImageFailure | null;
  /** A short image, re-escaped for a JSON string; else null. */
  inline: string | null;
  /** The image's base64 as the input's chunks (never copied); null once dropped. */
  pieces: Buffer[] | null;
  /** The image's `inlineData.mimeType`. */
  mimeType: string;
  /** Bytes of the base64. */
  length: number;
  /** Where the base64 is: predictions file (index in `predictionFiles`) and byte offset in it. */
  file: number;
  at: number;
  /** Dropped from memory, to be read again by range from its predictions file. */
  dropped: boolean;
  /** The dropped image being read again ahead of its turn. */
  reading: Promise<Buffer[]> | null;
  created: number;
  usage: LineUsage;
}

/** A line read from `opts.lines` and not written yet, with the predictions answered so far. */
interface PendingLine {
  line: ShardLine;
  images: Array<Prediction | undefined>;
  /** Distinct images answered, and how many of those failed. */
  known: number;
  failed: number;
}

class Stitcher {
  readonly counts: StitchCounts = {
    linesSucceeded: 0,
    linesPartial: 0,
    linesFailed: 0,
    imagesSucceeded: 0,
    imagesFailed: 0,
    predictionsIgnored: 0,
    predictionsDuplicate: 0,
  };
  readonly stats: ReorderStats = { peakBufferedBytes: 0, rereadImages: 0, rereadBytes: 0 };
  private readonly opts: StitchOptions;
  private readonly budget: number;
  private readonly reads: ReadAhead;
  private readonly uploads: Uploads;
  /** No prediction comes any more: every line is complete as it is. */
  private finishing = false;
  /** The placing under way (files are read at once, their predictions placed one chunk at a time). */
  private placing: Promise<void> = Promise.resolve();
  /** The line whose dropped images are being read ahead, the ordinal after it, and the next image to look at. */
  private readAheadLine: PendingLine | null = null;
  private readAheadOrdinal = 0;
  private readAheadImg = 0;
  private readonly source: AsyncIterator<ShardLine>;
  private sourceDone = false;
  /** Lines read so far, by lineIndex: ordinals 0, 1, … in input order; those below `cursor` are written. */
  private readonly slots = new Map<number, { ordinal: number; n: number }>();
  private readonly pending = new Map<number, PendingLine>();
  private linesRead = 0;
  private cursor = 0;
  /** Image bytes held in memory by pending lines. */
  private buffered = 0;
  /** Predictions held by pending lines, whatever their size (see MAX_HELD_PREDICTIONS). */
  private held = 0;
  /** Labels that match no (line, image) of the shard: seen once (ignored), again (duplicate). */
  private readonly strangers = new Set<number>();
  /** Success lines handed to `output` that it has not taken yet, oldest first (see writeSuccessLine). */
  private readonly untaken = new Untaken();

  constructor(opts: StitchOptions, reads: ReadAhead, uploads: Uploads) {
    this.opts = opts;
    this.budget = opts.reorderBufferBytes ?? DEFAULT_REORDER_BUFFER;
    this.reads = reads;
    this.uploads = uploads;
    reads.onRoom = () => this.readAhead();
    this.source = opts.lines[Symbol.asyncIterator]();
  }

  /**
   * Every predictions file, all read at once: reading a stream goes a chunk at a time, so files
   * read side by side keep more reads under way (a shard's output may be several files). Their
   * predictions are placed one file's chunk at a time, never two at once: placing writes lines.
   * The first failure stops the other files too.
   */
  async readAllPredictions(): Promise<void> {
    const streams = this.opts.predictionFiles.map((open) => open());
    let failure: { error: unknown } | null = null;
    await Promise.all(
      streams.map((stream, file) =>
        this.readPredictions(file, stream).catch((error: unknown) => {
          if (failure) return;
          failure = { error };
          for (const other of streams) other.destroy();
        }),
      ),
    );
    if (failure) throw (failure as { error: unknown }).error;
  }

  /** Scan one predictions file, placing each prediction as soon as its line has been read. */
  private async readPredictions(file: number, stream: Readable): Promise<void> {
    const scanner = new PredictionScanner(file);
    for await (const chunk of stream) {
      scanner.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
      await this.placeInTurn(scanner);
    }
    scanner.end();
    await this.placeInTurn(scanner);
  }

  /** Places what a scanner has found once every placing asked for before has ended. */
  private placeInTurn(scanner: PredictionScanner): Promise<void> {
    const turn = this.placing.then(() => this.placeAll(scanner));
    this.placing = turn.catch(() => {}); // the failure is the reader's to report
    return turn;
  }

  private async placeAll(scanner: PredictionScanner): Promise<void> {
    this.counts.predictionsIgnored += scanner.takeUnreadable();
    for (const p of scanner.takeScanned()) await this.place(p);
  }

  private async place(p: Prediction): Promise<void> {
    const slot = await this.slotOf(p.lineIndex);
    if (slot === undefined || p.img >= slot.n) {
      this.placeStranger(p);
      return;
    }
    if (slot.ordinal < this.cursor) {
      this.counts.predictionsDuplicate++; // its line is written: every image was answered before
      return;
    }
    const line = this.pending.get(slot.ordinal)!;
    const previous = line.images[p.img];
    if (previous !== undefined) {
      this.counts.predictionsDuplicate++;
      if (previous.failure === null || p.failure !== null) return;
      line.failed--; // a retry's success replaces the failure
    } else {
      line.known++;
      this.held++;
    }
    if (p.failure !== null) line.failed++;
    line.images[p.img] = p;
    this.buffered += bufferedBytes(p);
    await this.writeReadyLines(false);
    if (this.buffered > this.budget || this.held > MAX_HELD_PREDICTIONS) await this.writeReadyLines(true);
    if (slot.ordinal >= this.cursor && p.pieces !== null) {
      if (this.buffered > this.budget) this.drop(p);
      else p.pieces = ownBytes(p.pieces);
    }
    this.stats.peakBufferedBytes = Math.max(this.stats.peakBufferedBytes, this.buffered);
    this.readAhead(); // p may have completed the lines up to the next one to be written
  }

  private placeStranger(p: Prediction): void {
    const key = p.lineIndex * IMAGES_PER_LINE_KEY + p.img;
    if (this.strangers.has(key)) {
      this.counts.predictionsDuplicate++;
    } else {
      this.strangers.add(key);
      this.counts.predictionsIgnored++;
    }
  }

  /** Where a line is, reading lines ahead until it comes; undefined if the shard has no such line. */
  private async slotOf(lineIndex: number): Promise<{ ordinal: number; n: number } | undefined> {
    let slot = this.slots.get(lineIndex);
    while (slot === undefined && (await this.readLine(true))) slot = this.slots.get(lineIndex);
    return slot;
  }

  /** The next line of `opts.lines`, pending; `findable` when predictions may still look it up. */
  private async readLine(findable: boolean): Promise<PendingLine | null> {
    if (this.sourceDone) return null;
    const r = await this.source.next();
    if (r.done) {
      this.sourceDone = true;
      return null;
    }
    const line = r.value;
    if (line.n > IMAGES_PER_LINE_KEY)
      throw new Error(`line ${line.lineIndex}: n = ${line.n} exceeds ${IMAGES_PER_LINE_KEY}`);
    const pendingLine: PendingLine = { line, images: new Array<Prediction | undefined>(line.n), known: 0, failed: 0 };
    if (findable) this.slots.set(line.lineIndex, { ordinal: this.linesRead, n: line.n });
    this.pending.set(this.linesRead++, pendingLine);
    return pendingLine;
  }

  /**
   * Write the lines at the cursor whose images are all answered. A line with a failed image
   * waits for a retry's success unless `force` (the reorder buffer is full).
   */
  private async writeReadyLines(force: boolean): Promise<void> {
    for (;;) {
      const line = this.pending.get(this.cursor);
      if (line === undefined || line.known < line.line.n || (line.failed > 0 && !force)) return;
      this.readAhead(); // this line's dropped images, and those of the complete lines after it
      this.pending.delete(this.cursor++);
      await this.writeLine(line);
    }
  }

  /** Free the memory of an image that waits: it is read again by range from its predictions file when its turn comes. */
  private drop(p: Prediction): void {
    this.buffered -= p.length;
    p.pieces = null;
    p.dropped = true;
    this.stats.rereadImages++;
    this.stats.rereadBytes += p.length;
  }

  /**
   * Start reading dropped images again, in output order, as far as ReadAhead has room: from the
   * line at the cursor on, through the lines that are complete (so will be written next, and no
   * image of theirs can still change; at the end, every line). An image this misses (dropped
   * after its line was passed) is read when it is written.
   */
  private readAhead(): void {
    for (;;) {
      if (this.readAheadLine === null) {
        const ordinal = Math.max(this.readAheadOrdinal, this.cursor);
        const line = this.pending.get(ordinal);
        if (line === undefined || (!this.finishing && line.known < line.line.n)) return;
        this.readAheadLine = line;
        this.readAheadOrdinal = ordinal + 1;
        this.readAheadImg = 0;
      }
      const { images } = this.readAheadLine;
      for (; this.readAheadImg < images.length; this.readAheadImg++) {
        const p = images[this.readAheadImg];
        if (p === undefined || !p.dropped || p.reading !== null) continue;
        if (!this.reads.hasRoom(p.length)) return;
        this.reads.start(p);
      }
      this.readAheadLine = null;
    }
  }

  /**
   * After the last predictions file: every line not written yet, in order (unanswered images
   * are missing), then the lines never read.
   */
  async finish(): Promise<void> {
    this.slots.clear(); // no prediction comes any more: only the lines themselves are needed
    this.finishing = true;
    this.readAhead();
    for (let line = await this.takeNextLine(); line !== null; line = await this.takeNextLine())
      await this.writeLine(line);
    await this.untaken.allTaken();
    await this.uploads.finish();
  }

  private async takeNextLine(): Promise<PendingLine | null> {
    if (this.cursor === this.linesRead && (await this.readLine(false)) === null) return null;
    const line = this.pending.get(this.cursor)!;
    this.pending.delete(this.cursor++);
    return line;
  }

  private async writeLine(pendingLine: PendingLine): Promise<void> {
    const { line } = pendingLine;
    this.held -= pendingLine.known;
    const id = this.opts.newRequestId();
    const linked = line.responseFormat === 'url';
    const images: Prediction[] = [];
    const urls: string[] = [];
    const failures: ImageFailure[] = [];
    for (const p of pendingLine.images) {
      if (p === undefined) {
        failures.push(MISSING);
      } else if (p.failure !== null) {
        failures.push(p.failure);
      } else if (!linked) {
        images.push(p);
      } else {
        const url = await this.storeImage(id, p);
        if (url === null) {
          failures.push(UNDECODABLE);
        } else {
          images.push(p);
          urls.push(url);
        }
      }
    }
    this.counts.imagesSucceeded += images.length;
    this.counts.imagesFailed += failures.length;
    if (images.length > 0) await this.writeSuccessLine(id, line.customId, images, linked ? urls : null);
    if (failures.length === 0) {
      this.counts.linesSucceeded++;
    } else if (images.length > 0) {
      this.counts.linesPartial++;
      await writeWithBackpressure(this.opts.errorOutput, partialLine(id, line.customId, line.n, failures));
    } else {
      this.counts.linesFailed++;
      await writeWithBackpressure(this.opts.errorOutput, failedLine(id, line.customId, line.n, failures));
    }
    this.opts.onLine?.(line, images.length);
  }

  /**
   * The line's bytes are handed to `output` without waiting in between: they are in memory
   * already, so its buffer holds nothing more than we do. Then we wait only until it has taken
   * all but the last OUTPUT_AHEAD bytes (at least the previous line): while it writes those,
   * the input is read on. Waiting for 'drain' instead stops reading during every write.
   */
  private async writeSuccessLine(
    id: string,
    customId: string,
    images: Prediction[],
    urls: string[] | null,
  ): Promise<void> {
    const out = this.opts.output;
    const usage: LineUsage = { inputTokens: 0, outputTokens: 0, totalTokens: 0, textTokens: 0, imageTokens: 0 };
    let created = 0;
    for (const p of images) {
      addUsage(usage, p.usage);
      created = Math.max(created, p.created);
    }
    if (created === 0) created = Math.floor(Date.now() / 1000);
    let last: string;
    let bytes = 0;
    if (urls !== null) {
      last = linkedSuccessLine(id, customId, created, urls, usage);
    } else if (images.every((p) => p.inline !== null)) {
      // Small images (a scale run's): the whole line in one write.
      last = successLineHead(id, customId, created);
      for (let i = 0; i < images.length; i++) {
        this.buffered -= bufferedBytes(images[i]);
        last += i > 0 ? IMAGE_SEPARATOR + images[i].inline : images[i].inline;
      }
      last += successLineTail(usage);
    } else {
      out.write(successLineHead(id, customId, created));
      for (let i = 0; i < images.length; i++) {
        if (i > 0) out.write(IMAGE_SEPARATOR);
        await this.writeImage(images[i]);
        bytes += images[i].length;
      }
      last = successLineTail(usage);
    }
    bytes += last.length;
    out.write(last, this.untaken.add(bytes));
    while (this.untaken.bytes > OUTPUT_AHEAD && this.untaken.count > 1) await this.untaken.change();
  }

  private async writeImage(p: Prediction): Promise<void> {
    const out = this.opts.output;
    this.buffered -= bufferedBytes(p);
    if (p.inline !== null) {
      out.write(p.inline);
    } else if (p.pieces !== null) {
      for (const piece of p.pieces) out.write(piece);
    } else {
      for (const piece of await this.reads.take(p)) out.write(piece);
    }
  }

  /**
   * Decode a url-mode image and start storing it (once an upload slot is free); its link, or
   * null when the prediction's base64 is not valid (the image then counts as failed).
   */
  private async storeImage(requestId: string, p: Prediction): Promise<string | null> {
    const sink = this.opts.images;
    if (sink === undefined) throw new Error('a url-mode line needs an image sink (StitchOptions.images)');
    // Waiting first bounds the decoded images in memory; base64 is 4 characters for 3 bytes.
    const expected = Math.floor((p.inline?.length ?? p.length) * 0.75);
    await this.uploads.room(expected);
    this.buffered -= bufferedBytes(p);
    // `inline` is the image re-escaped for JSON; as UTF-8, anything not ASCII stays not base64.
    const base64 = p.inline !== null ? [Buffer.from(p.inline)] : (p.pieces ?? (await this.reads.take(p)));
    p.pieces = null;
    // Told the length, the decoder fills one buffer per image: one allocation, not one per chunk.
    const length = base64.reduce((sum, piece) => sum + piece.length, 0);
    let data: Buffer[];
    try {
      data = decodeJsonBase64(base64, length);
    } catch (err) {
      if (err instanceof InvalidBase64Error) return null;
      throw err;
    }
    const bytes = data.reduce((sum, piece) => sum + piece.length, 0);
    const { url, stored } = sink({ requestId, img: p.img, mimeType: p.mimeType, data, bytes });
    this.uploads.add(stored, bytes);
    return url;
  }
}

/**
 * The success lines handed to `output` and not taken yet: their sizes, oldest first. `output`
 * calls back its writes in order, so one callback for all and a queue of sizes tell how far it
 * is (a promise per line would cost more than a short line). A failed write fails the stitch.
 */
class Untaken {
  bytes = 0;
  private sizes: number[] = [];
  private head = 0;
  private failure: Error | null = null;
  private waiter: (() => void) | null = null;

  get count(): number {
    return this.sizes.length - this.head;
  }

  /** Counts a line's bytes; answers the callback of its last write. */
  add(bytes: number): (err?: Error | null) => void {
    this.sizes.push(bytes);
    this.bytes += bytes;
    return this.taken;
  }

  /** Resolves once a line was taken (or a write failed: then it throws). */
  async change(): Promise<void> {
    this.rethrow();
    await new Promise<void>((resolve) => {
      this.waiter = resolve;
    });
    this.rethrow();
  }

  async allTaken(): Promise<void> {
    while (this.count > 0) await this.change();
    this.rethrow();
  }

  private readonly taken = (err?: Error | null) => {
    if (err) {
      this.failure ??= err;
    } else if (this.count > 0) {
      this.bytes -= this.sizes[this.head++];
      // Drop the taken sizes now and then, not at every line.
      if (this.head > 1024 && this.head * 2 > this.sizes.length) {
        this.sizes = this.sizes.slice(this.head);
        this.head = 0;
      }
    }
    const wake = this.waiter;
    this.waiter = null;
    wake?.();
  };

  private rethrow(): void {
    if (this.failure !== null) throw this.failure;
  }
}

/**
 * The url-mode images being stored: at most UPLOADS_IN_FLIGHT at once and UPLOAD_BYTES_IN_FLIGHT
 * of them. The first failure fails the stitch (at the next image, or at the end).
 */
class Uploads {
  private readonly inFlight = new Set<Promise<void>>();
  private bytes = 0;
  private failure: { error: unknown } | null = null;

  add(stored: Promise<void>, bytes: number): void {
    this.bytes += bytes;
    const done = () => {
      this.inFlight.delete(tracked);
      this.bytes -= bytes;
    };
    const tracked: Promise<void> = stored.then(done, (error: unknown) => {
      done();
      this.failure ??= { error };
    });
    this.inFlight.add(tracked);
  }

  /** Resolves once an image of about `bytes` may start; always room for one, however big. */
  async room(bytes: number): Promise<void> {
    while (
      this.inFlight.size >= UPLOADS_IN_FLIGHT ||
      (this.inFlight.size > 0 && this.bytes + bytes > UPLOAD_BYTES_IN_FLIGHT)
    ) {
      await Promise.race(this.inFlight);
    }
    this.rethrow();
  }

  /** Every image stored; throws the first failure. */
  async finish(): Promise<void> {
    await this.settled();
    this.rethrow();
  }

  /** Every upload over, stored or failed (tracked promises never reject). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  private rethrow(): void {
    if (this.failure !== null) throw this.failure.error;
  }
}

const MISSING: ImageFailure = {
  code: 'missing_prediction',
  message: 'Vertex AI returned no prediction for this image (job cancelled, expired or failed)',
  statusCode: null,
};

const UNDECODABLE: ImageFailure = {
  code: 'image_generation_failed',
  message: 'Vertex AI returned image data that is not valid base64',
  statusCode: 500,
};

/**
 * The pieces of an image, copied where a piece is a small part of a big chunk: an image that
 * waits must keep only its own bytes alive, whatever chunk size the input stream uses.
 */
function ownBytes(pieces: Buffer[]): Buffer[] {
  return pieces.map((piece) => (piece.buffer.byteLength - piece.length > CHUNK_SLACK ? Buffer.from(piece) : piece));
}

/** What an answered image adds to the reorder buffer while it waits in memory. */
function bufferedBytes(p: Prediction): number {
  if (p.pieces !== null) return p.length;
  return p.inline?.length ?? 0;
}

function addUsage(sum: LineUsage, u: LineUsage): void {
  sum.inputTokens += u.inputTokens;
  sum.outputTokens += u.outputTokens;
  sum.totalTokens += u.totalTokens;
  sum.textTokens += u.textTokens;
  sum.imageTokens += u.imageTokens;
}

/**
 * Reads dropped images again by range from their predictions file. Reads are started ahead of
 * their turn while there is room (READS_IN_FLIGHT, READ_AHEAD_BYTES) and taken in output order;
 * `onRoom` is told when a read ends, so more can start.
 */
class ReadAhead {
  onRoom: () => void = () => {};
  private readonly files: PredictionFile[];
  private inFlight = 0;
  /** Bytes of the reads started and not taken yet. */
  private bytes = 0;
  private readonly open = new Set<Readable>();

  constructor(files: PredictionFile[]) {
    this.files = files;
  }

  /** Always room for one image, however big: the next one to be written may be waiting for it. */
  hasRoom(length: number): boolean {
    return this.inFlight < READS_IN_FLIGHT && (this.bytes === 0 || this.bytes + length <= READ_AHEAD_BYTES);
  }

  start(p: Prediction): void {
    this.inFlight++;
    this.bytes += p.length;
    p.reading = this.readRange(p);
    // Taken when the line is written; until then a failure must not count as unhandled.
    p.reading.catch(() => {});
    p.reading
      .finally(() => {
        this.inFlight--;
        this.onRoom();
      })
      .catch(() => {});
  }

  /** The image's bytes, read ahead or now: the next to be written must not wait for room. */
  async take(p: Prediction): Promise<Buffer[]> {
    if (p.reading === null) this.start(p);
    try {
      return await p.reading!;
    } finally {
      this.bytes -= p.length;
      p.reading = null;
      p.dropped = false;
    }
  }

  /** Stop the reads still going (stitching failed): nothing takes them any more. */
  close(): void {
    for (const stream of this.open) stream.destroy();
  }

  private async readRange(p: Prediction): Promise<Buffer[]> {
    const stream = this.files[p.file]({ start: p.at, end: p.at + p.length - 1 });
    this.open.add(stream);
    try {
      const pieces: Buffer[] = [];
      let got = 0;
      for await (const chunk of stream) {
        const piece = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
        pieces.push(piece);
        got += piece.length;
      }
      // The object changed under us, or the store ignored the range: never write wrong bytes.
      if (got !== p.length)
        throw new Error(`predictions file ${p.file}: range ${p.at}+${p.length} read back as ${got} bytes`);
      return pieces;
    } finally {
      this.open.delete(stream);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Scanning a predictions stream

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
/** Stands in for a long string in the parsed skeleton of a line: "\u0000" + its number. */
const PLACEHOLDER_PREFIX = '\u0000';
const QUOTE_BUFFER = Buffer.from('"');
/** What an image is when its prediction does not say (Gemini's default output). */
const DEFAULT_MIME_TYPE = 'image/png';

/** A long string of the current line: its bytes as subarrays of the input chunks, and where it starts in the stream. */
interface LongString {
  pieces: Buffer[];
  length: number;
  at: number;
}

/**
 * Splits a predictions stream into lines and reduces each to a small JSON skeleton: strings
 * longer than SHORT_STRING (the base64 images, long prompts) are replaced by placeholders and
 * kept aside as subarrays of the chunks — not copies: a Readable hands its chunks over, nothing
 * writes to them again. Strings are skipped with Buffer.indexOf (native memchr), so the JS loop
 * only visits the few structural bytes between strings.
 */
class PredictionScanner {
  private readonly file: number;
  /** Stream bytes before the current chunk. */
  private offset = 0;
  private scanned: Prediction[] = [];
  private unreadable = 0;
  private inString = false;
  private skeleton: Buffer[] = [];
  private skeletonLength = 0;
  private longStrings: LongString[] = [];
  private stringPieces: Buffer[] = [];
  private stringLength = 0;
  private stringAt = 0;
  private trailingBackslashes = 0; // of the current string at the end of the previous chunk

  constructor(file: number) {
    this.file = file;
  }

  push(chunk: Buffer): void {
    const len = chunk.length;
    const base = this.offset;
    this.offset += len;
    let pos = 0;
    // Where the part of this chunk not added to the skeleton yet starts: a line is added in a
    // few big pieces (cut at its long strings and at chunk ends), not one per string.
    let seg = 0;
    while (pos < len) {
      if (this.inString) {
        // The string opened in an earlier chunk: its pieces are kept until it is known to be short or long.
        const q = this.closingQuote(chunk, pos);
        this.addString(chunk, pos, q === -1 ? len : q);
        if (q === -1) return;
        this.finishString();
        pos = seg = q + 1;
        continue;
      }
      let i = pos;
      while (i < len) {
        const c = chunk[i];
        if (c === QUOTE || c === NEWLINE) break;
        i++;
      }
      if (i === len) break;
      if (chunk[i] === NEWLINE) {
        this.addSegment(chunk, seg, i);
        this.endLine();
        pos = seg = i + 1;
        continue;
      }
      const start = i + 1;
      this.trailingBackslashes = 0;
      const q = this.closingQuote(chunk, start);
      if (q !== -1 && q - start <= SHORT_STRING) {
        pos = q + 1; // a short string stays in the segment
        continue;
      }
      // A long string, or one that goes on in the next chunk: the segment ends before its quote.
      this.addSegment(chunk, seg, i);
      this.inString = true;
      this.stringPieces = [];
      this.stringLength = 0;
      this.stringAt = base + start;
      this.addString(chunk, start, q === -1 ? len : q);
      if (q === -1) return;
      this.finishString();
      pos = seg = q + 1;
    }
    this.addSegment(chunk, seg, len);
  }

  end(): void {
    if (this.inString) {
      // Truncated last line: nothing usable.
      this.inString = false;
      this.unreadable++;
      this.resetLine();
    } else if (this.skeletonLength > 0) {
      this.endLine();
    }
  }

  /** The predictions of the lines completed since the last call, in stream order. */
  takeScanned(): Prediction[] {
    const scanned = this.scanned;
    this.scanned = [];
    return scanned;
  }

  /** How many lines since the last call could not be read as a labelled prediction. */
  takeUnreadable(): number {
    const count = this.unreadable;
    this.unreadable = 0;
    return count;
  }

  /**
   * The closing quote of the current string from `pos` on, or -1 when it goes on in the next
   * chunk (then the backslashes this chunk ends with are carried over, to tell whether a quote
   * at the start of the next one is escaped).
   */
  private closingQuote(chunk: Buffer, pos: number): number {
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
      let run = 0;
      while (run < len - from && chunk[len - 1 - run] === BACKSLASH) run++;
      this.trailingBackslashes = run === len - from ? carried + run : run;
    }
    return q;
  }

  private addSegment(chunk: Buffer, start: number, end: number): void {
    if (end > start) this.addSkeleton(start === 0 && end === chunk.length ? chunk : chunk.subarray(start, end));
  }

  private addString(chunk: Buffer, start: number, end: number): void {
    if (end <= start) return;
    this.stringPieces.push(chunk.subarray(start, end));
    this.stringLength += end - start;
  }

  private finishString(): void {
    this.inString = false;
    if (this.stringLength <= SHORT_STRING) {
      this.addSkeleton(QUOTE_BUFFER);
      for (const p of this.stringPieces) this.addSkeleton(p);
      this.addSkeleton(QUOTE_BUFFER);
    } else {
      this.addSkeleton(Buffer.from(`"\\u0000${this.longStrings.length}"`));
      this.longStrings.push({ pieces: this.stringPieces, length: this.stringLength, at: this.stringAt });
    }
    this.stringPieces = [];
  }

  private addSkeleton(piece: Buffer): void {
    this.skeleton.push(piece);
    this.skeletonLength += piece.length;
  }

  private endLine(): void {
    const skeleton = this.skeleton;
    const text = (skeleton.length === 1 ? skeleton[0] : Buffer.concat(skeleton, this.skeletonLength)).toString('utf8');
    const longStrings = this.longStrings;
    this.resetLine();
    if (!/\S/.test(text)) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.unreadable++;
      return;
    }
    const p = readPrediction(parsed, longStrings, this.file);
    if (p === null) this.unreadable++;
    else this.scanned.push(p);
  }

  private resetLine(): void {
    this.skeleton = [];
    this.skeletonLength = 0;
    this.longStrings = [];
  }
}

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

function readPrediction(parsed: unknown, longStrings: LongString[], file: number): Prediction | null {
  if (typeof parsed !== 'object' || parsed === null) return null;
  const line = parsed as PredictionLine;
  const labels = line.request?.labels;
  const lineIndex = toIndex(labels?.[LINE_LABEL]);
  const img = toIndex(labels?.[IMAGE_LABEL]);
  if (lineIndex === null || img === null || img >= IMAGES_PER_LINE_KEY) return null;
  const prediction: Prediction = {
    lineIndex,
    img,
    failure: null,
    inline: null,
    pieces: null,
    mimeType: DEFAULT_MIME_TYPE,
    length: 0,
    file,
    at: -1,
    dropped: false,
    reading: null,
    created: toUnixSeconds(line.processed_time),
    usage: readUsage(line),
  };
  const found = line.status ? undefined : findImage(line);
  const image = found?.data;
  if (found?.mimeType) prediction.mimeType = found.mimeType;
  if (image === undefined) {
    prediction.failure = describeFailure(line);
  } else if (image.startsWith(PLACEHOLDER_PREFIX)) {
    const { pieces, length, at } = longStrings[Number(image.slice(1))];
    prediction.pieces = pieces;
    prediction.length = length;
    prediction.at = at;
  } else {
    // Short enough to keep; re-escaped for the output's JSON string (base64 needs none).
    prediction.inline = JSON.stringify(image).slice(1, -1);
  }
  return prediction;
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
function findImage(line: PredictionLine): { data: string; mimeType: string | null } | undefined {
  for (const c of line.response?.candidates ?? []) {
    for (const part of c.content?.parts ?? []) {
      const data = part.inlineData?.data;
      const mimeType = part.inlineData?.mimeType;
      // A long mimeType would be a placeholder of the skeleton: only a short one is real.
      const type = typeof mimeType === 'string' && !mimeType.startsWith(PLACEHOLDER_PREFIX) ? mimeType : null;
      if (typeof data === 'string' && data.length > 0) return { data, mimeType: type };
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
  return {
    inputTokens: input,
    outputTokens: output,
    totalTokens: m?.totalTokenCount ?? input + output,
    textTokens: text,
    imageTokens: image,
  };
}

function describeFailure(line: PredictionLine): ImageFailure {
  if (line.status) {
    const status = line.status.length > 500 ? `${line.status.slice(0, 500)}…` : line.status;
    const code = /\b([45]\d\d)\b/.exec(status);
    return {
      code: 'image_generation_failed',
      message: `Vertex AI: ${status}`,
      statusCode: code ? Number(code[1]) : 500,
    };
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
  const text = candidate?.content?.parts?.find(
    (p) => typeof p.text === 'string' && !p.text.startsWith(PLACEHOLDER_PREFIX),
  )?.text;
  const why = [reason && `finishReason ${reason}`, text && `model said: ${text.slice(0, 200)}`]
    .filter(Boolean)
    .join('; ');
  return {
    code: 'image_generation_failed',
    message: `no image in the response${why ? ` (${why})` : ''}`,
    statusCode: 500,
  };
}
