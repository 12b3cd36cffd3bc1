/**
 * The one catalog of error codes. Every code the HTTP API answers is here with its status (the
 * first one is the default; a code answered with more than one status lists them all) and a
 * meaning; every code a batch reports (in `errors.data[]`, or on a line of its error file) is in
 * BATCH_ERRORS. The README's tables are checked against both by a test.
 */
export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'rate_limit_error'
  | 'server_error';

export interface HttpErrorSpec {
  statuses: readonly [number, ...number[]];
  description: string;
}

export const HTTP_ERRORS = {
  // 400: the request itself is wrong.
  invalid_json: { statuses: [400], description: 'the body is not valid JSON' },
  invalid_request: { statuses: [400], description: 'the request could not be read' },
  invalid_value: { statuses: [400], description: 'a value is not allowed (e.g. a NUL character)' },
  invalid_body: { statuses: [400], description: 'the body is not a JSON object' },
  invalid_field: { statuses: [400], description: 'a field of an admin body has the wrong type or range' },
  invalid_query: { statuses: [400], description: 'a query parameter was given more than once' },
  invalid_limit: { statuses: [400], description: '`limit` is out of range' },
  invalid_status: { statuses: [400], description: '`status` is not a batch status' },
  invalid_cursor: {
    statuses: [400],
    description:
      "`after` is not one of your items of that list (batches, files, webhooks, deliveries), or not a `next_cursor` of a batch's image list",
  },
  invalid_id: { statuses: [400], description: 'an admin id is not a positive whole number' },
  invalid_model_id: { statuses: [400], description: 'a model id has characters other than a-z, 0-9, `.` and `-`' },
  invalid_name: { statuses: [400], description: 'a user name is empty or longer than 200 characters' },
  invalid_quota: { statuses: [400], description: 'a quota amount is not a whole number in range' },
  invalid_multipart: { statuses: [400], description: 'the multipart body cannot be read' },
  missing_purpose: { statuses: [400], description: 'an upload has no `purpose`' },
  invalid_purpose: {
    statuses: [400],
    description:
      '`purpose` is not one the endpoint takes (`/v1/image-files`: `vision`, `image_batch`; `/v1/files`: `batch`, `vision`)',
  },
  missing_file: { statuses: [400], description: 'an upload has no `file`' },
  unexpected_file_field: { statuses: [400], description: 'a file was sent in a field other than `file`' },
  too_many_files: { statuses: [400], description: 'more than one file in an upload' },
  too_many_fields: { statuses: [400], description: 'too many form fields' },
  too_many_parts: { statuses: [400], description: 'too many multipart parts' },
  field_too_long: { statuses: [400], description: 'a form field value is too long' },
  empty_file: { statuses: [400], description: 'the uploaded file is empty' },
  invalid_image: {
    statuses: [400],
    description: 'a vision file is not a readable PNG, JPEG or WebP of 1 to 16384 pixels a side',
  },
  invalid_image_url: {
    statuses: [400],
    description:
      'an image URL could not be fetched: unreachable, refused (private address), too large (`VISION_MAX_BYTES`), timed out, or not a PNG, JPEG or WebP',
  },
  invalid_metadata: { statuses: [400], description: '`metadata` breaks OpenAI’s rules (16 pairs, 64/512 characters)' },
  invalid_expires_after: {
    statuses: [400],
    description: '`expires_after` / `output_expires_after` is not `created_at` with 3600–2592000 seconds',
  },
  invalid_order: { statuses: [400], description: '`order` is not `asc` or `desc`' },
  missing_required_parameter: { statuses: [400], description: 'a required field of the body is missing' },
  unknown_parameter: { statuses: [400], description: 'a body field this endpoint does not take' },
  invalid_endpoint: {
    statuses: [400],
    description: '`endpoint` is not one this service runs (`/v1/images/generations`, `/v1/images/edits`)',
  },
  invalid_completion_window: { statuses: [400], description: '`completion_window` is not `24h`' },
  invalid_input_file: { statuses: [400], description: '`input_file_id` is not a JSONL uploaded for a batch' },
  invalid_idempotency_key: {
    statuses: [400],
    description: 'the `Idempotency-Key` header is empty, too long or not printable ASCII',
  },
  invalid_webhook_url: {
    statuses: [400],
    description: 'a webhook URL is not http(s), or points at a loopback, private, link-local or metadata address',
  },
  invalid_events: {
    statuses: [400],
    description:
      '`events` is not a non-empty list of `batch.completed`, `batch.failed`, `batch.cancelled`, `batch.expired`',
  },
  invalid_type: { statuses: [400], description: 'an image request field has the wrong JSON type' },
  invalid_prompt: { statuses: [400], description: 'the prompt is empty, invisible or longer than the model takes' },
  unsupported_size: { statuses: [400], description: 'a size, aspect ratio or tier the model cannot make' },
  too_many_reference_images: { statuses: [400], description: 'more reference images than the model takes' },
  conflicting_parameters: { statuses: [400], description: '`image_file_id` and `image_file_ids` together' },
  content_blocked: {
    statuses: [400],
    description: 'the model’s safety filters refused every image of a sync request (quota returned)',
  },
  invalid_index: { statuses: [400], description: '`index` is not the index of one of the job’s images' },
  privacy_not_accepted: {
    statuses: [403, 400],
    description: 'a batch upload before the privacy policy was accepted (403); a PUT without `{"accept": true}` (400)',
  },
  // 401/403: who is asking.
  missing_api_key: { statuses: [401], description: 'no `Authorization: Bearer sk-…` header' },
  invalid_api_key: { statuses: [401], description: 'the API key is unknown or revoked' },
  missing_admin_token: { statuses: [401], description: 'an admin call without a bearer token' },
  invalid_admin_token: { statuses: [401], description: 'the admin token is wrong' },
  invalid_metrics_token: {
    statuses: [401],
    description:
      '`/metrics` without `Authorization: Bearer $METRICS_TOKEN` (only when that is set), or with a wrong one',
  },
  admin_disabled: { statuses: [403], description: 'the admin API is off (`ADMIN_TOKEN` unset)' },
  invalid_link: { statuses: [403], description: 'an image link was altered or has expired' },
  // 404: not there (or not yours: another tenant's things are indistinguishable from missing ones).
  route_not_found: { statuses: [404], description: 'no such route' },
  batch_not_found: { statuses: [404], description: 'no such batch of yours' },
  file_not_found: { statuses: [404], description: 'no such file of yours' },
  user_not_found: { statuses: [404], description: 'no such user (admin)' },
  api_key_not_found: { statuses: [404], description: 'no such key of that user (admin)' },
  webhook_not_found: { statuses: [404], description: 'no such webhook endpoint of yours' },
  job_not_found: { statuses: [404], description: 'no such image job of yours' },
  model_not_found: { statuses: [404], description: 'the model does not exist or is disabled' },
  // 409: the state forbids it.
  batch_not_cancellable: { statuses: [409], description: 'the batch is finalizing or finished' },
  batch_not_finished: { statuses: [409], description: 'only a finished batch can be deleted' },
  job_not_cancellable: {
    statuses: [409],
    description: 'the image job has finished, or is a sync request (it ends with its HTTP call)',
  },
  file_in_use: { statuses: [409], description: 'the file is the input of a batch that has not finished' },
  idempotency_key_in_use: { statuses: [409], description: 'a request with this `Idempotency-Key` is still running' },
  idempotency_key_reused: {
    statuses: [422],
    description: 'this `Idempotency-Key` was used for a different request in the last 24 h',
  },
  // 402/429: what the account may spend or run now.
  insufficient_quota: { statuses: [402], description: 'the request costs more than the quota left; nothing charged' },
  rate_limit_exceeded: {
    statuses: [429],
    description: 'more sync image requests at once than `USER_MAX_CONCURRENT_REQUESTS`; retry after `Retry-After`',
  },
  // 413/415/416: size, type and range of what was sent or asked for.
  file_too_large: { statuses: [413], description: 'the file is over `VISION_MAX_BYTES` / `BATCH_UPLOAD_MAX_BYTES`' },
  body_too_large: {
    statuses: [413],
    description: 'the JSON body is over 256 KB (a task submit: 256 KB more than VISION_MAX_BYTES in base64)',
  },
  invalid_content_type: { statuses: [415], description: 'an upload that is not multipart/form-data' },
  range_not_satisfiable: { statuses: [416], description: 'the `Range` is outside the file' },
  // 5xx: ours.
  internal_error: { statuses: [500], description: 'an unexpected failure (logged)' },
  upstream_error: {
    statuses: [502],
    description: 'Vertex AI failed every image of a sync request (after retries); quota returned',
  },
  timeout: { statuses: [504], description: 'a sync request ran past `SYNC_TIMEOUT_MS`; quota returned' },
  service_unavailable: {
    statuses: [503],
    description: 'the database is unreachable; retry after `Retry-After` seconds',
  },
} as const satisfies Record<string, HttpErrorSpec>;

