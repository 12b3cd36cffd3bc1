import { describe, expect, it } from '@jest/globals';
import { LinkSigner, linkedObjectKey, linkSigningSecret } from '../../src/storage/signed-links.ts';

const SECRET = 'a-test-signing-secret-of-32-characters-at-least';
const KEY = 'tenants/7/batches/batch_abc/images-r1/batch_req_xyz-0.png';
const HOUR = 3600_000;

/** A signer on a clock the test moves. */
function signer(opts: { secret?: string; base?: string; ttlMs?: number } = {}) {
  const clock = { now: Date.parse('2026-11-21T10:00:00Z') };
  const links = new LinkSigner({
    secret: opts.secret ?? SECRET,
    baseUrl: () => opts.base ?? 'https://images.example.com',
    ttlMs: opts.ttlMs ?? HOUR,
    now: () => clock.now,
  });
  return { links, clock };
}

/** What the link route hands to verify: the path from `/links/` on, as sent, and the parsed query. */
function request(url: string, base = 'https://images.example.com') {
  const u = new URL(url);
  expect(url.startsWith(base)).toBe(true);
  const path = u.pathname.slice(new URL(base).pathname.replace(/\/$/, '').length);
  return { path, query: Object.fromEntries(u.searchParams) as Record<string, unknown> };
}

