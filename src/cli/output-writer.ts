import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { IMAGE_EXTENSIONS } from '../storage/object-keys.ts';
import { finish, writeWithBackpressure } from '../storage/streams.ts';
import type { Batch, GatewayClient } from './api-client.ts';
import { CliError, EXIT } from './cli-error.ts';

export interface DownloadSummary {
  dir: string;
  /** Lines of the output file (each with at least one image). */
  lines: number;
  images: number;
  /** Lines copied to errors.jsonl: the error file's lines (failed and partial) and any failed output line. */
  errorLines: number;
}

/**
 * Writes a finished batch's results into `dir`: every image as `<custom_id>_<index>.<ext>` and
 * every failure line into `errors.jsonl` (always created, empty when nothing failed).
 *
 * Both files are streamed: the output is split into lines as its bytes arrive and one line is
 * decoded at a time, so memory is bounded by the longest line (its text and the images decoded
 * from it: about three times the line), never by the file.
 */
export async function downloadResults(client: GatewayClient, batch: Batch, dir: string): Promise<DownloadSummary> {
  await fsp.mkdir(dir, { recursive: true });
  const summary: DownloadSummary = { dir, lines: 0, images: 0, errorLines: 0 };
  const errors = fs.createWriteStream(path.join(dir, 'errors.jsonl'));
  try {
    if (batch.output_file_id) {
      let lineNo = 0;
      for await (const raw of splitLines(await client.fileContent(batch.output_file_id))) {
        lineNo++;
        if (raw.length === 0) continue;
        const line = parseLine(raw, batch.output_file_id, lineNo);
        const data = line.error == null ? line.response?.body?.data : undefined;
        if (!Array.isArray(data) || typeof line.custom_id !== 'string') {
          // Not an image line (today failures go to the error file; a future format may inline them).
          await writeWithBackpressure(errors, Buffer.concat([raw, NEWLINE]));
          summary.errorLines++;
          continue;
        }
        const stem = fileStem(line.custom_id);
        for (const [index, image] of data.entries()) {
          await writeImage(client, image, path.join(dir, `${stem}_${index}`));
          summary.images++;
        }
        summary.lines++;
      }
    }
    if (batch.error_file_id) {
      // Copied line by line, unchanged: the error file's lines are already the failure records.
      for await (const raw of splitLines(await client.fileContent(batch.error_file_id))) {
        if (raw.length === 0) continue;
        await writeWithBackpressure(errors, Buffer.concat([raw, NEWLINE]));
        summary.errorLines++;
      }
    }
  } finally {
    await finish(errors);
  }
  return summary;
}

const NEWLINE = Buffer.from('\n');

/** Ids made of safe characters and at most this many UTF-8 bytes are used as they are. */
const MAX_STEM_BYTES = 200;
/** Path separators, NUL and other control characters, and the characters Windows forbids in names. */
const UNSAFE = /[\p{Cc}/\\<>:"|?*]/gu;

/**
 * The file-name stem of a custom_id. An id of safe characters (anything but `/`, `\`, control
 * characters and `<>:"|?*`), not starting with `.` and at most 200 bytes, is kept as it is;
 * otherwise each unsafe character becomes `_`, a leading `.` becomes `_`, the result is cut to
 * 200 bytes and `~` plus 8 hex digits of the id's SHA-256 is appended, so two ids never share a
 * name and none can leave the directory.
 */
export function fileStem(customId: string): string {
  let stem = customId.replace(UNSAFE, '_');
  if (stem.startsWith('.')) stem = `_${stem.slice(1)}`;
  if (stem === customId && Buffer.byteLength(stem) <= MAX_STEM_BYTES) return stem;
  let cut = '';
  for (const ch of stem) {
    if (Buffer.byteLength(cut + ch) > MAX_STEM_BYTES) break;
    cut += ch;
  }
  return `${cut}~${createHash('sha256').update(customId).digest('hex').slice(0, 8)}`;
}

/** The extension an image's first bytes call for: png, jpg or webp (bin when none matches). */
function imageExtension(bytes: Uint8Array): string {
  const ascii = (from: number, to: number) => Buffer.from(bytes.subarray(from, to)).toString('latin1');
  if (ascii(0, 8) === '\x89PNG\r\n\x1a\n') return 'png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpg';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  return 'bin';
}

/** `{b64_json}` is decoded and written; `{url}` is fetched and streamed to the file. */
async function writeImage(client: GatewayClient, image: { b64_json?: unknown; url?: unknown }, base: string) {
  if (typeof image?.b64_json === 'string') {
    const bytes = Buffer.from(image.b64_json, 'base64');
    await fsp.writeFile(`${base}.${imageExtension(bytes)}`, bytes);
    return;
  }
  if (typeof image?.url === 'string') {
    const res = await client.fetchLink(image.url);
    const type = (res.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
    const fromPath = path.extname(new URL(image.url).pathname).slice(1).toLowerCase();
    const ext = IMAGE_EXTENSIONS[type] ?? (['png', 'jpg', 'webp'].includes(fromPath) ? fromPath : 'bin');
    await pipeline(Readable.fromWeb(res.body as WebReadableStream), fs.createWriteStream(`${base}.${ext}`));
    return;
  }
  throw new CliError(
    `an output image has neither b64_json nor url: ${JSON.stringify(image).slice(0, 100)}`,
    EXIT.unavailable,
  );
}

interface OutputLine {
  custom_id?: unknown;
  response?: { body?: { data?: unknown } } | null;
  error?: unknown;
}

function parseLine(raw: Buffer, fileId: string, lineNo: number): OutputLine {
  try {
    return JSON.parse(raw.toString('utf8')) as OutputLine;
  } catch {
    throw new CliError(`line ${lineNo} of ${fileId} is not JSON`, EXIT.unavailable);
  }
}

/**
 * The lines of a byte stream, without their `\n` (or `\r\n`), as they arrive. A generator pulled
 * by `for await`, so the stream is read only as fast as the lines are used: nothing piles up.
 */
async function* splitLines(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  for await (const c of chunks) {
    const chunk = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      pending.push(chunk.subarray(start, nl));
      const line = pending.length === 1 ? pending[0] : Buffer.concat(pending);
      pending = [];
      start = nl + 1;
      yield trimCr(line);
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.length) yield trimCr(Buffer.concat(pending));
}

function trimCr(line: Buffer): Buffer {
  return line.length && line[line.length - 1] === 13 ? line.subarray(0, -1) : line;
}
