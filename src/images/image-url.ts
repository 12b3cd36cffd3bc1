import type http from 'node:http';
import { ApiError } from '../errors/api-error.ts';
import { type HeaderState, ImageHeaderReader, type ImageInfo } from '../files/image-header.ts';
import { guardedRequest, RefusedAddressError } from '../webhooks/url-guard.ts';

/**
 * Images the task API is given by URL (`images`, `mask`): a `data:` URL is decoded, an http(s) URL
 * is downloaded through the same address guard as webhooks. Either way the bytes must be a PNG,
 * JPEG or WebP of 1 to 16384 pixels a side, judged by their content, within a byte limit.
 */

export interface FetchedImage {
  data: Buffer;
  mimeType: 'image/png' | 'image/jpeg' | 'image/webp';
  width: number;
  height: number;
}

export interface FetchImageOptions {
  /** Largest image accepted, in bytes (decoded, for a data URL). */
  maxBytes: number;
  /** Time limit of the whole download: connecting, every redirect, the answer and its body. */
  timeoutMs: number;
  /** Lets an http(s) URL reach loopback and private addresses; cloud metadata stays refused. */
  allowPrivate: boolean;
  /** The request field the URL came from, the `param` of the error. */
  param: string;
  /** Stops the download; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

export const MAX_REDIRECTS = 3;
const URL_SHOWN_MAX = 100;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const REQUEST_HEADERS = {
  accept: 'image/png, image/jpeg, image/webp',
  'accept-encoding': 'identity',
  'user-agent': 'image-batch-gateway-fetch/1',
};
/** Media types a data URL may declare ('' is none); the content decides what the image is. */
const DATA_MEDIA_TYPES = new Set(['', 'image/png', 'image/jpeg', 'image/jpg', 'image/webp']);

/** Why an image URL cannot be used: becomes the message of the `invalid_image_url` error. */
class Refusal extends Error {}

const noop = () => {};

/** Whether a task API image reference is a URL (http, https or data) rather than a file id. */
export function isImageUrl(value: string): boolean {
  return /^(?:https?|data):/i.test(value);
}

const isDataUrl = (value: string) => /^data:/i.test(value);

const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * The URL as an error message may show it: shortened, a data URL without its payload, and a URL
 * with credentials without them.
 */
function shown(raw: string): string {
  if (isDataUrl(raw)) {
    const comma = raw.indexOf(',');
    return comma === -1 ? 'data:…' : `${cut(raw.slice(0, comma), 60)},…`;
  }
  let text = raw;
  try {
    const url = new URL(raw);
    if (url.username || url.password) {
      url.username = '';
      url.password = '';
      text = url.href;
    }
  } catch {
    // Not a URL: shown as given.
  }
  return cut(text, URL_SHOWN_MAX);
}

const tooLarge = (maxBytes: number, detail: string) =>
  new Refusal(`the image is larger than the limit of ${maxBytes} bytes (${detail})`);

/**
 * The image at `url` (http, https or data), checked. Every failure is an `invalid_image_url`
 * ApiError naming the URL and the reason; an abort through `opts.signal` rejects with the
 * signal's reason instead, as fetch does.
 */
export async function fetchImageUrl(url: string, opts: FetchImageOptions): Promise<FetchedImage> {
  let redirectedTo: string | null = null;
  try {
    const { data, info } = isDataUrl(url)
      ? decodeDataUrl(url, opts.maxBytes)
      : await download(url, opts, (to) => {
          redirectedTo = to;
        });
    return { data, mimeType: info.type, width: info.width, height: info.height };
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    const what = isDataUrl(url)
      ? `Could not read the image data URL '${shown(url)}'`
      : `Could not fetch the image URL '${shown(url)}'`;
    const via = redirectedTo ? ` (redirected to '${shown(redirectedTo)}')` : '';
    throw new ApiError('invalid_image_url', `${what}${via}: ${err.message}.`, opts.param);
  }
}

/** What the header reader made of the whole image. */
function judge(data: Buffer): ImageInfo {
  const header = new ImageHeaderReader();
  let state: HeaderState = header.push(data);
  if (state.state === 'more') state = header.end();
  if (state.state === 'invalid') throw new Refusal(state.reason);
  if (state.state !== 'done') throw new Refusal('not a PNG, JPEG or WebP image');
  return state.info;
}

/** `data:[<media type>][;<parameter>]*;base64,<data>` (RFC 2397), base64 only. */
function decodeDataUrl(raw: string, maxBytes: number): { data: Buffer; info: ImageInfo } {
  const comma = raw.indexOf(',');
  if (comma === -1) throw new Refusal('not a valid data URL: there is no comma before the data');
  const params = raw
    .slice('data:'.length, comma)
    .split(';')
    .map((p) => p.trim().toLowerCase());
  if (params.length < 2 || params.at(-1) !== 'base64') {
    throw new Refusal('the data must be base64-encoded (data:image/png;base64,…)');
  }
  if (!DATA_MEDIA_TYPES.has(params[0])) {
    throw new Refusal(`the media type '${cut(params[0], 40)}' is not image/png, image/jpeg or image/webp`);
  }
  let payload = raw.slice(comma + 1);
  if (payload.includes('%')) {
    try {
      payload = decodeURIComponent(payload);
    } catch {
      throw new Refusal('the data is not valid base64 (bad percent-encoding)');
    }
  }
  if (/[\t\n\f\r ]/.test(payload)) payload = payload.replace(/[\t\n\f\r ]+/g, '');
  if (!payload) throw new Refusal('the data URL holds no data');
  const padding = payload.endsWith('==') ? 2 : payload.endsWith('=') ? 1 : 0;
  // The exact decoded size, known before decoding.
  const size = Math.floor(((payload.length - padding) * 3) / 4);
  if (size > maxBytes) throw tooLarge(maxBytes, `${size} bytes once decoded`);
  const quadsOk = padding ? payload.length % 4 === 0 : payload.length % 4 !== 1;
  if (!quadsOk || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(payload)) throw new Refusal('the data is not valid base64');
  const data = Buffer.from(payload, 'base64');
  return { data, info: judge(data) };
}

/** A URL of a first request or a redirect, before any connection. */
function checkedUrl(raw: string, base?: URL): URL {
  let url: URL;
  try {
    url = new URL(raw, base);
  } catch {
    throw new Refusal(base ? 'the server redirected to an invalid URL' : 'not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Refusal(`only http, https and data URLs are accepted (got ${url.protocol})`);
  }
  if (url.username || url.password) throw new Refusal('the URL must not contain a user name or password');
  return url;
}

/**
 * Downloads an http(s) image: at most MAX_REDIRECTS redirects, each target guarded again, all
 * within one deadline; the body is judged and counted as it arrives, and the connection dropped
 * as soon as it cannot be a usable image.
 */
async function download(
  raw: string,
  opts: FetchImageOptions,
  onRedirect: (to: string) => void,
): Promise<{ data: Buffer; info: ImageInfo }> {
  let url = checkedUrl(raw);
  const outer = opts.signal;
  outer?.throwIfAborted();
  const control = new AbortController();
  const timer = setTimeout(
    () => control.abort(new Refusal(`timed out after ${opts.timeoutMs / 1000} s`)),
    opts.timeoutMs,
  );
  const cancel = () => control.abort(outer?.reason);
  outer?.addEventListener('abort', cancel, { once: true });
  try {
    for (let redirects = 0; ; redirects++) {
      const { req, res } = await request(url, opts.allowPrivate, control.signal);
      const status = res.statusCode ?? 0;
      if (REDIRECT_STATUSES.has(status)) {
        drop(req, res);
        const location = res.headers.location;
        if (!location) throw new Refusal(`the server answered HTTP ${status} without a Location`);
        if (redirects === MAX_REDIRECTS) throw new Refusal(`more than ${MAX_REDIRECTS} redirects`);
        if (URL.canParse(location, url.href)) onRedirect(new URL(location, url).href);
        url = checkedUrl(location, url);
        continue;
      }
      if (status < 200 || status > 299) {
        drop(req, res);
        throw new Refusal(`the server answered HTTP ${status}`);
      }
      return await readImage(req, res, opts.maxBytes, control.signal);
    }
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', cancel);
  }
}

function drop(req: http.ClientRequest, res: http.IncomingMessage) {
  res.on('error', noop);
  res.destroy();
  req.destroy();
}

/** Why a request got no answer. */
function connectFailure(err: unknown, url: URL): Refusal {
  if (err instanceof RefusedAddressError) return new Refusal(`refused to connect: ${err.message}`);
  const { code, message } = err as NodeJS.ErrnoException;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new Refusal(`could not resolve the host ${url.hostname}`);
  return new Refusal(`could not connect to ${url.host} or get an answer (${code ?? message})`);
}

/** Sends a GET to `url` through the guard and waits for the answer's head. */
function request(
  url: URL,
  allowPrivate: boolean,
  signal: AbortSignal,
): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    let req: http.ClientRequest;
    const onAbort = () => {
      req.destroy();
      reject(signal.reason);
    };
    try {
      req = guardedRequest(url, { method: 'GET', headers: REQUEST_HEADERS }, allowPrivate, (res) => {
        signal.removeEventListener('abort', onAbort);
        resolve({ req, res });
      });
    } catch (err) {
      return reject(connectFailure(err, url));
    }
    signal.addEventListener('abort', onAbort, { once: true });
    // Stays for the request's life: whatever happens after the answer is handled by its reader.
    req.on('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(signal.aborted ? signal.reason : connectFailure(err, url));
    });
    req.end();
  });
}

