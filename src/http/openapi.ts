import fs from 'node:fs';
import { BATCH_ENDPOINTS } from '../batches/batch-service.ts';
import { BATCH_STATUSES } from '../batches/batch-states.ts';
import { BATCH_ERRORS, errorType, HTTP_ERRORS, type HttpErrorCode } from '../errors/codes.ts';
import { FILE_PURPOSES } from '../files/file-queries.ts';
import { IMAGE_JOB_STATUSES } from '../images/image-job-queries.ts';
import { WEBHOOK_EVENTS } from '../webhooks/webhook-queries.ts';

/**
 * The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` and rendered at
 * `GET /docs`. It is built from the code's own lists (error catalog, statuses, purposes, events,
 * the image request schema) so those cannot drift, and the tests hold every answer the service
 * gives against it: response objects are closed (`additionalProperties: false`), so a field the
 * document does not name fails a test, as does a status or route it does not list.
 *
 * Adding a route: add its path below (`paths`), with its answers; the route coverage test fails
 * until the document and the app agree.
 */

type Schema = Record<string, unknown>;

// ---- schema helpers ---------------------------------------------------------------------------

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const str = (description?: string, extra: Schema = {}): Schema => ({
  type: 'string',
  ...(description ? { description } : {}),
  ...extra,
});
const int = (description?: string, extra: Schema = {}): Schema => ({
  type: 'integer',
  ...(description ? { description } : {}),
  ...extra,
});
const bool = (description?: string): Schema => ({ type: 'boolean', ...(description ? { description } : {}) });
const constant = (value: unknown, description?: string): Schema => ({
  const: value,
  ...(description ? { description } : {}),
});
const oneOfValues = (values: readonly unknown[], description?: string): Schema => ({
  enum: [...values],
  ...(description ? { description } : {}),
});
const unix = (description = 'Unix time, seconds.') => int(description);
const array = (items: Schema, extra: Schema = {}): Schema => ({ type: 'array', items, ...extra });

/** The same schema, or null. */
function nullable(s: Schema): Schema {
  if (typeof s.type === 'string') {
    return { ...s, type: [s.type, 'null'], ...(Array.isArray(s.enum) ? { enum: [...s.enum, null] } : {}) };
  }
  if ('enum' in s) return { ...s, enum: [...(s.enum as unknown[]), null] };
  return { anyOf: [s, { type: 'null' }] };
}

/** A closed object: every property required unless listed in `optional`, no other property allowed. */
function obj(properties: Record<string, Schema>, opts: { optional?: string[]; description?: string } = {}): Schema {
  const optional = opts.optional ?? [];
  return {
    type: 'object',
    ...(opts.description ? { description: opts.description } : {}),
    properties,
    required: Object.keys(properties).filter((k) => !optional.includes(k)),
    additionalProperties: false,
  };
}

/** OpenAI's list envelope (`first_id`, `last_id`, `has_more`), newest first unless told otherwise. */
const listOf = (item: string, description: string): Schema =>
  obj(
    {
      object: constant('list'),
      data: array(ref(item)),
      first_id: nullable(str('The id of the first item of this page.')),
      last_id: nullable(str('The id of the last item: pass it as `after` for the next page.')),
      has_more: bool('Whether there are more items after this page.'),
    },
    { description },
  );

/** The image request body, from the schema the batch lines are checked with. */
const IMAGE_REQUEST_SCHEMA: Schema = (() => {
  const file = JSON.parse(
    fs.readFileSync(new URL('../../schemas/image-request.schema.json', import.meta.url), 'utf8'),
  ) as Schema;
  const { $schema: _s, $id: _i, $comment: _c, title: _t, ...schema } = file;
  return schema;
})();

// ---- errors ----------------------------------------------------------------------------------

const HTTP_CODES = Object.keys(HTTP_ERRORS) as HttpErrorCode[];
const ERROR_STATUSES: number[] = [...new Set(HTTP_CODES.flatMap((c) => [...HTTP_ERRORS[c].statuses]))].sort(
  (a, b) => a - b,
);
const codesAnswered = (status: number) =>
  HTTP_CODES.filter((c) => (HTTP_ERRORS[c].statuses as readonly number[]).includes(status));

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad request',
  401: 'Unauthorized',
  402: 'Payment required: not enough quota',
  403: 'Forbidden',
  404: 'Not found',
  409: 'Conflict',
  413: 'Too large',
  415: 'Unsupported media type',
  416: 'Range not satisfiable',
  422: 'Unprocessable',
  429: 'Too many requests',
  500: 'Internal error',
  502: 'Upstream error',
  503: 'Unavailable',
  504: 'Timeout',
};

/** The headers some error answers carry. */
const ERROR_HEADERS: Record<number, Record<string, Schema>> = {
  416: { 'Content-Range': { $ref: '#/components/headers/ContentRange' } },
  429: { 'Retry-After': { $ref: '#/components/headers/RetryAfter' } },
  503: { 'Retry-After': { $ref: '#/components/headers/RetryAfter' } },
};

/** An error envelope whose code is one the catalog answers with `status`. */
function errorEnvelope(status: number, task: boolean): Schema {
  const codes = codesAnswered(status);
  if (task) {
    return obj({
      code: oneOfValues(codes),
      message: str(),
      data: { type: 'null' },
    });
  }
  return obj({
    error: obj({
      message: str('What went wrong, for a person to read.'),
      type: constant(errorType(status)),
      code: oneOfValues(codes, 'A code of the error catalog.'),
      param: nullable(str('The parameter, field or header at fault, when there is one.')),
    }),
  });
}

