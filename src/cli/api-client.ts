import fs from 'node:fs';
import path from 'node:path';
import { CliError, EXIT, type ExitCode } from './cli-error.ts';

/** The parts of the batch object (README "API reference") the client reads. */
export interface Batch {
  id: string;
  status: string;
  model: string | null;
  errors: { data: Array<{ code: string; message: string; param: string | null; line: number | null }> } | null;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
  billing: { pre_deducted: number; settled: number | null; refunded: number | null };
}

export interface BatchList {
  data: Batch[];
  has_more: boolean;
  last_id: string | null;
}

/**
 * The user API over fetch. Every failure becomes a `CliError` carrying the exit code its kind
 * maps to, with the service's own message and code, so commands never inspect HTTP statuses.
 */
export class GatewayClient {
  readonly baseUrl: string;
  private readonly apiKey: string;

  constructor(baseUrl: string, apiKey: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.apiKey = apiKey;
  }

  getBatch(id: string): Promise<Batch> {
    return this.json('GET', `/v1/image-batches/${encodeURIComponent(id)}`);
  }

  listBatches(query: { limit?: string; after?: string; status?: string }): Promise<BatchList> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, v);
    const qs = params.size ? `?${params}` : '';
    return this.json('GET', `/v1/image-batches${qs}`);
  }

  cancelBatch(id: string): Promise<Batch> {
    return this.json('POST', `/v1/image-batches/${encodeURIComponent(id)}/cancel`);
  }

  privacy(): Promise<{ accepted: boolean; accepted_at: number | null }> {
    return this.json('GET', '/api/image-batch-privacy');
  }

  acceptPrivacy(): Promise<{ success: boolean }> {
    return this.json('PUT', '/api/image-batch-privacy', { accept: true });
  }

  /**
   * Uploads a JSONL as `purpose=image_batch`, which creates the batch in one call. The file goes
   * out as a file-backed Blob: fetch reads it from disk as it sends, never whole into memory.
   */
  async uploadBatch(file: string): Promise<Batch> {
    const blob = await fs.openAsBlob(file, { type: 'application/jsonl' });
    const form = new FormData();
    form.append('purpose', 'image_batch');
    form.append('file', blob, path.basename(file));
    return this.json('POST', '/v1/image-files', form);
  }

  /** A file's bytes as a stream of chunks (the caller consumes the body). */
  async fileContent(fileId: string): Promise<ReadableStream<Uint8Array>> {
    const res = await this.send('GET', `/v1/files/${encodeURIComponent(fileId)}/content`);
    if (!res.body) throw new CliError(`file ${fileId}: the service sent no content`, EXIT.unavailable);
    return res.body;
  }

  /**
   * The image behind a url-mode link. Links carry their own signature, so no API key is sent:
   * they may point at another host (`PUBLIC_URL`) than the one the key is for.
   */
  async fetchLink(url: string): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(url);
    } catch (err) {
      throw unreachable(new URL(url).origin, err);
    }
    if (!res.ok || !res.body) throw await apiFailure(res);
    return res;
  }

  private async json<T>(method: string, p: string, body?: FormData | object): Promise<T> {
    const res = await this.send(method, p, body);
    const text = await res.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new CliError(`${method} ${p}: the service answered with something other than JSON`, EXIT.unavailable);
    }
  }

  private async send(method: string, p: string, body?: FormData | object): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.apiKey}` };
    let payload: FormData | string | undefined;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    let res: Response;
    try {
      res = await fetch(this.baseUrl + p, { method, body: payload, headers });
    } catch (err) {
      throw unreachable(this.baseUrl, err);
    }
    if (!res.ok) throw await apiFailure(res);
    return res;
  }
}

/** "cannot reach …": fetch's own message ("fetch failed") says nothing, the cause says why. */
function unreachable(baseUrl: string, err: unknown): CliError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (err as Error).message;
  return new CliError(
    `cannot reach the service at ${baseUrl} (${why}); is it running, and is IBG_BASE_URL right?`,
    EXIT.unavailable,
  );
}

/** One line from the error envelope `{"error": {"message", "code", …}}`, and its exit code. */
async function apiFailure(res: Response): Promise<CliError> {
  const text = await res.text().catch(() => '');
  let message = text.trim().slice(0, 300) || res.statusText;
  let code: string | undefined;
  try {
    const e = (JSON.parse(text) as { error?: { message?: string; code?: string } }).error;
    if (e?.message) message = e.message;
    code = e?.code;
  } catch {
    // not our envelope (a proxy's page, say): its first bytes are the best we have
  }
  let exit: ExitCode = EXIT.rejected;
  if (res.status === 401 || res.status === 403) exit = EXIT.auth;
  else if (res.status >= 500) exit = EXIT.unavailable;
  if (code === 'privacy_not_accepted') {
    message += ' Run `ibg accept-privacy` to accept it for this key’s user.';
  }
  return new CliError(`${message} (${code ?? 'error'}, HTTP ${res.status})`, exit);
}
