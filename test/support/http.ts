/** Small fetch helpers for talking to a running service the way a client does. */
export interface Answer {
  status: number;
  headers: Headers;
  body: any;
  text: string;
}

export async function call(url: string, init: RequestInit & { key?: string; json?: unknown } = {}): Promise<Answer> {
  const headers = new Headers(init.headers);
  if (init.key) headers.set('authorization', `Bearer ${init.key}`);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  const res = await fetch(url, { ...init, headers, body });
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** A multipart upload as curl -F sends it; fields in the given order. */
export function form(
  fields: Array<[string, string | { data: Buffer | string; filename?: string; type?: string }]>,
): FormData {
  const fd = new FormData();
  for (const [name, value] of fields) {
    if (typeof value === 'string') fd.append(name, value);
    else
      fd.append(
        name,
        new Blob([value.data], { type: value.type ?? 'application/octet-stream' }),
        value.filename ?? 'file',
      );
  }
  return fd;
}

/** A tiny valid PNG (1×1), enough for magic-byte checks. */
export const PNG_1x1 = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  'base64',
);

export function expectEnvelope(a: Answer) {
  const e = a.body?.error;
  if (
    !e ||
    typeof e.message !== 'string' ||
    typeof e.type !== 'string' ||
    typeof e.code !== 'string' ||
    !('param' in e)
  ) {
    throw new Error(`not an error envelope (${a.status}): ${a.text.slice(0, 300)}`);
  }
  return e as { message: string; type: string; code: string; param: string | null };
}

export const jsonl = (lines: unknown[]) => `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`;

export function imageLine(customId: string, prompt = 'a red cube', extra: Record<string, unknown> = {}) {
  return {
    custom_id: customId,
    method: 'POST',
    url: '/v1/images/generations',
    body: { model: 'gemini-2.5-flash-image', prompt, n: 1, ...extra },
  };
}