function errorResponses(task: boolean): Record<string, Schema> {
  return Object.fromEntries(
    ERROR_STATUSES.map((status) => [
      `${task ? 'TaskError' : 'Error'}${status}`,
      {
        description: `${STATUS_TEXT[status] ?? 'Error'}: ${codesAnswered(status)
          .map((c) => `\`${c}\``)
          .join(', ')}.`,
        ...(ERROR_HEADERS[status] ? { headers: ERROR_HEADERS[status] } : {}),
        content: { 'application/json': { schema: errorEnvelope(status, task) } },
      },
    ]),
  );
}

// ---- operations ------------------------------------------------------------------------------

/** Who may call an operation, which fixes its security and the errors every call of the group can get. */
type Access = 'public' | 'client' | 'task' | 'admin' | 'link';

/**
 * Errors any call of a group can get before its handler runs: a bad query or body (400: NUL
 * characters, unreadable JSON, a malformed path), authentication (401; 403 admin off), a body too
 * large or in an unsupported charset (413, 415), and the server's own failures (500, 503 while
 * the database is unreachable).
 */
const COMMON_ERRORS: Record<Access, number[]> = {
  public: [],
  client: [400, 401, 413, 415, 500, 503],
  task: [400, 401, 413, 415, 500, 503],
  admin: [400, 401, 403, 413, 415, 500, 503],
  // No database behind a link: the object store unreachable is a 500, like any other failure.
  link: [400, 403, 404, 500],
};

const SECURITY: Record<Access, Array<Record<string, string[]>>> = {
  public: [],
  client: [{ apiKey: [] }],
  task: [{ apiKey: [] }],
  admin: [{ adminToken: [] }],
  link: [{ signedLink: [] }],
};

interface OperationSpec {
  id: string;
  tag: string;
  summary: string;
  description?: string;
  access: Access;
  parameters?: Schema[];
  body?: Schema;
  /** The successful answers, by status. */
  ok: Record<number, Schema>;
  /** Errors of this operation besides its group's, each with what it means here. */
  errors?: Record<number, string>;
  /** Answered with a fixed ETag: a matching `If-None-Match` gets a 304. */
  revalidated?: true;
}

function operation(spec: OperationSpec): Schema {
  const responses: Record<string, Schema> = {};
  for (const [status, response] of Object.entries(spec.ok)) responses[status] = response;
  const errors: Record<number, string | undefined> = { ...spec.errors };
  for (const status of COMMON_ERRORS[spec.access]) if (!(status in errors)) errors[status] = undefined;
  const prefix = spec.access === 'task' ? 'TaskError' : 'Error';
  for (const status of Object.keys(errors)
    .map(Number)
    .sort((a, b) => a - b)) {
    if (!ERROR_STATUSES.includes(status)) throw new Error(`no error code is answered with ${status}`);
    const description = errors[status];
    responses[status] = {
      $ref: `#/components/responses/${prefix}${status}`,
      ...(description ? { description } : {}),
    };
  }
  return {
    operationId: spec.id,
    tags: [spec.tag],
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    security: SECURITY[spec.access],
    ...(spec.parameters?.length ? { parameters: spec.parameters } : {}),
    ...(spec.body ? { requestBody: spec.body } : {}),
    responses,
  };
}

const json = (schema: Schema, description: string, headers?: Record<string, Schema>): Schema => ({
  description,
  ...(headers ? { headers } : {}),
  content: { 'application/json': { schema } },
});
const jsonBody = (schema: Schema, required = true): Schema => ({
  required,
  content: { 'application/json': { schema } },
});
const multipartBody = (schema: Schema): Schema => ({
  required: true,
  content: { 'multipart/form-data': { schema } },
});
const binary = (description: string): Schema => ({
  type: 'string',
  contentMediaType: 'application/octet-stream',
  description,
});

const pathParam = (name: string, description: string, schema: Schema = str()): Schema => ({
  name,
  in: 'path',
  required: true,
  description,
  schema,
});
const queryParam = (name: string, description: string, schema: Schema): Schema => ({
  name,
  in: 'query',
  required: false,
  description,
  schema,
});
const limitParam = (max: number, fallback: number) =>
  queryParam('limit', `How many items, 1–${max} (default ${fallback}).`, int(undefined, { minimum: 1, maximum: max }));
const afterParam = (what: string) => queryParam('after', `The id of the last ${what} of the previous page.`, str());
const IDEMPOTENCY_KEY = { $ref: '#/components/parameters/IdempotencyKey' };
const REPLAYED = { 'Idempotent-Replayed': { $ref: '#/components/headers/IdempotentReplayed' } };

/** Image content types of vision files and made images. */
const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp'];
const imageContent = Object.fromEntries(IMAGE_TYPES.map((t) => [t, {}]));

// ---- the document ----------------------------------------------------------------------------

export interface OpenApiOptions {
  /** PUBLIC_URL: the server the document names; relative (`/`) when unset. */
  publicUrl: string | null;
}

export function buildOpenApi(opts: OpenApiOptions): Schema {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
    description: string;
  };
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'Image batch gateway',
      version: pkg.version,
      description: [
        `${pkg.description}.`,
        '',
        'Errors come as `{"error": {"message", "type", "code", "param"}}` (the task API: `{"code", "message", "data": null}`), with the status the error catalog gives the code. A method and path not listed here answer 404 `route_not_found` (after the authentication of their prefix).',
        '',
        'Times are unix seconds; amounts are whole quota units. Another user’s batch, file, job or webhook is a 404, as if it did not exist.',
      ].join('\n'),
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    servers: [{ url: opts.publicUrl ?? '/' }],
    tags: [
      { name: 'Batches', description: 'Image batches: upload a JSONL of image requests, poll, download the results.' },
      { name: 'Files', description: 'OpenAI’s Files API: batch inputs, reference images, outputs.' },
      { name: 'Images', description: 'Single images: sync, or async as image jobs.' },
      { name: 'Tasks', description: 'The submit/query task API, in its own envelope `{code, message, data}`.' },
      { name: 'Webhooks', description: 'Signed batch events.' },
      { name: 'Models', description: 'The models and their prices.' },
      { name: 'Privacy', description: 'The image batch privacy policy.' },
      { name: 'Links', description: 'Signed links to images (no API key: the link is the credential).' },
      { name: 'Admin', description: 'The operator’s API, behind `ADMIN_TOKEN`.' },
      { name: 'Meta', description: 'Health, readiness and this document.' },
    ],
    paths: paths(),
    components: components(),
  };
}

