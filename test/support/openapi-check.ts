import type http from 'node:http';
import type { ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { buildOpenApi } from '../../src/http/openapi.ts';

/**
 * Every answer a test service gives is held against the OpenAPI document: the method and path
 * must be documented (or answer one of the errors that come before routing), the status must be
 * one the operation lists, the content type one of that status's, and a JSON body must match its
 * schema (closed objects: an undocumented field fails). Streamed bodies (file content, images)
 * are checked for status and content type only.
 *
 * `startTestService` watches its server; test/support/openapi-setup.ts fails the test during
 * which a mismatch was seen.
 */

type Json = Record<string, any>;

export interface SeenResponse {
  method: string;
  /** The path as sent, without the query. */
  path: string;
  status: number;
  contentType: string | null;
  /** The body of a JSON answer (null for others, and for HEAD). */
  body: Buffer | null;
}

// ajv-formats is CommonJS with a default export: under native ESM it arrives one level down.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as unknown as (
  ajv: Ajv2020,
) => void;

const DOC_ID = 'https://image-batch-gateway.invalid/openapi.json';

/**
 * Paths the API owns: an answer under them that no documented route explains is a violation.
 * Everything else (the dashboard's page and files, /docs's assets) is only checked once the
 * document lists it.
 */
const API_PREFIXES = ['/v1/', '/api/', '/admin/', '/links/'];
const API_PATHS = ['/v1', '/api', '/admin', '/links', '/healthz', '/readyz', '/openapi.json', '/docs'];

/**
 * What an undocumented method and path may answer: route_not_found, or an error of what runs
 * before routing (authentication of the prefix, body parsing, the database being away).
 */
const BEFORE_ROUTING = new Set([
  'route_not_found',
  'missing_api_key',
  'invalid_api_key',
  'missing_admin_token',
  'invalid_admin_token',
  'admin_disabled',
  'invalid_json',
  'invalid_value',
  'invalid_request',
  'body_too_large',
  'invalid_content_type',
  'service_unavailable',
  'internal_error',
]);

interface Route {
  template: string;
  pattern: RegExp;
  item: Json;
}

export class OpenApiChecker {
  readonly document: Json;
  private readonly ajv: Ajv2020;
  private readonly routes: Route[];
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(document: Json = buildOpenApi({ publicUrl: null })) {
    this.document = document;
    this.ajv = new Ajv2020({ strict: true, strictRequired: false, allowUnionTypes: true, allErrors: true });
    addFormats(this.ajv);
    // The document's own keys, beside the schemas: known to ajv, so strict mode accepts them.
    this.ajv.addVocabulary(['openapi', 'info', 'servers', 'tags', 'paths', 'components', 'jsonSchemaDialect']);
    this.ajv.addSchema({ ...document, $id: DOC_ID });
    this.routes = Object.entries(document.paths as Json)
      .map(([template, item]) => ({ template, item, pattern: templatePattern(template, item) }))
      // Literal paths before templated ones of the same shape.
      .sort((a, b) => literalLength(b.template) - literalLength(a.template));
  }

  /** The documented route of a path, if any. */
  route(path: string): Route | undefined {
    return this.routes.find((r) => r.pattern.test(path));
  }

  /** What is wrong with one answer (nothing: an empty list). */
  check(seen: SeenResponse): string[] {
    const label = `${seen.method} ${seen.path} → ${seen.status}`;
    const method = seen.method.toLowerCase();
    const route = this.route(seen.path);
    // HEAD is GET without the body, unless documented on its own.
    const opMethod = method === 'head' && route && !route.item.head ? 'get' : method;
    const op: Json | undefined = route?.item[opMethod];
    if (!route || !op) {
      if (!route && !isApiPath(seen.path)) return [];
      return this.checkUndocumented(seen, label);
    }
    const at = `${opMethod.toUpperCase()} ${route.template}`;
    const responseRef = op.responses[String(seen.status)];
    if (!responseRef) return [`${label}: status ${seen.status} is not documented for ${at}`];
    const { response, pointer } = this.resolveResponse(
      responseRef,
      `#/paths/${pointerPart(route.template)}/${opMethod}/responses/${seen.status}`,
    );
    const content: Json | undefined = response.content;
    const mediaType = seen.contentType?.split(';')[0].trim().toLowerCase() || null;
    if (!content) {
      return mediaType === null ? [] : [`${label}: answered ${mediaType}, but ${at} ${seen.status} has no content`];
    }
    if (mediaType === null) {
      // A redirect may come without a body (what express sends when no type is acceptable).
      if (seen.status >= 300 && seen.status < 400 && !seen.body?.length) return [];
      return [`${label}: no Content-Type, expected ${Object.keys(content).join(' or ')}`];
    }
    if (!(mediaType in content)) {
      return [`${label}: Content-Type ${mediaType} is not documented (${Object.keys(content).join(', ')})`];
    }
    if (mediaType !== 'application/json' || seen.body === null || method === 'head') return [];
    return this.validateBody(seen.body, `${pointer}/content/application~1json/schema`, label);
  }

  private checkUndocumented(seen: SeenResponse, label: string): string[] {
    const undocumented = `${label}: ${seen.method} ${seen.path} is not in the OpenAPI document`;
    if (seen.status < 400 || seen.body === null) return [undocumented];
    let body: Json;
    try {
      body = JSON.parse(seen.body.toString('utf8'));
    } catch {
      return [undocumented];
    }
    const code = body?.error?.code ?? body?.code;
    if (!BEFORE_ROUTING.has(code)) return [`${undocumented} (answered ${code ?? 'something other than an error'})`];
    const envelope = body.error ? 'Error' : 'TaskError';
    return this.validateBody(
      seen.body,
      `#/components/responses/${envelope}${seen.status}/content/application~1json/schema`,
      label,
    );
  }

