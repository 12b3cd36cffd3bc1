/**
 * Streaming reader for `multipart/related` bodies (the Storage client's simple
 * upload: a JSON metadata part, then the media part). Parts are yielded as
 * events so the media can be piped to disk without buffering the object.
 */

export type MultipartEvent =
  | { type: 'part'; headers: Record<string, string> }
  | { type: 'data'; chunk: Buffer }
  | { type: 'end-part' };

export function boundaryOf(contentType: string | undefined): string | undefined {
  const match = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType ?? '');
  return match ? (match[1] ?? match[2]) : undefined;
}

function parseHeaders(block: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of block.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}

/**
 * Every delimiter is searched as CRLF + "--" + boundary; a CRLF is prepended
 * to the body so the first delimiter matches the same pattern. Body bytes are
 * released as soon as they cannot be the start of a delimiter.
 */
export async function* readMultipart(body: AsyncIterable<Buffer>, boundary: string): AsyncGenerator<MultipartEvent> {
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  let buf: Buffer = Buffer.from('\r\n');
  let state: 'preamble' | 'after-delimiter' | 'headers' | 'body' | 'done' = 'preamble';
  const iterator = body[Symbol.asyncIterator]();
  let ended = false;

  const more = async (): Promise<boolean> => {
    if (ended) return false;
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      return false;
    }
    buf = buf.length === 0 ? next.value : Buffer.concat([buf, next.value]);
    return true;
  };

  while (state !== 'done') {
    if (state === 'preamble') {
      const at = buf.indexOf(delimiter);
      if (at < 0) {
        if (!(await more())) throw new Error('multipart body without a boundary');
        continue;
      }
      buf = buf.subarray(at + delimiter.length);
      state = 'after-delimiter';
    } else if (state === 'after-delimiter') {
      if (buf.length < 2) {
        if (!(await more())) throw new Error('truncated multipart body');
        continue;
      }
      if (buf[0] === 0x2d && buf[1] === 0x2d) {
        state = 'done';
      } else {
        state = 'headers';
      }
    } else if (state === 'headers') {
      const at = buf.indexOf('\r\n\r\n');
      if (at < 0) {
        if (buf.length > 64 * 1024) throw new Error('multipart part headers too long');
        if (!(await more())) throw new Error('truncated multipart headers');
        continue;
      }
      // The block starts with the CRLF that ended the delimiter line.
      yield { type: 'part', headers: parseHeaders(buf.subarray(0, at).toString('utf8')) };
      buf = buf.subarray(at + 4);
      state = 'body';
    } else {
      const at = buf.indexOf(delimiter);
      if (at >= 0) {
        if (at > 0) yield { type: 'data', chunk: buf.subarray(0, at) };
        yield { type: 'end-part' };
        buf = buf.subarray(at + delimiter.length);
        state = 'after-delimiter';
        continue;
      }
      const safe = buf.length - (delimiter.length - 1);
      if (safe > 0) {
        yield { type: 'data', chunk: buf.subarray(0, safe) };
        buf = buf.subarray(safe);
      }
      if (!(await more())) throw new Error('truncated multipart body');
    }
  }
  // Drain the epilogue so the connection can be reused.
  while (await more()) buf = Buffer.alloc(0);
}
