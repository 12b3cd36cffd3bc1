import type { Readable } from 'node:stream';

const NEWLINE = 0x0a;
const CR = 0x0d;

/**
 * The non-blank lines of a JSONL stream, parsed, with their 1-based physical line numbers
 * and 0-based request index. Lines are split exactly as validation splits them — at `\n` only,
 * one `\r` before it dropped, a UTF-8 BOM at the start skipped, lines of JSON white space
 * skipped — so a request's index means the same thing in every step (a `\r` alone is white
 * space inside a JSON line, not a line end). Split on the bytes, not through readline: a
 * million-line batch is read like this several times.
 */
export async function* readJsonLines<T = unknown>(
  input: Readable,
): AsyncGenerator<{ line: number; index: number; value: T }> {
  let line = 0;
  let index = 0;
  /** The start of a line the previous chunks ended in. */
  let carry: Buffer[] = [];
  for await (const data of input) {
    const buf = typeof data === 'string' ? Buffer.from(data) : (data as Buffer);
    let start = 0;
    let nl = buf.indexOf(NEWLINE);
    if (carry.length > 0) {
      if (nl === -1) {
        carry.push(buf);
        continue;
      }
      carry.push(buf.subarray(0, nl));
      const whole = Buffer.concat(carry);
      carry = [];
      line++;
      const value = parseLine<T>(whole, 0, whole.length, line);
      if (value !== undefined) yield { line, index: index++, value };
      start = nl + 1;
      nl = buf.indexOf(NEWLINE, start);
    }
    for (; nl !== -1; nl = buf.indexOf(NEWLINE, start)) {
      line++;
      const value = parseLine<T>(buf, start, nl, line);
      if (value !== undefined) yield { line, index: index++, value };
      start = nl + 1;
    }
    if (start < buf.length) carry.push(buf.subarray(start));
  }
  if (carry.length > 0) {
    const rest = Buffer.concat(carry);
    line++;
    const value = parseLine<T>(rest, 0, rest.length, line);
    if (value !== undefined) yield { line, index: index++, value };
  }
}

/** The value of bytes start..end of a line, or undefined for a blank one. */
function parseLine<T>(buf: Buffer, start: number, end: number, line: number): T | undefined {
  if (end > start && buf[end - 1] === CR) end--;
  if (line === 1 && end - start >= 3 && buf[start] === 0xef && buf[start + 1] === 0xbb && buf[start + 2] === 0xbf) {
    start += 3;
  }
  let first = start;
  while (first < end && (buf[first] === 0x20 || buf[first] === 0x09 || buf[first] === CR)) first++;
  if (first === end) return undefined;
  return JSON.parse(buf.toString('utf8', first, end)) as T;
}
