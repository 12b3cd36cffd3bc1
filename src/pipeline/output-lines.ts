/**
 * The JSON text of the OpenAI batch output and error files, built as strings around the image
 * bytes so that base64 can be copied through without ever becoming a JS string.
 */

/** One failed image of a line. */
export interface ImageFailure {
  /** `image_generation_failed` | `content_blocked` | `missing_prediction`. */
  code: string;
  message: string;
  /** HTTP-like status for the OpenAI `response.status_code`; null when Vertex never answered. */
  statusCode: number | null;
}

/** Token usage summed over a line's successful images. */
export interface LineUsage {
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  textTokens: number;
  imageTokens: number;
}

/** Failure codes in order of precedence when a line's images failed for different reasons. */
const FAILURE_PRECEDENCE = ['content_blocked', 'image_generation_failed', 'missing_prediction'];

/**
 * Everything of a success line before the first image's base64:
 * `{"id":…,"custom_id":…,"response":{"status_code":200,"request_id":…,"body":{"created":…,"data":[{"b64_json":"`.
 */
export function successLineHead(id: string, customId: string, created: number): string {
  return `${successLineStart(id, customId, created)}{"b64_json":"`;
}

/** Between two images of the same line. */
export const IMAGE_SEPARATOR = '"},{"b64_json":"';

/** After the last image: usage, and `"error":null` (a partial line's shortfall goes to the error file). */
export function successLineTail(usage: LineUsage): string {
  return `"}${successLineEnd(usage)}`;
}

/** A whole success line of a url-mode request: `data` holds `{"url": …}` links instead of the images. */
export function linkedSuccessLine(
  id: string,
  customId: string,
  created: number,
  urls: string[],
  usage: LineUsage,
): string {
  const data = urls.map((url) => JSON.stringify({ url })).join(',');
  return `${successLineStart(id, customId, created)}${data}${successLineEnd(usage)}`;
}

/** Up to the opening bracket of `data`. */
function successLineStart(id: string, customId: string, created: number): string {
  return (
    `{"id":${JSON.stringify(id)},"custom_id":${JSON.stringify(customId)},` +
    `"response":{"status_code":200,"request_id":${JSON.stringify(requestIdFor(id))},` +
    `"body":{"created":${created},"data":[`
  );
}

/** From the closing bracket of `data` to the end of the line. */
function successLineEnd(usage: LineUsage): string {
  const u = {
    total_tokens: usage.totalTokens,
    input_tokens: usage.inputTokens,
    output_tokens: usage.outputTokens,
    input_tokens_details: { text_tokens: usage.textTokens, image_tokens: usage.imageTokens },
  };
  return `],"usage":${JSON.stringify(u)}}},"error":null}\n`;
}

/** The id of the upstream request as OpenAI's `request_id` shows it: derived from the line's id. */
export function requestIdFor(id: string): string {
  return `vertex_${id}`;
}

/** The code that stands for a set of failures: the most telling one. */
export function lineFailureCode(failures: ImageFailure[]): string {
  for (const code of FAILURE_PRECEDENCE) if (failures.some((f) => f.code === code)) return code;
  return failures[0]?.code ?? 'image_generation_failed';
}

/** "1 content_blocked (prompt blocked: SAFETY); 2 missing_prediction (…)". */
export function summarizeFailures(failures: ImageFailure[]): string {
  const byCode = new Map<string, { count: number; message: string }>();
  for (const f of failures) {
    const entry = byCode.get(f.code);
    if (entry) entry.count++;
    else byCode.set(f.code, { count: 1, message: f.message });
  }
  return [...byCode].map(([code, e]) => `${e.count} ${code} (${e.message})`).join('; ');
}

/**
 * The error-file line of a line whose every image failed. `response` mirrors what the upstream
 * answered (OpenAI's shape: status_code + error body); it is null when Vertex never answered.
 */
export function failedLine(id: string, customId: string, n: number, failures: ImageFailure[]): string {
  const code = lineFailureCode(failures);
  const representative = failures.find((f) => f.code === code)!;
  const message = n === 1 ? representative.message : `all ${n} images failed: ${summarizeFailures(failures)}`;
  const statusCode = representative.statusCode;
  const response =
    statusCode === null
      ? null
      : {
          status_code: statusCode,
          request_id: requestIdFor(id),
          body: { error: { message, type: statusCode < 500 ? 'invalid_request_error' : 'server_error', code } },
        };
  return `${JSON.stringify({ id, custom_id: customId, response, error: { code, message } })}\n`;
}

/**
 * The error-file line of a line with some images generated: the images are in the output file
 * under the same id; this line says how many of n are missing and why.
 */
export function partialLine(id: string, customId: string, n: number, failures: ImageFailure[]): string {
  const message = `${failures.length} of ${n} images failed: ${summarizeFailures(failures)}`;
  return `${JSON.stringify({ id, custom_id: customId, response: null, error: { code: 'partial_failure', message } })}\n`;
}
