import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { ApiError } from '../errors/api-error.ts';

/** Longest webhook URL accepted. */
export const WEBHOOK_URL_MAX_LENGTH = 2048;

/**
 * Cloud metadata services hand out credentials to whoever reaches them: never a webhook target,
 * whatever WEBHOOK_ALLOW_PRIVATE_URLS says.
 */
const METADATA_HOSTS = new Set(['metadata.google.internal']);
const METADATA_ADDRESSES = [ipaddr.parse('169.254.169.254'), ipaddr.parse('fd00:ec2::254')];

/** IPv4-compatible IPv6 (`::a.b.c.d`, deprecated): ipaddr calls it unicast, but it embeds an IPv4 address. */
const IPV4_COMPATIBLE: [ipaddr.IPv6, number] = ipaddr.IPv6.parseCIDR('::/96');

const RANGE_NAMES: Record<string, string> = {
  loopback: 'loopback',
  private: 'private',
  uniqueLocal: 'private (unique local)',
  linkLocal: 'link-local',
  carrierGradeNat: 'carrier-grade NAT',
  unspecified: 'unspecified',
  multicast: 'multicast',
  broadcast: 'broadcast',
};

/**
 * Why a webhook may not connect to `address` (an IP literal), or null when it may. Only ordinary
 * public unicast is allowed: anything ipaddr.js files under a special range (loopback, RFC 1918,
 * ULA, link-local, CGNAT, unspecified, multicast, reserved, translation prefixes that may embed a
 * private IPv4) is refused, so a range we did not think of fails closed. An IPv4-mapped IPv6
 * address is judged as the IPv4 address it is.
 */
export function refusedAddressReason(address: string, allowPrivate: boolean): string | null {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(address);
  } catch {
    return 'not an IP address';
  }
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) ip = (ip as ipaddr.IPv6).toIPv4Address();
  if (METADATA_ADDRESSES.some((m) => m.kind() === ip.kind() && ip.match(m, m.kind() === 'ipv4' ? 32 : 128))) {
    return 'a cloud metadata address';
  }
  if (allowPrivate) return null;
  const range = ip.range();
  if (range !== 'unicast') return `a ${RANGE_NAMES[range] ?? `special-purpose (${range})`} address`;
  if (ip.kind() === 'ipv6' && ip.match(IPV4_COMPATIBLE)) return 'an IPv4-compatible IPv6 address';
  return null;
}

/** Why a webhook may not be sent to this host name (before any resolution), or null. */
export function refusedHostReason(hostname: string): string | null {
  return METADATA_HOSTS.has(hostname.toLowerCase().replace(/\.$/, '')) ? 'a cloud metadata host' : null;
}

/** The host of a URL as a resolver or ipaddr.js takes it (IPv6 literals without their brackets). */
export const bareHost = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1');

const invalid = (message: string) => new ApiError('invalid_webhook_url', message, 'url');

/**
 * Checks a webhook URL when an endpoint is created and returns it normalized (as it will be
 * requested): http(s), no credentials, at most 2048 characters, and, unless private addresses are
 * allowed, a host that is not and does not resolve to an address `refusedAddressReason` refuses.
 * Delivery checks the address again when it connects (see `guardedLookup`): DNS may change.
 */
export async function checkWebhookUrl(raw: unknown, allowPrivate: boolean): Promise<string> {
  if (typeof raw !== 'string' || !raw) throw invalid('url must be a non-empty string.');
  if (raw.length > WEBHOOK_URL_MAX_LENGTH) {
    throw invalid(`url must be at most ${WEBHOOK_URL_MAX_LENGTH} characters (got ${raw.length}).`);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(`url '${raw}' is not an absolute URL.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw invalid(`url must use http or https (got '${url.protocol.replace(/:$/, '')}').`);
  }
  // Credentials in a URL end up in logs and listings; a receiver authenticates by the signature.
  if (url.username || url.password) throw invalid('url must not contain a user name or password.');
  const host = bareHost(url);
  const hostReason = refusedHostReason(host);
  if (hostReason) throw invalid(`url points at ${hostReason} (${host}).`);
  if (net.isIP(host)) {
    const reason = refusedAddressReason(host, allowPrivate);
    if (reason) throw invalid(`url points at ${host}, ${reason}.`);
    return url.href;
  }
  let addresses: dns.LookupAddress[];
  try {
    addresses = await dns.promises.lookup(host, { all: true, verbatim: true });
  } catch {
    throw invalid(`url host '${host}' could not be resolved.`);
  }
  for (const { address } of addresses) {
    const reason = refusedAddressReason(address, allowPrivate);
    if (reason) throw invalid(`url host '${host}' resolves to ${address}, ${reason}.`);
  }
  return url.href;
}

/** The error a refused connection fails with (recorded as the attempt's `last_error`). */
export class RefusedAddressError extends Error {
  readonly code = 'ERR_WEBHOOK_ADDRESS_REFUSED';
}

/**
 * A `lookup` for node:http(s) that resolves as usual and drops every address a webhook may not
 * reach, failing when none is left. The socket connects only to what this returns, so the check
 * applies to the very address connected to: a host re-pointed at a private address after the
 * endpoint was created (DNS rebinding) is refused at delivery.
 */
export function guardedLookup(allowPrivate: boolean): net.LookupFunction {
  return (hostname, options, callback) => {
    const hostReason = refusedHostReason(hostname);
    if (hostReason) return callback(new RefusedAddressError(`${hostname} is ${hostReason}`), '', 0);
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const allowed = addresses.filter((a) => refusedAddressReason(a.address, allowPrivate) === null);
      if (!allowed.length) {
        const first = addresses[0];
        const why = first
          ? `resolves to ${first.address}, ${refusedAddressReason(first.address, allowPrivate)}`
          : 'has no address';
        return callback(new RefusedAddressError(`${hostname} ${why}`), '', 0);
      }
      if (options.all) callback(null, allowed);
      else callback(null, allowed[0].address, allowed[0].family);
    });
  };
}

/**
 * Why a request to `url` is refused before any connection, as `<host> is <reason>`, or null: a
 * scheme other than http(s), a metadata host, or an IP literal the guard refuses (Node skips
 * `lookup` for a literal, so a literal is judged here; a host name is judged by `guardedLookup`).
 */
export function refusedTargetReason(url: URL, allowPrivate: boolean): string | null {
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return `the scheme ${url.protocol.replace(/:$/, '')} is not http or https`;
  const host = bareHost(url);
  const reason = refusedHostReason(host) ?? (net.isIP(host) ? refusedAddressReason(host, allowPrivate) : null);
  return reason && `${host} is ${reason}`;
}

/**
 * Starts an http(s) request that connects only where the guard allows: the target is checked by
 * `refusedTargetReason` (throwing a RefusedAddressError when refused), and the socket resolves a
 * host name through `guardedLookup`, so the address checked is the address connected to. No agent:
 * a fresh connection each time, so no pooled socket skips the check. Follows no redirect; a caller
 * that follows one starts a new guarded request for the new target.
 */
export function guardedRequest(
  url: URL,
  options: http.RequestOptions,
  allowPrivate: boolean,
  onResponse?: (res: http.IncomingMessage) => void,
): http.ClientRequest {
  const refused = refusedTargetReason(url, allowPrivate);
  if (refused) throw new RefusedAddressError(refused);
  const client = url.protocol === 'https:' ? https : http;
  return client.request(url, { ...options, agent: false, lookup: guardedLookup(allowPrivate) }, onResponse);
}
