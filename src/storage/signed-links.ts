import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/pool.ts';
import { sharedSecret } from '../db/service-secrets.ts';

/**
 * Links to stored objects that work without an API key (url-mode images): the link itself is
 * the credential. A link is `{base}/links/{object key}?expires={unix seconds}&signature={…}`,
 * the signature an HMAC-SHA256 over the path (from `/links/` on, so a PUBLIC_URL with a path
 * of its own behind a proxy still verifies) and the expiry. Changing either breaks it; after
 * the expiry it is refused however intact. A link to one image inside a JSON line of an object
 * (a b64_json line of an output file, for the batch gallery) also carries `offset` and `index`,
 * signed with the rest. This module is the only place that signs or checks.
 */

/** Where links are served, outside the API-key authentication. */
export const LINKS_PATH = '/links/';

/** Name of the signing key in `service_secrets` when URL_SIGNING_SECRET is not set. */
const SECRET_NAME = 'image_link_signing_key';

/** The signing key: URL_SIGNING_SECRET, or one made at first start and kept in Postgres for every process. */
export function linkSigningSecret(db: Db, configured: string | null): Promise<string> {
  if (configured !== null) return Promise.resolve(configured);
  return sharedSecret(db, SECRET_NAME, randomBytes(32).toString('base64url'));
}

/**
 * One image inside a stored JSON line rather than an object of its own: image `index` of the
 * `response.body.data` of the line that starts at byte `offset` (a b64_json line of a batch's
 * output file).
 */
export interface LineImage {
  offset: number;
  index: number;
}

export interface SignedLink {
  objectKey: string;
  /** Unix seconds after which the link is refused. */
  expires: number;
  /** Set when the link is to one image inside a line of the object, not to the whole object. */
  image?: LineImage;
}

export interface LinkSignerOptions {
  secret: string;
  /**
   * The absolute base of links (no trailing slash), asked at each signing: a process knows its
   * own address only once it listens.
   */
  baseUrl: () => string;
  /** How long a link works from when it is made. */
  ttlMs: number;
  now?: () => number;
}

export class LinkSigner {
  private readonly secret: string;
  private readonly baseUrl: () => string;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: LinkSignerOptions) {
    this.secret = opts.secret;
    this.baseUrl = opts.baseUrl;
    this.ttlMs = opts.ttlMs;
    this.now = opts.now ?? Date.now;
  }

  /** The absolute link to an object, working until `expires` (unix seconds; default: the TTL from now). */
  sign(objectKey: string, expires = this.defaultExpiry()): string {
    const path = linkPath(objectKey);
    return `${this.baseUrl()}${path}?expires=${expires}&signature=${this.signature(path, String(expires))}`;
  }

  /**
   * The absolute link to one image inside a JSON line of an object (see LineImage). The offset
   * and index are signed with the path and the expiry, so none of them can be changed, and a
   * link of either kind cannot be turned into the other by adding or dropping them.
   */
  signLineImage(objectKey: string, image: LineImage, expires = this.defaultExpiry()): string {
    const path = linkPath(objectKey);
    const offset = String(image.offset);
    const index = String(image.index);
    const signature = this.signature(path, String(expires), [offset, index]);
    return `${this.baseUrl()}${path}?offset=${offset}&index=${index}&expires=${expires}&signature=${signature}`;
  }

  /** Unix seconds of a link made now: the TTL from now. */
  defaultExpiry(): number {
    return Math.ceil((this.now() + this.ttlMs) / 1000);
  }

  /**
   * The object a link points at, or null when it was altered or has expired (the caller cannot
   * tell which, and must not say). `path` is the request's path as sent (not decoded), from
   * `/links/` on; `query` its parsed query string.
   */
  verify(path: string, query: Record<string, unknown>): SignedLink | null {
    const { expires, signature, offset, index } = query;
    if (typeof expires !== 'string' || !/^\d{1,12}$/.test(expires)) return null;
    if (typeof signature !== 'string' || !path.startsWith(LINKS_PATH)) return null;
    // Either both (a line image) or neither (a whole object); each signed as sent.
    const lineImage = offset !== undefined || index !== undefined;
    if (lineImage && !(typeof offset === 'string' && /^\d{1,15}$/.test(offset))) return null;
    if (lineImage && !(typeof index === 'string' && /^\d{1,4}$/.test(index))) return null;
    // Over the expiry as sent: `0123` is not `123`.
    const expected = Buffer.from(this.signature(path, expires, lineImage ? [offset as string, index as string] : []));
    const given = Buffer.from(signature);
    // Constant time: how much of a forged signature matched must not show in the answer's timing.
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    if (Number(expires) * 1000 <= this.now()) return null;
    try {
      return {
        objectKey: path.slice(LINKS_PATH.length).split('/').map(decodeURIComponent).join('/'),
        expires: +expires,
        ...(lineImage ? { image: { offset: Number(offset), index: Number(index) } } : {}),
      };
    } catch {
      return null; // a signed path is always well encoded; this is only defence in depth
    }
  }

  /** Seconds until a link's expiry, for Cache-Control. */
  secondsLeft(link: SignedLink): number {
    return Math.max(0, link.expires - Math.ceil(this.now() / 1000));
  }

  /**
   * Lines joined by line feeds, which a path (percent-encoded) and digits never hold: a link to
   * a whole object and one to an image in it never sign the same text.
   */
  private signature(path: string, expires: string, image: string[] = []): string {
    return createHmac('sha256', this.secret)
      .update([path, expires, ...image].join('\n'))
      .digest('base64url');
  }
}

/** `/links/` and the object key, each segment percent-encoded. */
function linkPath(objectKey: string): string {
  return LINKS_PATH + objectKey.split('/').map(encodeURIComponent).join('/');
}

/**
 * The object key a link of ours points at, read from its path: the part from `/links/` on that
 * starts with `keyPrefix` (the base may have a path of its own). Neither the signature nor the
 * expiry is checked, so only for links read from the service's own files (to sign them anew);
 * null when the link is not one to an object under `keyPrefix`.
 */
export function linkedObjectKey(url: string, keyPrefix: string): string | null {
  let pathname: string;
  try {
    pathname = new URL(url).pathname;
  } catch {
    return null;
  }
  const at = pathname.indexOf(linkPath(keyPrefix));
  if (at === -1) return null;
  try {
    const key = pathname
      .slice(at + LINKS_PATH.length)
      .split('/')
      .map(decodeURIComponent)
      .join('/');
    return key.startsWith(keyPrefix) && key.length > keyPrefix.length ? key : null;
  } catch {
    return null;
  }
}
