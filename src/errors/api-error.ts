import { type ErrorType, errorType, HTTP_ERRORS, type HttpErrorCode } from './codes.ts';

/**
 * The one error type of the service. Anything a client can cause is an ApiError with a code of
 * the catalog (which gives its HTTP status); the HTTP layer renders it as the OpenAI envelope
 * `{"error": {"message", "type", "code", "param"}}`.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: HttpErrorCode;
  readonly param: string | null;
  readonly type: ErrorType;
  /** Headers the answer must carry, e.g. `Content-Range` on a 416 or `Retry-After` on a 503. */
  headers: Record<string, string> = {};

  /** `status` only for a code the catalog lists with more than one (the first is the default). */
  constructor(code: HttpErrorCode, message: string, param: string | null = null, status?: number) {
    super(message);
    const statuses: readonly number[] = HTTP_ERRORS[code].statuses;
    if (status !== undefined && !statuses.includes(status)) throw new Error(`${code} is never answered ${status}`);
    this.name = 'ApiError';
    this.code = code;
    this.status = status ?? statuses[0];
    this.param = param;
    this.type = errorType(this.status);
  }

  withHeaders(headers: Record<string, string>): this {
    this.headers = { ...this.headers, ...headers };
    return this;
  }

  toBody() {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

export const notFound = (
  what: 'batch' | 'file' | 'user' | 'api_key' | 'webhook' | 'job',
  id: string | number,
  param: string | null = null,
) => new ApiError(`${what}_not_found`, `No ${what.replace('_', ' ')} found with id '${id}'.`, param);
