/**
 * The one error type of the service. Anything a client can cause is an ApiError with
 * an HTTP status and a stable code; the HTTP layer renders it as the OpenAI envelope
 * `{"error": {"message", "type", "code", "param"}}`.
 */
export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'rate_limit_error'
  | 'insufficient_quota'
  | 'server_error';

const typeByStatus: Record<number, ErrorType> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  405: 'invalid_request_error',
  409: 'conflict_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
  416: 'invalid_request_error',
  429: 'rate_limit_error',
};

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly param: string | null;
  readonly type: ErrorType;
  /** Headers the answer must carry, e.g. `Content-Range` on a 416. */
  headers: Record<string, string> = {};

  constructor(status: number, code: string, message: string, param: string | null = null, type?: ErrorType) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.param = param;
    this.type = type ?? typeByStatus[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
  }

  withHeaders(headers: Record<string, string>): this {
    this.headers = { ...this.headers, ...headers };
    return this;
  }

  toBody() {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

export const badRequest = (code: string, message: string, param: string | null = null) =>
  new ApiError(400, code, message, param);

export const notFound = (what: string, id: string, param: string | null = null) =>
  new ApiError(404, `${what}_not_found`, `No ${what} found with id '${id}'.`, param);