describe('signed links', () => {
  it('signs an absolute link that verifies back to its object, without anything else', () => {
    const { links, clock } = signer();
    const url = links.sign(KEY);
    expect(url).toMatch(
      /^https:\/\/images\.example\.com\/links\/tenants\/7\/batches\/batch_abc\/images-r1\/batch_req_xyz-0\.png\?expires=\d+&signature=[\w-]{43}$/,
    );
    const { path, query } = request(url);
    const link = links.verify(path, query);
    expect(link).toEqual({ objectKey: KEY, expires: Math.ceil((clock.now + HOUR) / 1000) });
    expect(links.secondsLeft(link!)).toBe(3600);
  });

  it('refuses a link whose path was changed', () => {
    const { links } = signer();
    const { path, query } = request(links.sign(KEY));
    for (const other of [
      path.replace('tenants/7/', 'tenants/8/'),
      path.replace('-0.png', '-1.png'),
      `${path}x`,
      path.replace('/links/', '/links//'),
      path.toUpperCase(),
    ]) {
      expect(other).not.toBe(path);
      expect(links.verify(other, query)).toBeNull();
    }
    expect(links.verify(path, query)).not.toBeNull();
  });

  it('refuses a link whose expiry was changed, later or earlier', () => {
    const { links } = signer();
    const { path, query } = request(links.sign(KEY));
    const expires = Number(query.expires);
    for (const other of [expires + 1, expires + 86_400 * 365, expires - 1]) {
      expect(links.verify(path, { ...query, expires: String(other) })).toBeNull();
    }
    expect(links.verify(path, { ...query, expires: `0${expires}` })).toBeNull();
    expect(links.verify(path, { ...query, expires: `${expires}.0` })).toBeNull();
  });

  it('refuses a changed, missing or repeated signature', () => {
    const { links } = signer();
    const { path, query } = request(links.sign(KEY));
    const signature = String(query.signature);
    const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
    expect(links.verify(path, { ...query, signature: flipped })).toBeNull();
    expect(links.verify(path, { ...query, signature: signature.slice(0, -1) })).toBeNull();
    expect(links.verify(path, { ...query, signature: `${signature}A` })).toBeNull();
    expect(links.verify(path, { expires: query.expires })).toBeNull();
    expect(links.verify(path, { ...query, signature: [signature, signature] })).toBeNull();
    expect(links.verify(path, { ...query, expires: [query.expires] })).toBeNull();
  });

  it('refuses a link once it has expired: IMAGE_URL_TTL from when it was made', () => {
    const { links, clock } = signer({ ttlMs: 10_000 });
    const { path, query } = request(links.sign(KEY));
    clock.now += 9_000;
    expect(links.verify(path, query)).not.toBeNull();
    clock.now += 1_000;
    expect(links.verify(path, query)).toBeNull();
    clock.now += HOUR;
    expect(links.verify(path, query)).toBeNull();
    // A link made now works again for the TTL: the expiry is the link's, not the object's.
    const fresh = request(links.sign(KEY));
    expect(links.verify(fresh.path, fresh.query)).not.toBeNull();
  });

  it('refuses a link signed with another key', () => {
    const { links } = signer();
    const { links: other } = signer({ secret: 'another-secret-of-at-least-32-characters!!' });
    const { path, query } = request(other.sign(KEY));
    expect(other.verify(path, query)).not.toBeNull();
    expect(links.verify(path, query)).toBeNull();
  });

  it('signs only the part from /links/ on, so a PUBLIC_URL with a path of its own verifies behind a proxy', () => {
    let base = 'https://gw.example.com/image-gateway';
    const { links } = signer({ base: 'unused' });
    const proxied = new LinkSigner({ secret: SECRET, baseUrl: () => base, ttlMs: HOUR });
    const url = proxied.sign(KEY);
    expect(url.startsWith('https://gw.example.com/image-gateway/links/tenants/7/')).toBe(true);
    const { path, query } = request(url, base);
    expect(path.startsWith('/links/')).toBe(true);
    expect(proxied.verify(path, query)?.objectKey).toBe(KEY);
    // The base is asked at each signing (a process learns its port when it listens).
    base = 'http://127.0.0.1:9999';
    expect(proxied.sign(KEY).startsWith('http://127.0.0.1:9999/links/')).toBe(true);
    expect(links.verify('/other/tenants/7/x.png', query)).toBeNull();
  });

  it('encodes key characters that are not URL-safe and decodes them back', () => {
    const { links } = signer();
    const key = 'tenants/7/odd name/ä?#%.png';
    const { path, query } = request(links.sign(key));
    expect(path).toBe('/links/tenants/7/odd%20name/%C3%A4%3F%23%25.png');
    expect(links.verify(path, query)?.objectKey).toBe(key);
  });

  it('signs a link to one image inside a line: offset and index verify back with the object', () => {
    const { links, clock } = signer();
    const OUTPUT = 'tenants/7/batches/batch_abc/output-r1.jsonl';
    const url = links.signLineImage(OUTPUT, { offset: 123456, index: 2 });
    expect(url).toMatch(
      /^https:\/\/images\.example\.com\/links\/tenants\/7\/batches\/batch_abc\/output-r1\.jsonl\?offset=123456&index=2&expires=\d+&signature=[\w-]{43}$/,
    );
    const { path, query } = request(url);
    expect(links.verify(path, query)).toEqual({
      objectKey: OUTPUT,
      expires: Math.ceil((clock.now + HOUR) / 1000),
      image: { offset: 123456, index: 2 },
    });
    // A whole-object link has no `image`, and an explicit expiry is kept.
    const whole = request(links.sign(OUTPUT));
    expect(links.verify(whole.path, whole.query)).toEqual({ objectKey: OUTPUT, expires: expect.any(Number) });
    expect(request(links.signLineImage(OUTPUT, { offset: 0, index: 0 }, 1_900_000_000)).query.expires).toBe(
      '1900000000',
    );
  });

  it('refuses a line-image link whose offset or index was changed, dropped or added', () => {
    const { links } = signer();
    const OUTPUT = 'tenants/7/batches/batch_abc/output-r1.jsonl';
    const { path, query } = request(links.signLineImage(OUTPUT, { offset: 5000, index: 1 }));
    const changed: Array<Record<string, unknown>> = [
      { ...query, offset: '5001' },
      { ...query, offset: '4999' },
      { ...query, offset: '05000' },
      { ...query, index: '0' },
      { ...query, index: '2' },
      { ...query, index: '01' },
      { ...query, offset: '1', index: '5000' },
      { ...query, offset: ['5000', '5000'] },
      { ...query, index: '1.0' },
      { ...query, offset: '-5000' },
    ];
    for (const q of changed) expect(links.verify(path, q)).toBeNull();
    // Dropping them does not turn it into a link to the whole output file…
    const { offset: _o, index: _i, ...whole } = query;
    expect(links.verify(path, whole)).toBeNull();
    expect(links.verify(path, { ...query, offset: undefined })).toBeNull();
    // …and adding them to a whole-object link does not make it a line-image link.
    const plain = request(links.sign(OUTPUT));
    expect(links.verify(plain.path, { ...plain.query, offset: '0', index: '0' })).toBeNull();
    expect(links.verify(plain.path, { ...plain.query, index: '0' })).toBeNull();
    // The path and the expiry are covered as before.
    expect(links.verify(path.replace('output-r1', 'output-r2'), query)).toBeNull();
    expect(links.verify(path, { ...query, expires: String(Number(query.expires) + 1) })).toBeNull();
    expect(links.verify(path, query)?.image).toEqual({ offset: 5000, index: 1 });
  });

  it('reads the object key back out of a link of ours, under a given prefix only', () => {
    const { links } = signer({ base: 'https://gw.example.com/proxy/links' });
    const key = 'tenants/7/batches/batch_abc/images-r1/batch_req_xyz-0.png';
    expect(linkedObjectKey(links.sign(key), 'tenants/7/batches/batch_abc/')).toBe(key);
    expect(linkedObjectKey(links.sign('tenants/7/odd name/ä.png'), 'tenants/7/')).toBe('tenants/7/odd name/ä.png');
    expect(linkedObjectKey(links.sign(key), 'tenants/8/')).toBeNull();
    expect(linkedObjectKey(links.sign(key), 'tenants/7/batches/batch_other/')).toBeNull();
    expect(linkedObjectKey('https://elsewhere.example.com/x.png', 'tenants/7/')).toBeNull();
    expect(linkedObjectKey('not a url', 'tenants/7/')).toBeNull();
    expect(linkedObjectKey('https://gw.example.com/links/tenants/7/%E0%A4%A', 'tenants/7/')).toBeNull();
  });

  it('uses URL_SIGNING_SECRET when set, without touching the database', async () => {
    const db = {
      query: () => {
        throw new Error('not expected');
      },
    };
    await expect(linkSigningSecret(db as never, SECRET)).resolves.toBe(SECRET);
  });
});
