/**
 * Small HTTP helpers shared by both emulators: Google's JSON error shape,
 * JSON answers and bounded JSON request bodies.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** HTTP status → the canonical status name Google puts in `error.status`. */
const STATUS_NAMES: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ALREADY_EXISTS',
  412: 'FAILED_PRECONDITION',
  416: 'OUT_OF_RANGE',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  501: 'UNIMPLEMENTED',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

/** An error that carries the HTTP answer the emulator should give. */
export class HttpError extends Error {
  readonly httpStatus: number;
  readonly statusName: string;
  constructor(httpStatus: number, message: string, statusName?: string) {
    super(message);
    this.httpStatus = httpStatus;
    this.statusName = statusName ?? STATUS_NAMES[httpStatus] ?? 'UNKNOWN';
  }
}

export function statusName(httpStatus: number): string {
  return STATUS_NAMES[httpStatus] ?? 'UNKNOWN';
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=UTF-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/**
 * Google's error body. Cloud Storage also lists `errors[]` with a `reason`;
 * the Storage client reads `error.message` and `errors`, the gax client reads
 * `error.status` to derive the gRPC code.
 */
export function sendError(res: ServerResponse, err: HttpError, reason?: string): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  sendJson(res, err.httpStatus, {
    error: {
      code: err.httpStatus,
      message: err.message,
      status: err.statusName,
      ...(reason ? { errors: [{ message: err.message, domain: 'global', reason }] } : {}),
    },
  });
}

/** Reads a small JSON body (request metadata, job specs); refuses big ones. */
export async function readJsonBody(req: IncomingMessage, limitBytes = 4 * 1024 * 1024): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limitBytes) throw new HttpError(413, 'Request body too large', 'INVALID_ARGUMENT');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'Invalid JSON payload received.');
  }
}

/** Drains and discards a request body (so keep-alive connections stay usable). */
export async function drain(req: IncomingMessage): Promise<void> {
  for await (const _chunk of req) {
    // discard
  }
}

export async function listen(
  server: Server,
  host: string,
  port: number,
): Promise<{ host: string; port: number; url: string }> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return { host, port: address.port, url: `http://${urlHost}:${address.port}` };
}

/** Closes a server, cutting idle keep-alive connections so close() does not hang. */
export async function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  // Connections still busy (a long download) are cut after a short grace period.
  const timer = setTimeout(() => server.closeAllConnections(), 200);
  await closed;
  clearTimeout(timer);
}