  private resolveResponse(response: Json, pointer: string): { response: Json; pointer: string } {
    if (typeof response.$ref !== 'string') return { response, pointer };
    const target = response.$ref as string;
    const resolved = target
      .slice(2)
      .split('/')
      .reduce((node: Json, part) => node?.[part.replaceAll('~1', '/').replaceAll('~0', '~')], this.document);
    return this.resolveResponse(resolved, target);
  }

  /** The validator of the schema at `pointer` (`#/components/…`) in the document, compiled once. */
  schemaAt(pointer: string): ValidateFunction {
    let validate = this.validators.get(pointer);
    if (!validate) {
      validate = this.ajv.compile({ $ref: `${DOC_ID}${pointer}` });
      this.validators.set(pointer, validate);
    }
    return validate;
  }

  private validateBody(body: Buffer, pointer: string, label: string): string[] {
    let value: unknown;
    try {
      value = JSON.parse(body.toString('utf8'));
    } catch {
      return [`${label}: the body is not JSON: ${body.toString('utf8').slice(0, 200)}`];
    }
    const validate = this.schemaAt(pointer);
    if (validate(value)) return [];
    const errors = (validate.errors ?? [])
      .slice(0, 8)
      .map((e) => `${e.instancePath || '(body)'} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`);
    return [`${label}: the body does not match ${pointer}:\n    ${errors.join('\n    ')}`];
  }
}

const pointerPart = (template: string) => template.replaceAll('~', '~0').replaceAll('/', '~1');

function isApiPath(path: string): boolean {
  return API_PATHS.includes(path) || API_PREFIXES.some((p) => path.startsWith(p));
}

/** `{name}` matches one path segment, or several when the parameter says `x-slashes`. */
function templatePattern(template: string, item: Json): RegExp {
  const slashes = new Set<string>();
  for (const op of Object.values(item) as Json[]) {
    for (const p of op.parameters ?? []) if (p['x-slashes']) slashes.add(p.name);
  }
  const source = template
    .split(/(\{[^}]+\})/)
    .map((part) => {
      const name = /^\{([^}]+)\}$/.exec(part)?.[1];
      if (name === undefined) return part.replace(/[.*+?^$()|[\]\\]/g, '\\$&');
      return slashes.has(name) ? '[^?#]+' : '[^/?#]+';
    })
    .join('');
  // Express matches a path with or without one trailing slash.
  return new RegExp(`^${source}/?$`);
}

const literalLength = (template: string) => template.replace(/\{[^}]+\}/g, '').length;

// ---- watching a server -----------------------------------------------------------------------

let shared: OpenApiChecker | null = null;
/** One checker per test file (compiled schemas are cached in it). */
export const checker = () => {
  shared ??= new OpenApiChecker();
  return shared;
};

/** Answers recorded but not yet checked, with the checker of the server that gave them. */
const recorded: Array<{ seen: SeenResponse; check: OpenApiChecker }> = [];

/** What is wrong with the answers recorded since the last call (and forgets them). */
export function takeViolations(): string[] {
  return recorded.splice(0).flatMap(({ seen, check }) => check.check(seen));
}

/** Throws when an answer recorded since the last check breaks the document (see takeViolations). */
export function assertNoViolations(): void {
  const violations = takeViolations();
  if (violations.length) {
    throw new Error(`Answers that break the OpenAPI document (src/http/openapi.ts):\n  ${violations.join('\n  ')}`);
  }
}

const isJson = (type: unknown) => typeof type === 'string' && /^application\/json\b/i.test(type);

/**
 * Records every answer `server` sends, as it sends it (so before the client can have read it,
 * and before the test that caused it goes on); takeViolations() checks them. The checking is
 * kept out of the answer's way, so it adds no latency to what a test measures.
 */
export function watchResponses(server: http.Server, check: OpenApiChecker = checker()): void {
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0];
    const chunks: Buffer[] = [];
    // Headers given to writeHead directly are not readable with getHeader: noted here.
    let headType: unknown;
    const contentType = () => res.getHeader('content-type') ?? headType;
    const collect = (chunk: unknown, encoding: unknown) => {
      if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
      if (!isJson(contentType())) return;
      if (typeof chunk === 'string') {
        chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'));
      } else chunks.push(Buffer.from(chunk as Uint8Array));
    };
    const writeHead = res.writeHead;
    const write = res.write;
    const end = res.end;
    res.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
      const headers = args.find((a) => typeof a === 'object' && a !== null);
      if (Array.isArray(headers)) {
        for (let i = 0; i + 1 < headers.length; i += 2) {
          if (String(headers[i]).toLowerCase() === 'content-type') headType = headers[i + 1];
        }
      } else if (headers) {
        for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === 'content-type') headType = v;
      }
      return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
    } as typeof res.writeHead;
    let ended = false;
    res.write = function (this: http.ServerResponse, chunk: unknown, ...rest: unknown[]) {
      collect(chunk, rest[0]);
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof res.write;
    res.end = function (this: http.ServerResponse, ...args: unknown[]) {
      if (!ended) {
        ended = true;
        collect(args[0], args[1]);
        const type = contentType();
        recorded.push({
          check,
          seen: {
            method,
            path,
            status: res.statusCode,
            contentType: typeof type === 'string' ? type : null,
            body: isJson(type) && method !== 'HEAD' ? Buffer.concat(chunks) : null,
          },
        });
      }
      return (end as (...a: unknown[]) => http.ServerResponse).apply(this, args);
    } as typeof res.end;
  });
}
