/**
 * The dashboard's only way to the service: the public API with an API key, or the admin API
 * with the admin token. The secret lives in this tab's session storage and travels only in the
 * Authorization header to this origin (relative URLs, `credentials: 'omit'`), never in a URL.
 */

const SESSION_KEY = 'image-batch-gateway.session';

/** `{ role: 'user' | 'admin', secret }` or null. */
export function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null');
    return s && (s.role === 'user' || s.role === 'admin') && typeof s.secret === 'string' ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

/** An error answer of the API (its envelope's message and code), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `The service answered HTTP ${status}.`);
    this.status = status;
    this.code = error?.code ?? null;
    this.param = error?.param ?? null;
  }
}

let unauthorized = () => {};
/** Called when the service refuses the session's secret (revoked key, changed token). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function authHeaders(secret) {
  const s = secret ?? loadSession()?.secret;
  return s ? { authorization: `Bearer ${s}` } : {};
}

/** An error answer; a 401 to the session's own secret ends the session (a sign-in check does not). */
function failed(status, body, withSession = true) {
  const err = new ApiError(status, body?.error);
  if (status === 401 && withSession) unauthorized(err);
  return err;
}

/** A JSON call; `path` is relative to the page (`v1/…`, `admin/…`), so it stays on this origin. */
export async function api(path, { method = 'GET', body, secret, signal } = {}) {
  const headers = authHeaders(secret);
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw unreachable();
  }
  const json = parseJson(await res.text());
  if (!res.ok) throw failed(res.status, json, secret === undefined);
  return json;
}

/** An answer's JSON, or null when it has none (an empty body, a proxy's HTML page). */
function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

const unreachable = () =>
  new ApiError(0, { message: 'The service cannot be reached; check the connection and try again.' });

/** A query string from the defined, non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * A multipart upload with progress (`onProgress(fraction)`): XMLHttpRequest, because fetch
 * reports no upload progress. The browser streams the file from disk.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress?.(e.loaded / e.total);
    };
    xhr.onload = () => {
      const json = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) resolve(json);
      else reject(failed(xhr.status, json));
    };
    xhr.onerror = () => reject(new ApiError(0, { message: 'The upload did not reach the service; try again.' }));
    xhr.send(form);
  });
}

/**
 * Saves a file of the API (`v1/files/{id}/content`) under `filename`: fetched with the key into
 * a Blob, handed to the browser's download through an object URL. The browser holds the whole
 * file while it does; fine for a dashboard, where scripts stream with the API instead.
 */
export async function downloadFile(fileId, filename) {
  let res;
  try {
    res = await fetch(`v1/files/${encodeURIComponent(fileId)}/content`, {
      headers: authHeaders(),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw unreachable();
  }
  if (!res.ok) throw failed(res.status, parseJson(await res.text()));
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own copy once started; the object URL only pins memory after that.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