function components(): Schema {
  const errorCodes = HTTP_CODES;
  const userProps = {
    id: int('The user id.'),
    object: constant('user'),
    name: str(),
    quota: int('Quota units left.'),
    used_quota: int('Quota units spent.'),
    privacy_accepted_at: nullable(unix('When the privacy policy was accepted.')),
    created_at: unix(),
  };
  const imageRequest = structuredClone(IMAGE_REQUEST_SCHEMA);
  return {
    securitySchemes: {
      apiKey: {
        type: 'http',
        scheme: 'bearer',
        description: 'A user’s API key (`sk-…`), made with the admin API.',
      },
      adminToken: { type: 'http', scheme: 'bearer', description: 'The `ADMIN_TOKEN` of the deployment.' },
      signedLink: {
        type: 'apiKey',
        in: 'query',
        name: 'signature',
        description: 'The signature of a link, valid until its `expires`; the link as given is the credential.',
      },
    },
    parameters: {
      IdempotencyKey: {
        name: 'Idempotency-Key',
        in: 'header',
        required: false,
        description:
          'A repeat with the same key and request within 24 h gets the first answer again (`Idempotent-Replayed: true`); 1–255 printable ASCII characters.',
        schema: str(undefined, { pattern: '^[\\x21-\\x7e]{1,255}$' }),
      },
    },
    headers: {
      IdempotentReplayed: {
        description: '`true` when this is the kept answer of an earlier request with the same `Idempotency-Key`.',
        schema: constant('true'),
      },
      RetryAfter: {
        description: 'Seconds to wait before trying again.',
        schema: str(undefined, { pattern: '^\\d+$' }),
      },
      ContentRange: { description: 'The range sent, or `bytes */{size}` on a 416.', schema: str() },
      ImageJobId: {
        description: 'The image job that records this request and its bill (sent on its 400, 502 and 504 errors too).',
        schema: str(),
      },
    },
    responses: {
      NotModified: {
        description: 'Not modified: the answer is still the one whose `ETag` was sent in `If-None-Match`.',
      },
      ...errorResponses(false),
      ...errorResponses(true),
    },
    schemas: {
      Error: obj({
        error: obj({
          message: str(),
          type: oneOfValues([...new Set(ERROR_STATUSES.map(errorType))]),
          code: oneOfValues(errorCodes),
          param: nullable(str()),
        }),
      }),
      BatchError: obj(
        {
          code: oneOfValues(Object.keys(BATCH_ERRORS)),
          message: str(),
          param: nullable(str('The JSON path of the field at fault, e.g. `body.n`.')),
          line: nullable(int('The line of the input file (1-based); null for the batch as a whole.')),
        },
        { description: 'One problem of a failed batch.' },
      ),
      Batch: obj(
        {
          id: str(undefined, { pattern: '^batch_' }),
          object: constant('batch'),
          endpoint: oneOfValues(BATCH_ENDPOINTS),
          model: nullable(str('The model of the lines, once validated.')),
          errors: nullable(obj({ object: constant('list'), data: array(ref('BatchError')) })),
          input_file_id: str(),
          completion_window: str(undefined, { examples: ['24h'] }),
          status: oneOfValues(BATCH_STATUSES),
          output_file_id: nullable(str('The output file; null while running or when no line succeeded.')),
          error_file_id: nullable(str('The error file; null while running or when no line failed.')),
          created_at: unix(),
          in_progress_at: nullable(unix()),
          expires_at: unix('When the batch expires unless finished.'),
          finalizing_at: nullable(unix()),
          completed_at: nullable(unix()),
          failed_at: nullable(unix()),
          expired_at: nullable(unix()),
          cancelling_at: nullable(unix()),
          cancelled_at: nullable(unix()),
          request_counts: obj({ total: int(), completed: int(), failed: int() }),
          metadata: nullable({ type: 'object', additionalProperties: str() }),
          billing: obj({
            pre_deducted: int('Quota units taken when the batch started.'),
            settled: nullable(int('What the batch cost, once finished.')),
            refunded: nullable(int('What was given back, once finished.')),
          }),
        },
        { description: 'The OpenAI batch object, plus `model` and `billing`.' },
      ),
      BatchList: listOf('Batch', 'Batches, newest first.'),
      BatchDeleted: obj({ id: str(), object: constant('batch.deleted'), deleted: constant(true) }),
      File: {
        ...obj(
          {
            id: str(undefined, { pattern: '^file_' }),
            object: constant('file'),
            purpose: oneOfValues(FILE_PURPOSES),
            filename: str(),
            bytes: int(),
            created_at: unix(),
            expires_at: nullable(unix('When the file is deleted; null: kept until deleted.')),
            status: constant('processed'),
            width: int('Pixel width (vision files).'),
            height: int('Pixel height (vision files).'),
          },
          {
            optional: ['width', 'height'],
            description: 'The OpenAI file object; vision files carry `width` and `height`.',
          },
        ),
        dependentRequired: { width: ['height'], height: ['width'] },
      },
      FileList: listOf('File', 'Files, newest first unless `order=asc`.'),
      FileDeleted: obj({ id: str(), object: constant('file'), deleted: constant(true) }),
      Model: obj({
        id: str('The name requests use in `model`.'),
        object: constant('model'),
        owned_by: constant('google'),
        vertex_model: str('The Vertex AI model resource.'),
        capabilities: obj({
          aspect_ratios: array(str()),
          image_sizes: array(str()),
          max_prompt_chars: int(),
          max_reference_images: int(),
        }),
        pricing: obj({
          unit: constant('quota_per_image'),
          sync: { type: 'object', description: 'Sync price of one image by size tier.', additionalProperties: int() },
          batch_ratio: { type: 'number', description: 'The batch discount (price × ratio).' },
        }),
        enabled: bool(),
      }),
      ModelList: obj({ object: constant('list'), data: array(ref('Model')) }),
      ImageRequest: {
        ...imageRequest,
        required: ['prompt'],
        description:
          'OpenAI’s image request plus `image_config` and reference `image_file_id(s)`; the body of a batch line. `model` defaults to the first enabled model.',
      },
      ImageUsage: obj({
        input_tokens: int(),
        output_tokens: int(),
        total_tokens: int(),
        input_tokens_details: obj({ text_tokens: int(), image_tokens: int() }),
      }),
      ImagesResponse: obj(
        {
          created: unix(),
          data: array({
            type: 'object',
            properties: {
              b64_json: str('The image, base64 (`response_format: b64_json`).'),
              url: str('A signed link to the image (`response_format: url`).', { format: 'uri' }),
              revised_prompt: str(),
            },
            oneOf: [{ required: ['b64_json'] }, { required: ['url'] }],
            additionalProperties: false,
          }),
          usage: ref('ImageUsage'),
        },
        { description: 'OpenAI’s images answer.' },
      ),
      ImageJob: obj(
        {
          id: str(undefined, { pattern: '^img_' }),
          object: constant('image_job'),
          status: oneOfValues(IMAGE_JOB_STATUSES),
          mode: oneOfValues(['sync', 'async']),
          operation: oneOfValues(['generation', 'edit']),
          model: str(),
          created_at: unix(),
          started_at: nullable(unix()),
          completed_at: nullable(unix()),
          expires_at: unix(),
          polling_url: str('Where to poll the job.', { format: 'uri' }),
          content_url: nullable(str('The first image (a 302 to a signed link), once there is one.', { format: 'uri' })),
          unsigned_urls: array(str(undefined, { format: 'uri' }), {
            description: 'Links to the images made (signed; the name is seed 002’s).',
          }),
          image_count: int('Images made.'),
          n: int('Images asked for.'),
          usage: obj({
            prompt_tokens: int(),
            completion_tokens: int(),
            cost_credits: int('Quota units: reserved while running, charged once ended.'),
          }),
          billing: obj({ pre_deducted: int(), settled: nullable(int()), refunded: nullable(int()) }),
          error: nullable(obj({ code: str(), message: nullable(str()) })),
        },
        { description: 'An image job: an async image request, or the record of a sync one.' },
      ),
      ImageJobList: listOf('ImageJob', 'Image jobs, newest first.'),
      TaskSubmitted: obj({ request_id: str(), job_id: str() }),
      TaskResult: {
        description: '`WAIT` while the job runs, `DONE` with links to the image, `FAIL` with why.',
        oneOf: [
          obj({ status: constant('WAIT'), created: unix() }),
          obj({
            status: constant('DONE'),
            created: unix(),
            data: array(obj({ url: str('A signed link to the image.', { format: 'uri' }) })),
          }),
          obj({ status: constant('FAIL'), created: unix(), error_message: str() }),
        ],
      },
      WebhookEndpoint: obj({
        id: str(undefined, { pattern: '^wh_' }),
        object: constant('webhook_endpoint'),
        url: str(undefined, { format: 'uri' }),
        events: array(oneOfValues(WEBHOOK_EVENTS)),
        created_at: unix(),
      }),
      WebhookEndpointWithSecret: obj({
        id: str(undefined, { pattern: '^wh_' }),
        object: constant('webhook_endpoint'),
        url: str(undefined, { format: 'uri' }),
        events: array(oneOfValues(WEBHOOK_EVENTS)),
        secret: str('The signing secret (`whsec_…`): shown only here.', { pattern: '^whsec_' }),
        created_at: unix(),
      }),
      WebhookEndpointList: listOf('WebhookEndpoint', 'Webhook endpoints, newest first, without secrets.'),
      WebhookEndpointDeleted: obj({ id: str(), object: constant('webhook_endpoint.deleted'), deleted: constant(true) }),
      WebhookDelivery: obj({
        id: str(undefined, { pattern: '^whdel_' }),
        object: constant('webhook_delivery'),
        endpoint_id: str(),
        event_id: str(),
        event_type: oneOfValues(WEBHOOK_EVENTS),
        batch_id: str(),
        status: oneOfValues(['pending', 'delivered', 'failed']),
        attempts: int(),
        last_status_code: nullable(int()),
        last_error: nullable(str()),
        next_attempt_at: nullable(unix()),
        delivered_at: nullable(unix()),
        created_at: unix(),
      }),
      WebhookDeliveryList: listOf('WebhookDelivery', 'Deliveries, newest first.'),
      PrivacyStatus: obj({ accepted: bool(), accepted_at: nullable(unix()) }),
      Success: obj({ success: constant(true) }),
      User: obj(userProps),
      NewUser: obj({ ...userProps, api_key: str('The key, shown once (stored hashed).') }),
      UserDetail: obj({
        ...userProps,
        ledger: obj(
          {
            quota: int('The quota now.'),
            log_sum: int('The sum of `quota_delta` over all the user’s billing log rows.'),
            log_count: int('How many log rows the user has.'),
            balanced: bool('`quota = log_sum`: every quota move has its log row (users start at 0).'),
          },
          { description: 'The ledger check, read in one snapshot.' },
        ),
        api_keys: array(
          obj({ id: int(), hint: str('The end of the key.'), created_at: unix(), revoked_at: nullable(unix()) }),
        ),
      }),
      UserList: obj(
        { object: constant('list'), data: array(ref('User')), has_more: bool() },
        { description: 'Users, newest (highest id) first.' },
      ),
      SystemStatus: obj({
        object: constant('system'),
        batches: obj(Object.fromEntries(BATCH_STATUSES.map((st) => [st, int()])), {
          description: 'Batches in each status (deleted ones left out), zeros included.',
        }),
        image_jobs: obj(Object.fromEntries(IMAGE_JOB_STATUSES.map((st) => [st, int()])), {
          description: 'Image jobs (sync requests too) in each status, zeros included.',
        }),
        queues: array(
          obj({
            name: str('The job queue, e.g. `batch-validate`.'),
            queued: int('Ready to run.'),
            active: int('Running.'),
            deferred: int('Waiting for a later start (retries, polls).'),
          }),
          { description: 'As the job queue last counted them (every `JOB_SUPERVISE_SECONDS`).' },
        ),
        vertex_jobs_in_flight: int('Vertex batch prediction jobs submitted and not yet ended.'),
        dead_jobs: int('Jobs in the dead-letter queue (`GET /admin/dead-jobs`).'),
      }),
      BatchImage: obj({
        object: constant('batch.image'),
        custom_id: str(),
        index: int('The image’s place in its line’s `response.body.data`, from 0.', { minimum: 0 }),
        url: str('A signed link to the image, usable without an API key (`IMAGE_URL_TTL`).', { format: 'uri' }),
        mime_type: str(),
      }),
      BatchImageList: obj(
        {
          object: constant('list'),
          data: array(ref('BatchImage')),
          has_more: bool(),
          next_cursor: nullable(str('Pass as `after` for the next page.')),
        },
        { description: 'A batch’s images, in output file order.' },
      ),
      NewApiKey: obj({ api_key: str('The key, shown once.') }),
      KeyRevoked: obj({ revoked: constant(true) }),
      BillingLog: obj({
        id: int(),
        user_id: int(),
        batch_id: nullable(str()),
        image_job_id: nullable(str()),
        model: nullable(str()),
        type: oneOfValues(['topup', 'pre_deduction', 'difference', 'adjustment']),
        quota_delta: int('The change of the user’s quota.'),
        content: str(),
        created_at: unix(),
      }),
      BillingLogList: obj({ object: constant('list'), data: array(ref('BillingLog')), has_more: bool() }),
      DeadJob: obj({
        id: str(),
        object: constant('dead_job'),
        job: str('The queue it failed in, e.g. `batch-validate`.'),
        data: { description: 'The job’s data.' },
        error: { description: 'The last error.' },
        retries: int(),
        failed_at: unix(),
      }),
      DeadJobList: obj({ object: constant('list'), data: array(ref('DeadJob')) }),
      Health: obj({ ok: constant(true) }),
      Readiness: obj({ ok: bool(), database: bool(), queue: bool() }),
    },
  };
}

