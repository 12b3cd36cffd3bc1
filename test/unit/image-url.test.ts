import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { encodeJpeg } from '../../src/emulator/jpeg.ts';
import { ApiError } from '../../src/errors/api-error.ts';
import { type FetchImageOptions, fetchImageUrl, isImageUrl } from '../../src/images/image-url.ts';
import { PNG_1x1 } from '../support/http.ts';

const OPTS: FetchImageOptions = { maxBytes: 1024 * 1024, timeoutMs: 5_000, allowPrivate: true, param: 'images[0]' };

/** Bytes a streaming route sends after the image's header: far more than any socket buffer holds. */
const STREAM_TOTAL = 64 * 1024 * 1024;
const STREAM_CHUNK = Buffer.alloc(64 * 1024, 7);

/** What the streaming routes saw: bytes handed to the socket, and whether they got to the end. */
interface Streamed {
  sent: number;
  finished: boolean;
  closed: Promise<void>;
}

let server: http.Server;
let base: string;
let port: number;
const hits: string[] = [];
const streamed = new Map<string, Streamed>();

/** A PNG's signature and IHDR, claiming any size (the reader does not check the CRC). */
function pngHeader(width: number, height: number): Buffer {
  const png = Buffer.from(PNG_1x1.subarray(0, 33));
  png.writeUInt32BE(width, 16);
  png.writeUInt32BE(height, 20);
  return png;
}

/** Sends the image's first bytes, then filler until STREAM_TOTAL or until the client goes. */
async function stream(path: string, res: http.ServerResponse, headers: http.OutgoingHttpHeaders) {
  const record: Streamed = {
    sent: 0,
    finished: false,
    closed: new Promise((resolve) => res.once('close', () => resolve())),
  };
  streamed.set(path, record);
  res.writeHead(200, headers);
  res.write(PNG_1x1.subarray(0, 33));
  while (record.sent < STREAM_TOTAL && !res.destroyed) {
    const drained = res.write(STREAM_CHUNK);
    record.sent += STREAM_CHUNK.length;
    if (!drained) {
      await new Promise<void>((resolve) => {
        res.once('drain', resolve);
        res.once('close', resolve);
      });
    }
  }
  if (!res.destroyed) {
    record.finished = true;
    res.end();
  }
}

function route(req: http.IncomingMessage, res: http.ServerResponse) {
  const path = req.url ?? '/';
  hits.push(path);
  const hop = /^\/hop\/(\d+)$/.exec(path);
  if (hop) {
    const n = Number(hop[1]);
    res.writeHead(302, { location: n > 1 ? `/hop/${n - 1}` : '/png' }).end();
    return;
  }
  const redirects: Record<string, string> = {
    '/to-metadata': 'http://169.254.169.254/latest/meta-data/',
    '/to-metadata-host': 'http://metadata.google.internal/computeMetadata/v1/',
    '/to-ftp': 'ftp://example.com/a.png',
    '/to-credentials': `http://user:hunter2@127.0.0.1:${port}/png`,
  };
  if (redirects[path]) {
    res.writeHead(301, { location: redirects[path] }).end();
    return;
  }
  switch (path) {
    case '/png':
      // The Content-Type is wrong on purpose: the bytes decide.
      res.writeHead(200, { 'content-type': 'text/plain' }).end(PNG_1x1);
      return;
    case '/jpeg':
      res.writeHead(200, { 'content-type': 'image/jpeg' }).end(encodeJpeg(3, 2, new Uint8Array(3 * 2 * 4), 80));
      return;
    case '/text':
      res.writeHead(200, { 'content-type': 'image/png' }).end('hello, this is not an image');
      return;
    case '/too-wide':
      res.writeHead(200, { 'content-type': 'image/png' }).end(pngHeader(20_000, 1));
      return;
    case '/truncated':
      res.writeHead(200, { 'content-type': 'image/png' }).end(PNG_1x1.subarray(0, 12));
      return;
    case '/declared-big':
      // Announces 10 MB and sends only the header: refused on the announcement, without waiting.
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(10 * 1024 * 1024) });
      res.write(PNG_1x1.subarray(0, 33));
      streamed.set(path, {
        sent: 33,
        finished: false,
        closed: new Promise((resolve) => res.once('close', () => resolve())),
      });
      return;
    case '/chunked-big':
      void stream(path, res, { 'content-type': 'image/png' });
      return;
    case '/silent':
      return; // never answers
    default:
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not here');
  }
}

