import { PNG } from 'pngjs';
import { type Answer, call, form, jsonl } from './http.ts';
import type { TestService } from './service.ts';

export const FINISHED = ['completed', 'failed', 'expired', 'cancelled'];

export async function uploadBatch(svc: TestService, key: string, lines: unknown[] | string): Promise<Answer> {
  const content = typeof lines === 'string' ? lines : jsonl(lines);
  return call(`${svc.url}/v1/image-files`, {
    method: 'POST',
    key,
    body: form([
      ['purpose', 'image_batch'],
      ['file', { data: content, filename: 'batch.jsonl', type: 'application/jsonl' }],
    ]),
  });
}

/** Polls the batch as a client would until `done` says so (or the deadline passes). */
export async function waitForBatch(
  svc: TestService,
  key: string,
  id: string,
  done: (b: any) => boolean = (b) => FINISHED.includes(b.status),
  timeoutMs = 45_000,
): Promise<any> {
  let last: any;
  try {
    return await eventually(async () => {
      last = (await call(`${svc.url}/v1/image-batches/${id}`, { key })).body;
      return done(last) ? last : null;
    }, timeoutMs);
  } catch {
    throw new Error(`batch ${id} did not reach the expected state; last: ${JSON.stringify(last)}`);
  }
}

/** Polls `probe` until it returns something other than null (or the deadline passes). */
export async function eventually<T>(probe: () => Promise<T | null>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function download(svc: TestService, key: string, fileId: string): Promise<any[]> {
  const a = await call(`${svc.url}/v1/files/${fileId}/content`, { key });
  if (a.status !== 200) throw new Error(`download ${fileId}: ${a.status} ${a.text}`);
  return a.text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

export function decodePng(b64: string): { width: number; height: number } {
  const png = PNG.sync.read(Buffer.from(b64, 'base64'));
  return { width: png.width, height: png.height };
}

export async function ledger(svc: TestService, userId: number) {
  const user = (await svc.admin('GET', `/admin/users/${userId}`)).body;
  const logs = (await svc.admin('GET', `/admin/logs?user_id=${userId}&limit=1000`)).body.data as Array<{
    type: string;
    quota_delta: number;
    batch_id: string | null;
  }>;
  return {
    quota: user.quota as number,
    used: user.used_quota as number,
    logs,
    sum: logs.reduce((s, l) => s + l.quota_delta, 0),
  };
}
