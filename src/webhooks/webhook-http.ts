import { Webhook } from 'standardwebhooks';
import { guardedRequest, refusedTargetReason } from './url-guard.ts';

/** One message as Standard Webhooks signs it: the event id is the `webhook-id` of every attempt. */
export interface WebhookMessage {
  id: string;
  body: string;
  secret: string;
}

export interface AttemptResult {
  /** A 2xx answer. */
  ok: boolean;
  /** The receiver's status; null when none came (refused, unreachable, timed out). */
  statusCode: number | null;
  /** Why it was not delivered, short; null when delivered. */
  error: string | null;
}

const ERROR_MAX_CHARS = 200;
const short = (text: string) => (text.length > ERROR_MAX_CHARS ? `${text.slice(0, ERROR_MAX_CHARS - 1)}…` : text);

/**
 * The signed headers of one attempt: `webhook-signature` is `v1,` + base64 HMAC-SHA256 of
 * `id.timestamp.body`, keyed with the decoded secret. The timestamp is the attempt's own, so a
 * retry stays inside a receiver's replay window.
 */
export function signedHeaders(message: WebhookMessage, at = new Date()): Record<string, string> {
  return {
    'webhook-id': message.id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(message.secret).sign(message.id, at, message.body),
  };
}

/**
 * POSTs one webhook attempt and never throws: whatever happens is the result. Connects only to an
 * address the guard allows (an IP literal is checked here, a host name by the lookup when the
 * socket connects), follows no redirect, and gives up after `timeoutMs` (connecting, waiting and
 * draining the answer together).
 */
export function postWebhook(
  url: string,
  message: WebhookMessage,
  opts: { allowPrivate: boolean; timeoutMs: number },
): Promise<AttemptResult> {
  const failed = (error: string): AttemptResult => ({ ok: false, statusCode: null, error: short(error) });
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return Promise.resolve(failed('invalid URL'));
  }
  // Node skips `lookup` for an IP literal, so a literal is judged here.
  const refused = refusedTargetReason(target, opts.allowPrivate);
  if (refused) return Promise.resolve(failed(`refused: ${refused}`));

  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(message.body)),
    'user-agent': 'image-batch-gateway-webhooks/1',
    ...signedHeaders(message),
  };
  return new Promise((resolve) => {
    let result: AttemptResult | null = null;
    const settle = (r: AttemptResult) => {
      result ??= r;
      resolve(result);
    };
    // A fresh connection each attempt (no agent), so every attempt passes the lookup guard.
    const req = guardedRequest(target, { method: 'POST', headers }, opts.allowPrivate, (res) => {
      const code = res.statusCode ?? 0;
      const ok = code >= 200 && code < 300;
      settle({ ok, statusCode: code, error: ok ? null : `HTTP ${code}` });
      // The answer's body is not needed, only drained (within the same deadline).
      res.on('error', () => {});
      res.on('close', () => clearTimeout(timer));
      res.resume();
    });
    const timer = setTimeout(() => {
      settle(failed(`timed out after ${opts.timeoutMs / 1000} s`));
      req.destroy();
    }, opts.timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      settle(failed(err.message || String(err)));
    });
    req.on('close', () => {
      if (!result) clearTimeout(timer);
    });
    req.end(message.body);
  });
}