beforeAll(async () => {
  server = http.createServer(route);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** The ApiError fetching `url` fails with. */
async function refused(url: string, opts: Partial<FetchImageOptions> = {}): Promise<ApiError> {
  const err = await fetchImageUrl(url, { ...OPTS, ...opts }).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  const apiError = err as ApiError;
  expect(apiError.code).toBe('invalid_image_url');
  expect(apiError.status).toBe(400);
  expect(apiError.param).toBe(opts.param ?? OPTS.param);
  return apiError;
}

describe('isImageUrl', () => {
  it('tells http, https and data URLs from file ids', () => {
    for (const url of ['http://example.com/a.png', 'HTTPS://example.com/a.png', 'data:image/png;base64,AAAA']) {
      expect(isImageUrl(url)).toBe(true);
    }
    for (const id of ['file_abc123', 'file-abc', '', 'ftp://example.com/a.png', 'httpx://a']) {
      expect(isImageUrl(id)).toBe(false);
    }
  });
});

describe('http(s) image URLs', () => {
  it('fetches a PNG from loopback when private addresses are allowed, judged by its bytes', async () => {
    const image = await fetchImageUrl(`${base}/png`, OPTS);
    expect(image).toEqual({ data: PNG_1x1, mimeType: 'image/png', width: 1, height: 1 });
    const jpeg = await fetchImageUrl(`${base}/jpeg`, OPTS);
    expect(jpeg).toMatchObject({ mimeType: 'image/jpeg', width: 3, height: 2 });
  });

  it('refuses loopback when private addresses are not allowed, before connecting', async () => {
    const before = hits.length;
    const literal = await refused(`${base}/png`, { allowPrivate: false, param: 'mask' });
    expect(literal.message).toBe(
      `Could not fetch the image URL '${base}/png': refused to connect: 127.0.0.1 is a loopback address.`,
    );
    const v6 = await refused(`http://[::ffff:127.0.0.1]:${port}/png`, { allowPrivate: false });
    expect(v6.message).toMatch(/refused to connect: .* loopback address\.$/);
    // A host name is judged by the guarded lookup, on the address really connected to.
    const named = await refused(`http://localhost:${port}/png`, { allowPrivate: false });
    expect(named.message).toMatch(
      /refused to connect: localhost resolves to (127\.0\.0\.1|::1), a loopback address\.$/,
    );
    expect(hits.length).toBe(before);
  });

  it('refuses cloud metadata even with private addresses allowed', async () => {
    const started = Date.now();
    for (const url of [
      'http://169.254.169.254/latest/meta-data/',
      'http://[::ffff:169.254.169.254]/',
      'http://[fd00:ec2::254]/',
    ]) {
      expect((await refused(url)).message).toMatch(/refused to connect: .* is a cloud metadata address\.$/);
    }
    const host = await refused('http://metadata.google.internal/computeMetadata/v1/');
    expect(host.message).toMatch(/refused to connect: metadata\.google\.internal is a cloud metadata host\.$/);
    expect(Date.now() - started).toBeLessThan(1000); // nothing was tried
  });

  it('follows up to 3 redirects, each target guarded again', async () => {
    const image = await fetchImageUrl(`${base}/hop/3`, OPTS);
    expect(image.mimeType).toBe('image/png');

    const tooMany = await refused(`${base}/hop/4`);
    expect(tooMany.message).toMatch(/: more than 3 redirects\.$/);

    const metadata = await refused(`${base}/to-metadata`);
    expect(metadata.message).toBe(
      `Could not fetch the image URL '${base}/to-metadata' (redirected to 'http://169.254.169.254/latest/meta-data/'): ` +
        'refused to connect: 169.254.169.254 is a cloud metadata address.',
    );
    expect((await refused(`${base}/to-metadata-host`)).message).toMatch(/cloud metadata host\.$/);
    expect((await refused(`${base}/to-ftp`)).message).toMatch(
      /only http, https and data URLs are accepted \(got ftp:\)\.$/,
    );
    const credentials = await refused(`${base}/to-credentials`);
    expect(credentials.message).toMatch(/must not contain a user name or password\.$/);
    expect(credentials.message).not.toContain('hunter2');
  });

  it('refuses a body announced larger than the limit at once, and drops the connection', async () => {
    const started = Date.now();
    const err = await refused(`${base}/declared-big`, { maxBytes: 100_000 });
    expect(err.message).toMatch(
      /: the image is larger than the limit of 100000 bytes \(Content-Length is 10485760\)\.$/,
    );
    await streamed.get('/declared-big')!.closed;
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('stops a chunked body as soon as it passes the limit, long before the server is done', async () => {
    const err = await refused(`${base}/chunked-big`, { maxBytes: 100_000 });
    expect(err.message).toMatch(
      /: the image is larger than the limit of 100000 bytes \(more than 100000 bytes arrived\)\.$/,
    );
    const record = streamed.get('/chunked-big')!;
    await record.closed;
    // The server saw the connection go: it never got to send all it had.
    expect(record.finished).toBe(false);
    expect(record.sent).toBeLessThan(STREAM_TOTAL / 2);
  });

  it('gives up after timeoutMs when the server never answers', async () => {
    const started = Date.now();
    const err = await refused(`${base}/silent`, { timeoutMs: 300 });
    const took = Date.now() - started;
    expect(err.message).toBe(`Could not fetch the image URL '${base}/silent': timed out after 0.3 s.`);
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(1500);
  });

  it('stops when the caller aborts, with the caller’s reason', async () => {
    const controller = new AbortController();
    const reason = new Error('the client went away');
    setTimeout(() => controller.abort(reason), 100);
    await expect(fetchImageUrl(`${base}/silent`, { ...OPTS, signal: controller.signal })).rejects.toBe(reason);
  });

  it('refuses an answer that is not 2xx', async () => {
    const err = await refused(`${base}/missing.png`);
    expect(err.message).toBe(`Could not fetch the image URL '${base}/missing.png': the server answered HTTP 404.`);
  });

  it('refuses bytes that are not a PNG, JPEG or WebP of 1 to 16384 pixels a side', async () => {
    expect((await refused(`${base}/text`)).message).toMatch(/: not a PNG, JPEG or WebP image\.$/);
    expect((await refused(`${base}/too-wide`)).message).toMatch(/image is 20000x1 pixels/);
    expect((await refused(`${base}/truncated`)).message).toMatch(/truncated PNG/);
  });

  it('says when nothing answers at all', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port: gone } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const err = await refused(`http://127.0.0.1:${gone}/a.png`);
    expect(err.message).toMatch(/could not connect to 127\.0\.0\.1:\d+ or get an answer \(ECONNREFUSED\)\.$/);
  });

  it('refuses other schemes, credentials and what is not a URL', async () => {
    for (const url of ['ftp://example.com/a.png', 'file:///etc/passwd']) {
      expect((await refused(url)).message).toMatch(
        /only http, https and data URLs are accepted \(got (ftp|file):\)\.$/,
      );
    }
    const credentials = await refused(`http://user:hunter2@127.0.0.1:${port}/png`);
    expect(credentials.message).toBe(
      `Could not fetch the image URL 'http://127.0.0.1:${port}/png': the URL must not contain a user name or password.`,
    );
    expect((await refused('http://')).message).toMatch(/: not a valid URL\.$/);
  });

  it('shortens a long URL in its message', async () => {
    const long = `${base}/${'x'.repeat(500)}`;
    const err = await refused(long);
    expect(err.message).toContain(`'${long.slice(0, 99)}…'`);
    expect(err.message.length).toBeLessThan(200);
  });
});

describe('data: URLs', () => {
  const png64 = PNG_1x1.toString('base64');

  it('decodes a PNG, JPEG or an image without a media type', async () => {
    expect(await fetchImageUrl(`data:image/png;base64,${png64}`, OPTS)).toEqual({
      data: PNG_1x1,
      mimeType: 'image/png',
      width: 1,
      height: 1,
    });
    expect(await fetchImageUrl(`data:;base64,${png64}`, OPTS)).toMatchObject({ mimeType: 'image/png' });
    const jpeg = encodeJpeg(5, 4, new Uint8Array(5 * 4 * 4), 80);
    expect(await fetchImageUrl(`DATA:image/jpeg;base64,${jpeg.toString('base64')}`, OPTS)).toMatchObject({
      mimeType: 'image/jpeg',
      width: 5,
      height: 4,
    });
    // MIME-style line breaks and percent-encoding are allowed.
    const wrapped = png64
      .replace(/(.{20})/g, '$1\r\n')
      .replaceAll('+', '%2B')
      .replaceAll('/', '%2F');
    expect((await fetchImageUrl(`data:image/png;base64,${wrapped}`, OPTS)).data).toEqual(PNG_1x1);
  });

  it('refuses a bad media type, data that is not base64, and what is not an image, without echoing the data', async () => {
    const gif = await refused(`data:image/gif;base64,${png64}`);
    expect(gif.message).toBe(
      "Could not read the image data URL 'data:image/gif;base64,…': the media type 'image/gif' is not image/png, image/jpeg or image/webp.",
    );
    expect((await refused(`data:image/png,${png64}`)).message).toMatch(/: the data must be base64-encoded/);
    expect((await refused(`data:image/png;base64,${png64.slice(0, 20)}!!!!`)).message).toMatch(
      /: the data is not valid base64\.$/,
    );
    expect((await refused(`data:image/png;base64,${png64}A`)).message).toMatch(/: the data is not valid base64\.$/);
    expect((await refused('data:image/png;base64')).message).toMatch(/no comma before the data\.$/);
    expect((await refused('data:image/png;base64,')).message).toMatch(/holds no data\.$/);
    const text = Buffer.from('hello, this is not an image').toString('base64');
    const notImage = await refused(`data:image/png;base64,${text}`);
    expect(notImage.message).toMatch(/: not a PNG, JPEG or WebP image\.$/);
    for (const err of [gif, notImage]) {
      expect(err.message).not.toContain(png64.slice(0, 12));
      expect(err.message).not.toContain(text.slice(0, 12));
    }
  });

  it('refuses one larger than the limit from the length of its text alone', async () => {
    const err = await refused(`data:image/png;base64,${png64}`, { maxBytes: 10 });
    expect(err.message).toBe(
      `Could not read the image data URL 'data:image/png;base64,…': the image is larger than the limit of 10 bytes (${PNG_1x1.length} bytes once decoded).`,
    );
    // Judged before the text is even checked: 4000 characters that are not base64 at all.
    const big = await refused(`data:image/png;base64,${'!'.repeat(4000)}`, { maxBytes: 1000 });
    expect(big.message).toMatch(/larger than the limit of 1000 bytes \(3000 bytes once decoded\)\.$/);
    // Exactly at the limit is fine.
    expect((await fetchImageUrl(`data:image/png;base64,${png64}`, { ...OPTS, maxBytes: PNG_1x1.length })).data).toEqual(
      PNG_1x1,
    );
  });
});