/**
 * The body, refused (and the connection dropped) as soon as Content-Length or the bytes so far
 * pass `maxBytes`, or the first bytes are not an image: at most `maxBytes` are ever held.
 */
function readImage(
  req: http.ClientRequest,
  res: http.IncomingMessage,
  maxBytes: number,
  signal: AbortSignal,
): Promise<{ data: Buffer; info: ImageInfo }> {
  return new Promise((resolve, reject) => {
    const header = new ImageHeaderReader();
    const chunks: Buffer[] = [];
    let size = 0;
    let info: ImageInfo | null = null;
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      drop(req, res);
      reject(err);
    };
    const onAbort = () => fail(signal.reason);
    if (signal.aborted) return fail(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });

    const declared = Number(res.headers['content-length']);
    if (declared > maxBytes) return fail(tooLarge(maxBytes, `Content-Length is ${declared}`));

    res.on('data', (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > maxBytes) return fail(tooLarge(maxBytes, `more than ${maxBytes} bytes arrived`));
      if (!info) {
        const state = header.push(chunk);
        if (state.state === 'invalid') return fail(new Refusal(state.reason));
        if (state.state === 'done') info = state.info;
      }
      chunks.push(chunk);
    });
    res.on('end', () => {
      if (settled) return;
      if (!info) {
        const state = header.end();
        if (state.state !== 'done') return fail(new Refusal(state.state === 'invalid' ? state.reason : 'not an image'));
        info = state.info;
      }
      settled = true;
      signal.removeEventListener('abort', onAbort);
      resolve({ data: Buffer.concat(chunks, size), info });
    });
    res.on('error', (err) => fail(new Refusal(`the connection broke while the image arrived (${err.message})`)));
    res.on('close', () => fail(new Refusal('the connection closed before the whole image arrived')));
  });
}
