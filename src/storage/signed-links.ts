import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/pool.ts';
import { sharedSecret } from '../db/service-secrets.ts';

/**
 * Links to stored objects that work without an API key (url-mode images): the link itself is
 * the credential. A link is `{base}/links/{object key}?expires={unix seconds}&signature={…}`,
 * the signature an HMAC-SHA256 over the path (from `/links/` on, so a PUBLIC_URL with a path
 * of its own behind a proxy still verifies) and the expiry. Changing either breaks it; after
 * the expiry it is refused however intact. This module is the only place that signs or checks.
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

export interface SignedLink {
  objectKey: string;
  /** Unix seconds after which the link is refused. */
  expires: number;
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
  sign(objectKey: string, expires = Math.ceil((this.now() + this.ttlMs) / 1000)): string {
    const path = LINKS_PATH + objectKey.split('/').map(encodeURIComponent).join('/');
    return `${this.baseUrl()}${path}?expires=${expires}&signature=${this.signature(path, String(expires))}`;
  }

  /**
   * The object a link points at, or null when it was altered or has expired (the caller cannot
   * tell which, and must not say). `path` is the request's path as sent (not decoded), from
   * `/links/` on; `query` its parsed query string.
   */
  verify(path: string, query: Record<string, unknown>): SignedLink | null {
    const { expires, signature } = query;
    if (typeof expires !== 'string' || !/^\d{1,12}$/.test(expires)) return null;
    if (typeof signature !== 'string' || !path.startsWith(LINKS_PATH)) return null;
    // Over the expiry as sent: `0123` is not `123`.
    const expected = Buffer.from(this.signature(path, expires));
    const given = Buffer.from(signature);
    // Constant time: how much of a forged signature matched must not show in the answer's timing.
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    if (Number(expires) * 1000 <= this.now()) return null;
    try {
      return {
        objectKey: path.slice(LINKS_PATH.length).split('/').map(decodeURIComponent).join('/'),
        expires: +expires,
      };
    } catch {
      return null; // a signed path is always well encoded; this is only defence in depth
    }
  }

  /** Seconds until a link's expiry, for Cache-Control. */
  secondsLeft(link: SignedLink): number {
    return Math.max(0, link.expires - Math.ceil(this.now() / 1000));
  }

  private signature(path: string, expires: string): string {
    return createHmac('sha256', this.secret).update(`${path}\n${expires}`).digest('base64url');
  }
}