export type HttpErrorCode = keyof typeof HTTP_ERRORS;

/** Where a batch error code appears. */
export type BatchErrorWhere = 'line' | 'batch' | 'result';

export const BATCH_ERRORS = {
  // A line of the input file (errors.data[], with `line` and `param`): the batch fails, nothing is charged.
  invalid_encoding: { where: 'line', description: 'not UTF-8 (a UTF-16 or compressed file is one error at line 1)' },
  invalid_json: { where: 'line', description: 'the line is not JSON' },
  invalid_line: { where: 'line', description: 'the line is not a batch request object' },
  line_too_long: { where: 'line', description: 'the line is over 1 MiB' },
  missing_custom_id: { where: 'line', description: '`custom_id` is missing' },
  invalid_custom_id: { where: 'line', description: '`custom_id` is not a string of 1–256 characters' },
  duplicate_custom_id: { where: 'line', description: '`custom_id` repeats an earlier line’s' },
  invalid_method: { where: 'line', description: '`method` is not `POST`' },
  invalid_url: {
    where: 'line',
    description: '`url` is not the batch’s `endpoint` (`/v1/images/generations` or `/v1/images/edits`)',
  },
  missing_required_parameter: { where: 'line', description: 'a required body field is missing' },
  unknown_parameter: { where: 'line', description: 'a body field we do not know (never billed as a default)' },
  invalid_type: { where: 'line', description: 'a body field has the wrong JSON type' },
  invalid_value: { where: 'line', description: 'a body field has a value out of range' },
  conflicting_parameters: { where: 'line', description: '`image_file_id` and `image_file_ids` together' },
  model_not_found: { where: 'line', description: 'the model does not exist or is disabled' },
  model_mismatch: { where: 'line', description: 'a second model in one batch' },
  unsupported_size: { where: 'line', description: 'a size, aspect ratio or tier the model cannot make' },
  invalid_prompt: { where: 'line', description: 'the prompt is empty, invisible or too long' },
  too_many_reference_images: { where: 'line', description: 'more reference images than the model takes' },
  file_not_found: { where: 'line', description: 'a referenced file is not one of your vision files' },
  too_many_requests: { where: 'line', description: 'more lines than `BATCH_MAX_REQUESTS`' },
  empty_file: { where: 'line', description: 'the file holds no request' },
  too_many_errors: { where: 'batch', description: 'how many errors were not listed' },
  // The batch as a whole (errors.data[], `line` null).
  insufficient_quota: { where: 'batch', description: 'the batch costs more than the quota left; nothing charged' },
  internal_error: {
    where: 'batch',
    description: 'a pipeline step kept failing the same way; the batch failed and what was not delivered is refunded',
  },
  vertex_job_failed: { where: 'batch', description: 'a Vertex job for some of the requests failed' },
  vertex_job_expired: { where: 'batch', description: 'a Vertex job expired in Vertex’s queue' },
  // A line of the error file.
  image_generation_failed: { where: 'result', description: 'Vertex failed to make the images of that line' },
  content_blocked: { where: 'result', description: 'the model’s safety filters refused the prompt or image' },
  missing_prediction: { where: 'result', description: 'cancelled, expired or failed before the image was made' },
  partial_failure: { where: 'result', description: 'some of the line’s `n` images were made (they are in the output)' },
} as const satisfies Record<string, { where: BatchErrorWhere; description: string }>;

export type BatchErrorCode = keyof typeof BATCH_ERRORS;

const TYPE_BY_STATUS: Record<number, ErrorType> = {
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'conflict_error',
  429: 'rate_limit_error',
};

/** The OpenAI error `type` that goes with a status. */
export function errorType(status: number): ErrorType {
  return TYPE_BY_STATUS[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
}