function paths(): Record<string, Schema> {
  const p: Record<string, Schema> = {};
  const add = (path: string, method: string, spec: OperationSpec) => {
    const ok = spec.revalidated ? { ...spec.ok, 304: { $ref: '#/components/responses/NotModified' } } : spec.ok;
    p[path] = { ...p[path], [method]: operation({ ...spec, ok }) };
  };

  // ---- meta
  add('/healthz', 'get', {
    id: 'health',
    tag: 'Meta',
    summary: 'Liveness',
    access: 'public',
    ok: { 200: json(ref('Health'), 'The process answers.') },
  });
  add('/readyz', 'get', {
    id: 'readiness',
    tag: 'Meta',
    summary: 'Readiness',
    description: 'Whether Postgres and the job queue answer (each within 2 s).',
    access: 'public',
    ok: {
      200: json(ref('Readiness'), 'Ready.'),
      503: json(ref('Readiness'), 'Not ready: the check that failed is false.'),
    },
  });
  add('/metrics', 'get', {
    id: 'metrics',
    tag: 'Meta',
    summary: 'Prometheus metrics',
    description:
      'The Prometheus text format: HTTP timings, batches by status, pipeline step timings, Vertex calls, quota moved, queue depths and the process. When METRICS_TOKEN is set it needs `Authorization: Bearer <METRICS_TOKEN>`.',
    access: 'public',
    ok: {
      200: {
        description: 'The metrics.',
        content: { 'text/plain': { schema: str() } },
      },
    },
    errors: { 401: 'METRICS_TOKEN is set, and this is not it.' },
  });
  add('/openapi.json', 'get', {
    id: 'openapi',
    tag: 'Meta',
    summary: 'This document',
    access: 'public',
    ok: { 200: json({ type: 'object' }, 'The OpenAPI 3.1 document of the API.') },
    revalidated: true,
  });
  add('/docs', 'get', {
    id: 'docs',
    tag: 'Meta',
    summary: 'The API reference page',
    description: 'This document, rendered (Swagger UI, served by the gateway itself).',
    access: 'public',
    ok: { 200: { description: 'An HTML page.', content: { 'text/html': { schema: str() } } } },
    revalidated: true,
  });

  // ---- privacy
  add('/api/image-batch-privacy', 'get', {
    id: 'getPrivacy',
    tag: 'Privacy',
    summary: 'Whether the privacy policy was accepted',
    access: 'client',
    ok: { 200: json(ref('PrivacyStatus'), 'The acceptance.') },
  });
  add('/api/image-batch-privacy', 'put', {
    id: 'acceptPrivacy',
    tag: 'Privacy',
    summary: 'Accept the privacy policy',
    description: 'Once per user, before the first batch; accepting again changes nothing.',
    access: 'client',
    body: jsonBody(obj({ accept: constant(true) })),
    ok: { 200: json(ref('Success'), 'Accepted.') },
    errors: { 400: '`privacy_not_accepted` (anything but `{"accept": true}`), or a bad body.' },
  });

  // ---- uploads and batches
  const expiresAfterFields = {
    'expires_after[anchor]': constant('created_at'),
    'expires_after[seconds]': int('The file’s life, 3600–2592000 seconds.', { minimum: 3600, maximum: 2_592_000 }),
  };
  const uploadErrors = {
    400: 'The upload: `invalid_multipart`, `missing_purpose`, `invalid_purpose`, `missing_file`, `unexpected_file_field`, `too_many_files`, `empty_file`, `invalid_image`, `invalid_metadata`, `invalid_expires_after`, `invalid_idempotency_key`.',
    409: '`idempotency_key_in_use`: the first request with this key still runs.',
    413: '`file_too_large`: over `VISION_MAX_BYTES` / `BATCH_UPLOAD_MAX_BYTES`.',
    415: '`invalid_content_type`: not multipart/form-data.',
    422: '`idempotency_key_reused`: the key was used for a different request.',
  };
  add('/v1/image-files', 'post', {
    id: 'uploadImageFile',
    tag: 'Batches',
    summary: 'Upload a reference image, or a JSONL that creates a batch',
    description:
      '`purpose=vision`: a PNG, JPEG or WebP reference image (a file object). `purpose=image_batch`: a JSONL of image requests; the batch is created at once, in `validating`.',
    access: 'client',
    parameters: [IDEMPOTENCY_KEY],
    body: multipartBody(
      obj(
        {
          purpose: oneOfValues(['vision', 'image_batch']),
          file: binary('The image, or the JSONL.'),
          metadata: str('`image_batch`: a JSON object of up to 16 string pairs, kept on the batch.'),
          ...expiresAfterFields,
        },
        { optional: ['metadata', 'expires_after[anchor]', 'expires_after[seconds]'] },
      ),
    ),
    ok: {
      200: json(
        { oneOf: [ref('File'), ref('Batch')] },
        'The file object (`vision`) or the batch, in `validating` (`image_batch`).',
        REPLAYED,
      ),
    },
    errors: { ...uploadErrors, 403: '`privacy_not_accepted`: a batch before the privacy policy was accepted.' },
  });
  add('/v1/files', 'post', {
    id: 'uploadFile',
    tag: 'Files',
    summary: 'Upload a file (OpenAI’s first step)',
    description:
      '`purpose=batch`: a JSONL for a later `POST /v1/batches`; `purpose=vision`: a reference image, as on `/v1/image-files`.',
    access: 'client',
    parameters: [IDEMPOTENCY_KEY],
    body: multipartBody(
      obj(
        { purpose: oneOfValues(['batch', 'vision']), file: binary('The JSONL or image.'), ...expiresAfterFields },
        { optional: ['expires_after[anchor]', 'expires_after[seconds]'] },
      ),
    ),
    ok: { 200: json(ref('File'), 'The file object.', REPLAYED) },
    errors: uploadErrors,
  });
  add('/v1/files', 'get', {
    id: 'listFiles',
    tag: 'Files',
    summary: 'List your files',
    access: 'client',
    parameters: [
      queryParam('purpose', 'Only files of this purpose.', oneOfValues(FILE_PURPOSES)),
      limitParam(10_000, 10_000),
      afterParam('file'),
      queryParam('order', 'By creation time (default `desc`).', oneOfValues(['asc', 'desc'])),
    ],
    ok: { 200: json(ref('FileList'), 'A page of files.') },
    errors: { 400: '`invalid_purpose`, `invalid_limit`, `invalid_cursor`, `invalid_order`, `invalid_query`.' },
  });
  const fileId = pathParam('id', 'The file id.');
  add('/v1/files/{id}', 'get', {
    id: 'getFile',
    tag: 'Files',
    summary: 'A file',
    access: 'client',
    parameters: [fileId],
    ok: { 200: json(ref('File'), 'The file object.') },
    errors: { 404: '`file_not_found`.' },
  });
  add('/v1/files/{id}', 'delete', {
    id: 'deleteFile',
    tag: 'Files',
    summary: 'Delete a file and its bytes',
    access: 'client',
    parameters: [fileId],
    ok: { 200: json(ref('FileDeleted'), 'Deleted.') },
    errors: { 404: '`file_not_found`.', 409: '`file_in_use`: the input of a batch that has not finished.' },
  });
  const fileContent = Object.fromEntries(['application/jsonl', ...IMAGE_TYPES].map((t) => [t, {}]));
  const contentOk = (method: 'get' | 'head') => ({
    id: method === 'get' ? 'getFileContent' : 'headFileContent',
    tag: 'Files',
    summary: method === 'get' ? 'A file’s bytes' : 'A file’s size and type',
    description: 'Streamed, with `Content-Length`; a single `Range: bytes=a-b` is answered 206.',
    access: 'client' as const,
    parameters: [
      fileId,
      { name: 'Range', in: 'header', required: false, description: 'One byte range.', schema: str() },
    ],
    ok: {
      200: {
        description: 'The bytes.',
        content: fileContent,
      },
      206: {
        description: 'The range asked for.',
        headers: { 'Content-Range': { $ref: '#/components/headers/ContentRange' } },
        content: fileContent,
      },
    },
    errors: { 404: '`file_not_found`.', 416: '`range_not_satisfiable`.' },
  });
  add('/v1/files/{id}/content', 'get', contentOk('get'));
  add('/v1/files/{id}/content', 'head', contentOk('head'));

  add('/v1/batches', 'post', {
    id: 'createBatch',
    tag: 'Batches',
    summary: 'Create a batch from an uploaded file (OpenAI’s second step)',
    access: 'client',
    parameters: [IDEMPOTENCY_KEY],
    body: jsonBody(
      obj(
        {
          input_file_id: str('A file uploaded with purpose `batch` (or `image_batch`).'),
          endpoint: oneOfValues(BATCH_ENDPOINTS),
          completion_window: constant('24h'),
          metadata: nullable({
            type: 'object',
            maxProperties: 16,
            propertyNames: { maxLength: 64 },
            additionalProperties: str(undefined, { maxLength: 512 }),
          }),
          output_expires_after: obj({
            anchor: constant('created_at'),
            seconds: int(undefined, { minimum: 3600, maximum: 2_592_000 }),
          }),
        },
        { optional: ['metadata', 'output_expires_after'] },
      ),
    ),
    ok: { 200: json(ref('Batch'), 'The batch, in `validating`.', REPLAYED) },
    errors: {
      400: '`missing_required_parameter`, `unknown_parameter`, `invalid_input_file`, `invalid_endpoint`, `invalid_completion_window`, `invalid_metadata`, `invalid_expires_after`, `invalid_idempotency_key`, `invalid_body`.',
      403: '`privacy_not_accepted`.',
      404: '`file_not_found`: `input_file_id`.',
      409: '`idempotency_key_in_use`.',
      422: '`idempotency_key_reused`.',
    },
  });
  for (const base of ['/v1/batches', '/v1/image-batches']) {
    const tag = 'Batches';
    const name = base === '/v1/batches' ? 'Batch' : 'ImageBatch';
    const batchId = pathParam('id', 'The batch id.');
    add(base, 'get', {
      id: `list${name}es`,
      tag,
      summary: 'List your batches',
      access: 'client',
      parameters: [
        limitParam(100, 20),
        afterParam('batch'),
        queryParam('status', 'Only batches in this status.', oneOfValues(BATCH_STATUSES)),
      ],
      ok: { 200: json(ref('BatchList'), 'A page of batches, newest first.') },
      errors: { 400: '`invalid_limit`, `invalid_cursor`, `invalid_status`, `invalid_query`.' },
    });
    add(`${base}/{id}`, 'get', {
      id: `get${name}`,
      tag,
      summary: 'A batch',
      access: 'client',
      parameters: [batchId],
      ok: { 200: json(ref('Batch'), 'The batch.') },
      errors: { 404: '`batch_not_found`.' },
    });
    add(`${base}/{id}`, 'delete', {
      id: `delete${name}`,
      tag,
      summary: 'Delete a finished batch and its files',
      access: 'client',
      parameters: [batchId],
      ok: { 200: json(ref('BatchDeleted'), 'Deleted.') },
      errors: { 404: '`batch_not_found`.', 409: '`batch_not_finished`.' },
    });
    add(`${base}/{id}/images`, 'get', {
      id: `list${name}Images`,
      tag,
      summary: 'The images of a batch, with signed links',
      description:
        'One entry per image of the output file, in its order; `after` is the `next_cursor` of the page before (a page reads the file from there on). Empty while the batch has no output file.',
      access: 'client',
      parameters: [
        batchId,
        limitParam(100, 24),
        queryParam('after', 'The `next_cursor` of the previous page.', str()),
        queryParam('custom_id', 'Only this request’s images.', str()),
      ],
      ok: { 200: json(ref('BatchImageList'), 'A page of images.') },
      errors: { 400: '`invalid_limit`, `invalid_cursor`, `invalid_query`.', 404: '`batch_not_found`.' },
    });
    add(`${base}/{id}/cancel`, 'post', {
      id: `cancel${name}`,
      tag,
      summary: 'Cancel a batch',
      description:
        'The batch, `cancelling` (or `cancelled` straight from `validating`; the same batch again if already cancelling or cancelled).',
      access: 'client',
      parameters: [batchId],
      ok: { 200: json(ref('Batch'), 'The batch.') },
      errors: { 404: '`batch_not_found`.', 409: '`batch_not_cancellable`: finalizing or finished.' },
    });
  }

  // ---- webhooks
  const webhookId = pathParam('id', 'The webhook endpoint id.');
  add('/v1/webhooks', 'post', {
    id: 'createWebhook',
    tag: 'Webhooks',
    summary: 'Register a webhook endpoint',
    access: 'client',
    body: jsonBody(
      obj(
        {
          url: str('Where to POST the events (http or https, a public address).', { format: 'uri' }),
          events: array(oneOfValues(WEBHOOK_EVENTS), {
            minItems: 1,
            description: 'The events to send (default: all four).',
          }),
        },
        { optional: ['events'] },
      ),
    ),
    ok: { 200: json(ref('WebhookEndpointWithSecret'), 'The endpoint, with its secret (shown only here).') },
    errors: { 400: '`missing_required_parameter`, `invalid_webhook_url`, `invalid_events`, `invalid_body`.' },
  });
  add('/v1/webhooks', 'get', {
    id: 'listWebhooks',
    tag: 'Webhooks',
    summary: 'List your webhook endpoints',
    access: 'client',
    parameters: [limitParam(100, 20), afterParam('endpoint')],
    ok: { 200: json(ref('WebhookEndpointList'), 'A page of endpoints, newest first.') },
    errors: { 400: '`invalid_limit`, `invalid_cursor`, `invalid_query`.' },
  });
  add('/v1/webhooks/{id}', 'delete', {
    id: 'deleteWebhook',
    tag: 'Webhooks',
    summary: 'Delete a webhook endpoint (its pending deliveries stop)',
    access: 'client',
    parameters: [webhookId],
    ok: { 200: json(ref('WebhookEndpointDeleted'), 'Deleted.') },
    errors: { 404: '`webhook_not_found`.' },
  });
  add('/v1/webhooks/{id}/deliveries', 'get', {
    id: 'listWebhookDeliveries',
    tag: 'Webhooks',
    summary: 'An endpoint’s deliveries',
    access: 'client',
    parameters: [webhookId, limitParam(100, 20), afterParam('delivery')],
    ok: { 200: json(ref('WebhookDeliveryList'), 'A page of deliveries, newest first.') },
    errors: { 400: '`invalid_limit`, `invalid_cursor`, `invalid_query`.', 404: '`webhook_not_found`.' },
  });

  // ---- models
  add('/v1/models', 'get', {
    id: 'listModels',
    tag: 'Models',
    summary: 'The enabled models, their capabilities and prices',
    access: 'client',
    ok: { 200: json(ref('ModelList'), 'The models.') },
  });

  // ---- single images
  const asyncParam = queryParam(
    'async',
    '`true`: answer 202 with an image job at once, to poll at `/v1/jobs/{id}`.',
    oneOfValues(['true', 'false', '1', '0']),
  );
  const imageOk = {
    200: json(ref('ImagesResponse'), 'Sync: the images.', {
      'X-Image-Job-Id': { $ref: '#/components/headers/ImageJobId' },
    }),
    202: json(ref('ImageJob'), 'Async: the image job, `queued`.'),
  };
  const imageErrors = {
    400: 'The request: `invalid_body`, `invalid_type`, `invalid_value`, `missing_required_parameter`, `unknown_parameter`, `invalid_prompt`, `unsupported_size`, `too_many_reference_images`, `conflicting_parameters`, `invalid_query`; `content_blocked` (sync: the model refused every image; quota returned).',
    402: '`insufficient_quota`: nothing charged.',
    404: '`model_not_found`, `file_not_found` (an `image_file_id`).',
    429: '`rate_limit_exceeded`: too many sync requests at once.',
    502: '`upstream_error` (sync): Vertex AI failed every image; quota returned.',
    504: '`timeout` (sync): past `SYNC_TIMEOUT_MS`; quota returned.',
  };
  add('/v1/images/generations', 'post', {
    id: 'createImage',
    tag: 'Images',
    summary: 'Generate images (OpenAI’s images API)',
    access: 'client',
    parameters: [asyncParam],
    body: jsonBody(ref('ImageRequest')),
    ok: imageOk,
    errors: imageErrors,
  });
  const request = structuredClone(IMAGE_REQUEST_SCHEMA).properties as Record<string, Schema>;
  const { image_config: _config, ...formFields } = request;
  add('/v1/images/edits', 'post', {
    id: 'editImage',
    tag: 'Images',
    summary: 'Edit images (OpenAI’s images API, multipart)',
    description:
      'The images to edit in `image` (or `image[]`, up to 16), or as `image_file_ids` of your vision files; an optional `mask`. Numbers are sent as text.',
    access: 'client',
    parameters: [asyncParam],
    body: multipartBody({
      type: 'object',
      properties: {
        image: { oneOf: [binary('An image to edit.'), array(binary('An image to edit.'), { maxItems: 16 })] },
        'image[]': array(binary('An image to edit.'), { maxItems: 16 }),
        mask: binary('A mask image.'),
        ...formFields,
        'image_config[aspect_ratio]': (request.image_config as { properties: Record<string, Schema> }).properties
          .aspect_ratio,
        'image_config[image_size]': (request.image_config as { properties: Record<string, Schema> }).properties
          .image_size,
        input_fidelity: { ...oneOfValues(['low', 'high']), description: 'Accepted for OpenAI compatibility; ignored.' },
      },
      required: ['prompt'],
      additionalProperties: false,
    }),
    ok: imageOk,
    errors: {
      ...imageErrors,
      400: `${imageErrors[400]} The upload: \`invalid_multipart\`, \`unexpected_file_field\`, \`too_many_files\`, \`invalid_image\`.`,
      413: '`file_too_large`: an image over `VISION_MAX_BYTES`.',
      415: '`invalid_content_type`: not multipart/form-data.',
    },
  });

  // ---- image jobs
  const jobId = pathParam('id', 'The image job id.');
  add('/v1/jobs', 'get', {
    id: 'listImageJobs',
    tag: 'Images',
    summary: 'List your image jobs',
    access: 'client',
    parameters: [
      limitParam(100, 20),
      afterParam('job'),
      queryParam('status', 'Only jobs in this status.', oneOfValues(IMAGE_JOB_STATUSES)),
    ],
    ok: { 200: json(ref('ImageJobList'), 'A page of jobs, newest first.') },
    errors: { 400: '`invalid_limit`, `invalid_cursor`, `invalid_status`, `invalid_query`.' },
  });
  add('/v1/jobs/{id}', 'get', {
    id: 'getImageJob',
    tag: 'Images',
    summary: 'An image job',
    access: 'client',
    parameters: [jobId],
    ok: { 200: json(ref('ImageJob'), 'The job.') },
    errors: { 404: '`job_not_found`.' },
  });
  add('/v1/jobs/{id}/content', 'get', {
    id: 'getImageJobContent',
    tag: 'Images',
    summary: 'An image of a job',
    access: 'client',
    parameters: [jobId, queryParam('index', 'Which image (default 0).', int(undefined, { minimum: 0 }))],
    ok: {
      302: {
        description: 'A redirect to a fresh signed link to the image.',
        headers: { Location: { description: 'The signed link.', schema: str(undefined, { format: 'uri' }) } },
        content: { 'text/plain': { schema: str() }, 'text/html': { schema: str() } },
      },
    },
    errors: { 400: '`invalid_index`: no image at that index (yet).', 404: '`job_not_found`.' },
  });
  add('/v1/jobs/{id}/cancel', 'post', {
    id: 'cancelImageJob',
    tag: 'Images',
    summary: 'Cancel an async image job',
    description: 'The images made so far are kept and charged, the rest refunded. Cancelling twice is once.',
    access: 'client',
    parameters: [jobId],
    ok: { 200: json(ref('ImageJob'), 'The job, `cancelled`.') },
    errors: { 404: '`job_not_found`.', 409: '`job_not_cancellable`: finished, or a sync request.' },
  });

  // ---- the task API
  add('/v1/aiart/openai/image/submit', 'post', {
    id: 'submitTask',
    tag: 'Tasks',
    summary: 'Submit an image task',
    description: 'An async image job making one image, answered by URL. Errors come as `{code, message, data: null}`.',
    access: 'task',
    body: jsonBody({
      type: 'object',
      properties: {
        model: str(),
        prompt: str('Required unless `images` are given.'),
        images: array(str(), { description: 'Reference images: URLs or vision file ids.' }),
        mask: str('A mask: URL or vision file id.'),
        input_fidelity: str(),
        size: str(),
        quality: str(),
        background: str(),
        n: constant(1),
        output_format: oneOfValues(['png', 'jpeg', 'webp']),
        output_compression: int(undefined, { minimum: 0, maximum: 100 }),
        response_format: str(),
        logo_add: oneOfValues([0, 1]),
        logo_param: {},
        extra: obj({ image_config: request.image_config }, { optional: ['image_config'] }),
      },
      additionalProperties: false,
    }),
    ok: { 200: json(ref('TaskSubmitted'), 'The task, as an image job id.') },
    errors: {
      400: 'The request (as `POST /v1/images/generations`), or `invalid_image_url`: an image URL that could not be fetched.',
      402: '`insufficient_quota`.',
      404: '`model_not_found`, `file_not_found`.',
    },
  });
  add('/v1/aiart/openai/image/query', 'post', {
    id: 'queryTask',
    tag: 'Tasks',
    summary: 'Query an image task',
    access: 'task',
    body: jsonBody(obj({ job_id: str() })),
    ok: { 200: json(ref('TaskResult'), '`WAIT` while it runs, `DONE` with links, or `FAIL`.') },
    errors: { 400: '`invalid_request` (no `job_id`), `invalid_type`, `invalid_body`.', 404: '`job_not_found`.' },
  });

  // ---- signed links
  const linkOk = (method: 'get' | 'head') => ({
    id: method === 'get' ? 'getLink' : 'headLink',
    tag: 'Links',
    summary: method === 'get' ? 'The image behind a signed link' : 'The size and type of a signed link’s image',
    access: 'link' as const,
    parameters: [
      { ...pathParam('key', 'The object key: may hold `/`, sent as in the link.'), 'x-slashes': true },
      queryParam('expires', 'Unix seconds the link is valid until.', str()),
      queryParam('offset', 'A batch gallery link to an image inside an output line: the line’s byte offset.', str()),
      queryParam('index', 'With `offset`: the image’s place in the line.', str()),
    ],
    ok: {
      200: {
        description: 'The image, streamed.',
        headers: { 'Cache-Control': { description: 'Private, until the link expires.', schema: str() } },
        content: imageContent,
      },
    },
    errors: { 403: '`invalid_link`: altered or expired.', 404: '`file_not_found`: the image is gone.' },
  });
  add('/links/{key}', 'get', linkOk('get'));
  add('/links/{key}', 'head', linkOk('head'));

  // ---- admin
  const userId = pathParam('id', 'The user id.', int(undefined, { minimum: 0 }));
  add('/admin/users', 'post', {
    id: 'createUser',
    tag: 'Admin',
    summary: 'Create a user and its first API key',
    access: 'admin',
    body: jsonBody(
      obj(
        {
          name: str(undefined, { minLength: 1, maxLength: 200 }),
          quota: int('Starting quota (default 0).', { minimum: 0 }),
        },
        { optional: ['quota'] },
      ),
    ),
    ok: { 201: json(ref('NewUser'), 'The user, with its `api_key` (shown once).') },
    errors: { 400: '`invalid_name`, `invalid_quota`.' },
  });
  add('/admin/users', 'get', {
    id: 'listUsers',
    tag: 'Admin',
    summary: 'List users, newest first',
    access: 'admin',
    parameters: [
      limitParam(200, 50),
      queryParam('after', 'The id of the last user of the previous page (users with a lower id follow).', int()),
      queryParam('q', 'Only users whose name contains this (any case), or with this id.', str()),
    ],
    ok: { 200: json(ref('UserList'), 'A page of users.') },
    errors: { 400: '`invalid_limit`, `invalid_id`, `invalid_query`.' },
  });
  add('/admin/users/{id}', 'get', {
    id: 'getUser',
    tag: 'Admin',
    summary: 'A user: quota, privacy, key hints',
    access: 'admin',
    parameters: [userId],
    ok: { 200: json(ref('UserDetail'), 'The user.') },
    errors: { 400: '`invalid_id`.', 404: '`user_not_found`.' },
  });
  add('/admin/users/{id}/topup', 'post', {
    id: 'topUpUser',
    tag: 'Admin',
    summary: 'Add quota (logged as `topup`)',
    access: 'admin',
    parameters: [userId],
    body: jsonBody(obj({ quota: int(undefined, { minimum: 1 }) })),
    ok: { 200: json(ref('User'), 'The user after the top-up.') },
    errors: { 400: '`invalid_id`, `invalid_quota`.', 404: '`user_not_found`.' },
  });
  add('/admin/users/{id}/keys', 'post', {
    id: 'createApiKey',
    tag: 'Admin',
    summary: 'Issue another API key',
    access: 'admin',
    parameters: [userId],
    ok: { 201: json(ref('NewApiKey'), 'The key (shown once).') },
    errors: { 400: '`invalid_id`.', 404: '`user_not_found`.' },
  });
  add('/admin/users/{id}/keys/{keyId}', 'delete', {
    id: 'revokeApiKey',
    tag: 'Admin',
    summary: 'Revoke an API key',
    access: 'admin',
    parameters: [userId, pathParam('keyId', 'The key id.', int(undefined, { minimum: 0 }))],
    ok: { 200: json(ref('KeyRevoked'), 'Revoked.') },
    errors: { 400: '`invalid_id`.', 404: '`api_key_not_found`.' },
  });
  add('/admin/logs', 'get', {
    id: 'listBillingLogs',
    tag: 'Admin',
    summary: 'Billing log rows, oldest first',
    access: 'admin',
    parameters: [
      queryParam('user_id', 'Only this user’s rows.', int(undefined, { minimum: 0 })),
      queryParam('batch_id', 'Only this batch’s rows.', str()),
      queryParam('image_job_id', 'Only this image job’s rows.', str()),
      queryParam('after', 'The id of the last row of the previous page.', int(undefined, { minimum: 0 })),
      limitParam(1000, 100),
    ],
    ok: { 200: json(ref('BillingLogList'), 'A page of log rows.') },
    errors: { 400: '`invalid_id`, `invalid_limit`.' },
  });
  add('/admin/dead-jobs', 'get', {
    id: 'listDeadJobs',
    tag: 'Admin',
    summary: 'Pipeline jobs that used up their retries, newest first',
    access: 'admin',
    parameters: [limitParam(1000, 100)],
    ok: { 200: json(ref('DeadJobList'), 'The dead-letter queue.') },
    errors: { 400: '`invalid_limit`.' },
  });
  add('/admin/system', 'get', {
    id: 'getSystemStatus',
    tag: 'Admin',
    summary: 'Counts across the service: batches, image jobs, queues, Vertex jobs, dead jobs',
    access: 'admin',
    ok: { 200: json(ref('SystemStatus'), 'The counts.') },
  });
  add('/admin/models', 'get', {
    id: 'adminListModels',
    tag: 'Admin',
    summary: 'All models, enabled or not',
    access: 'admin',
    ok: { 200: json(ref('ModelList'), 'The models.') },
  });
  add('/admin/models/{id}', 'put', {
    id: 'putModel',
    tag: 'Admin',
    summary: 'Insert or edit a model',
    description:
      'Only the fields given change; a new model takes defaults for the rest (`vertex_model`: `publishers/google/models/{id}`).',
    access: 'admin',
    parameters: [pathParam('id', 'The model id.', str(undefined, { pattern: '^[a-z0-9][a-z0-9.-]{0,99}$' }))],
    body: jsonBody({
      type: 'object',
      properties: {
        vertex_model: str(),
        aspect_ratios: array(str(), { minItems: 1 }),
        image_sizes: array(str(), { minItems: 1 }),
        max_prompt_chars: { type: 'number', exclusiveMinimum: 0 },
        max_reference_images: { type: 'number', exclusiveMinimum: 0, maximum: 16 },
        base_prices: { type: 'object', additionalProperties: int(undefined, { minimum: 1 }) },
        price_multiplier: { type: 'number', exclusiveMinimum: 0, maximum: 1000 },
        batch_ratio: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
        enabled: bool(),
      },
    }),
    ok: { 200: json(ref('Model'), 'The model.') },
    errors: { 400: '`invalid_model_id`, `invalid_body`, `invalid_field`.' },
  });
  return p;
}
