import fs from 'node:fs';
import type { Readable } from 'node:stream';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ModelInfo } from '../billing/model-catalog.ts';
import type { BatchErrorCode } from '../errors/codes.ts';
import { findStringPath } from '../json-path.ts';
import { checkAgainstModel } from '../vertex/request-rules.ts';
import { type ImageRequestBody, referencedFileIds } from '../vertex/translate.ts';
import { CustomIdSet } from './custom-id-set.ts';

export interface LineError {
  code: BatchErrorCode;
  message: string;
  param: string | null;
  /** 1-based physical line number in the file (blank lines count). */
  line: number;
}

export interface ValidationContext {
  /** Enabled models by id. */
  models: Map<string, ModelInfo>;
  /** BATCH_MAX_REQUESTS: more non-blank lines → one `too_many_requests` error. */
  maxRequests: number;
  /** Cap of the returned error list. */
  maxErrors: number;
  /** Of these file ids, which exist, are `vision` files, and belong to the caller. Called in chunks (≤ 1000 ids), never per line. */
  findOwnedVisionFiles(ids: string[]): Promise<Set<string>>;
  /** Longest accepted line in bytes (default 1 MiB); longer lines are reported, never buffered whole. */
  maxLineBytes?: number;
  /** The batch's endpoint: what a line's `url` must be (default `/v1/images/generations`). */
  endpoint?: string;
}

export interface ValidationResult {
  /** First maxErrors problems, in line order. */
  errors: LineError[];
  /** All problems, so the caller can say "and N more". */
  errorCount: number;
  /** Valid non-blank lines. */
  requestCount: number;
  /** Σ n over valid lines. */
  imageCount: number;
  /** The batch's single model (the first valid line's), or null when no line was valid. */
  model: string | null;
  /** Images per size tier ('1K', '2K', '4K') over valid lines: the pricing input. */
  imagesBySize: Record<string, number>;
}

export const DEFAULT_MAX_LINE_BYTES = 1024 * 1024;
/** Distinct file ids per findOwnedVisionFiles call. */
export const FILE_LOOKUP_CHUNK = 1000;
/** Referencing lines waiting for a lookup before one is forced, whatever the distinct id count. */
const MAX_PENDING_REFERENCES = 10_000;

const NEWLINE = 0x0a;
const CR = 0x0d;

let compiled: ValidateFunction | null = null;

/** The batch line schema (with the image request body schema it references), compiled once per process. */
export function compileBatchLineValidator(): ValidateFunction {
  if (compiled) return compiled;
  const readSchema = (name: string) =>
    JSON.parse(fs.readFileSync(new URL(`../../schemas/${name}`, import.meta.url), 'utf8')) as object;
  // allErrors off: the first problem of a line is enough, and stopping early is faster.
  // strictRequired off: the body schema's `not: {required: [a, b]}` (mutually exclusive keys) trips it.
  const ajv = new Ajv2020({ allErrors: false, strict: true, strictRequired: false });
  ajv.addSchema(readSchema('image-request.schema.json'));
  compiled = ajv.compile(readSchema('batch-line.schema.json'));
  return compiled;
}

/** A valid line whose file references are not confirmed yet: its counts come off if one is missing. */
interface PendingLine {
  line: number;
  n: number;
  tier: string;
  rejected: boolean;
}

interface PendingReference {
  pending: PendingLine;
  param: string;
}

interface BatchLine {
  custom_id: string;
  method?: string;
  url?: string;
  body: ImageRequestBody;
}

/**
 * Validate a whole JSONL batch input as it streams: memory stays flat (one line, the custom_id
 * set and a bounded batch of pending file references). One problem is reported per line — the
 * first found — except `file_not_found`, reported once per missing reference.
 */
export async function validateBatchInput(input: Readable, ctx: ValidationContext): Promise<ValidationResult> {
  const v = new BatchValidator(ctx);
  for await (const chunk of input) {
    v.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
    if (v.refusedWhole) break; // one error says it all; the rest is not read
    if (v.lookupDue()) await v.lookUpPendingFiles(false);
  }
  v.end();
  await v.lookUpPendingFiles(true);
  return v.result();
}

class BatchValidator {
  private readonly ctx: ValidationContext;
  private readonly validate: ValidateFunction;
  private readonly maxLineBytes: number;
  // Line splitting state.
  private lineNo = 0;
  private carry: Buffer[] = [];
  private carryLength = 0;
  private skippingLongLine = false;
  // Results.
  private errors: LineError[] = [];
  private errorCount = 0;
  private nonBlankLines = 0;
  private requestCount = 0;
  private imageCount = 0;
  private model: string | null = null;
  private imagesBySize: Record<string, number> = {};
  private readonly customIds = new CustomIdSet();
  // File references: confirmed, known missing, and waiting for the next lookup.
  private readonly ownedFiles = new Set<string>();
  private readonly missingFiles = new Set<string>();
  private pendingFiles = new Map<string, PendingReference[]>();
  private pendingReferences = 0;

  constructor(ctx: ValidationContext) {
    this.ctx = ctx;
    this.validate = compileBatchLineValidator();
    this.maxLineBytes = ctx.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  /** Split a chunk into lines by hand over the Buffer: cheaper than a string splitter + stream per line. */
  /** The file as a whole is not UTF-8 text (UTF-16, compressed): one error, nothing else read. */
  refusedWhole = false;
  /** The first bytes, until there are enough to recognise a file that is not UTF-8 at all. */
  private head: Buffer | null = Buffer.alloc(0);

  push(chunk: Buffer): void {
    if (this.refusedWhole) return;
    if (this.head) {
      const head = Buffer.concat([this.head, chunk]);
      if (head.length < 2) {
        this.head = head;
        return;
      }
      this.head = null;
      const problem = notUtf8File(head);
      if (problem) {
        this.refusedWhole = true;
        this.addError('invalid_encoding', problem, null, 1);
        return;
      }
      chunk = head;
    }
    this.splitLines(chunk);
  }

  private splitLines(chunk: Buffer): void {
    let start = 0;
    const length = chunk.length;
    while (start <= length) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl === -1) {
        this.keepPartialLine(chunk, start, length);
        return;
      }
      this.lineNo++;
      if (this.skippingLongLine) {
        this.skippingLongLine = false;
      } else if (this.carryLength === 0) {
        if (nl - start > this.maxLineBytes) this.lineTooLong(this.lineNo);
        else this.handleLine(chunk, start, nl);
      } else if (this.carryLength + (nl - start) > this.maxLineBytes) {
        this.dropCarry();
        this.lineTooLong(this.lineNo);
      } else {
        this.carry.push(chunk.subarray(start, nl));
        const whole = Buffer.concat(this.carry, this.carryLength + (nl - start));
        this.dropCarry();
        this.handleLine(whole, 0, whole.length);
      }
      start = nl + 1;
    }
  }

  /** The last line may lack a newline. */
  end(): void {
    if (this.refusedWhole) return;
    if (this.head?.length) this.splitLines(this.head);
    this.head = null;
    if (this.skippingLongLine) {
      this.skippingLongLine = false;
      this.lineNo++;
    } else if (this.carryLength > 0) {
      const whole = Buffer.concat(this.carry, this.carryLength);
      this.dropCarry();
      this.lineNo++;
      this.handleLine(whole, 0, whole.length);
    }
    if (this.nonBlankLines === 0) {
      this.addError('empty_file', 'the input file contains no requests', null, 1);
    }
  }

  lookupDue(): boolean {
    return this.pendingFiles.size >= FILE_LOOKUP_CHUNK || this.pendingReferences >= MAX_PENDING_REFERENCES;
  }

  /**
   * Resolve pending file references, ≤ FILE_LOOKUP_CHUNK distinct ids per call. Mid-stream only
   * full chunks go (fewer calls), unless too many lines wait; at the end everything goes.
   */
  async lookUpPendingFiles(all: boolean): Promise<void> {
    const drain = all || this.pendingReferences >= MAX_PENDING_REFERENCES;
    while (this.pendingFiles.size >= (drain ? 1 : FILE_LOOKUP_CHUNK)) {
      const batch = new Map<string, PendingReference[]>();
      for (const [id, lines] of this.pendingFiles) {
        batch.set(id, lines);
        this.pendingFiles.delete(id);
        if (batch.size === FILE_LOOKUP_CHUNK) break;
      }
      const owned = await this.ctx.findOwnedVisionFiles([...batch.keys()]);
      for (const [id, lines] of batch) {
        this.pendingReferences -= lines.length;
        if (owned.has(id)) {
          this.ownedFiles.add(id);
          continue;
        }
        this.missingFiles.add(id);
        for (const ref of lines) this.rejectForMissingFile(ref, id);
      }
    }
  }

  result(): ValidationResult {
    this.trimErrors();
    return {
      errors: this.errors,
      errorCount: this.errorCount,
      requestCount: this.requestCount,
      imageCount: this.imageCount,
      model: this.model,
      imagesBySize: this.imagesBySize,
    };
  }

  private keepPartialLine(chunk: Buffer, start: number, end: number): void {
    if (this.skippingLongLine || start === end) return;
    if (this.carryLength + (end - start) > this.maxLineBytes) {
      // Report now (at the line's number) and skip the rest of it: never buffer past the limit.
      this.dropCarry();
      this.lineTooLong(this.lineNo + 1);
      this.skippingLongLine = true;
      return;
    }
    this.carry.push(chunk.subarray(start, end));
    this.carryLength += end - start;
  }

  private dropCarry(): void {
    this.carry = [];
    this.carryLength = 0;
  }

  private lineTooLong(line: number): void {
    this.nonBlankLines++;
    if (this.overRequestLimit(line)) return;
    this.addError('line_too_long', `line is longer than ${this.maxLineBytes} bytes`, null, line);
  }

  private overRequestLimit(line: number): boolean {
    if (this.nonBlankLines <= this.ctx.maxRequests) return false;
    // Reported once, at the first line past the limit; later lines are only counted.
    if (this.nonBlankLines === this.ctx.maxRequests + 1) {
      this.addError('too_many_requests', `a batch holds at most ${this.ctx.maxRequests} requests`, null, line);
    }
    return true;
  }

  private handleLine(buf: Buffer, start: number, end: number): void {
    const line = this.lineNo;
    if (end > start && buf[end - 1] === CR) end--;
    // UTF-8 byte order mark at the start of the file.
    if (line === 1 && end - start >= 3 && buf[start] === 0xef && buf[start + 1] === 0xbb && buf[start + 2] === 0xbf)
      start += 3;
    while (start < end && isJsonSpace(buf[start])) start++;
    if (start === end) return; // blank line: skipped, but it has used up its line number
    this.nonBlankLines++;
    if (this.overRequestLimit(line)) return;

    let text: string;
    try {
      text = utf8.decode(buf.subarray(start, end));
    } catch {
      const param = pathOfUndecodable(buf.toString('utf8', start, end));
      this.addError('invalid_encoding', `line is not valid UTF-8${param ? ` (in ${param})` : ''}`, param, line);
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      this.addError('invalid_json', `line is not valid JSON: ${(err as Error).message}`, null, line);
      return;
    }
    if (!this.validate(parsed)) {
      const e = describeSchemaError(this.validate.errors![0]);
      // A schema-invalid line still claims its custom_id, so a later duplicate is not missed.
      const id = (parsed as { custom_id?: unknown }).custom_id;
      if (typeof id === 'string') this.customIds.add(id);
      this.addError(e.code, e.message, e.param, line);
      return;
    }
    this.checkRequest(parsed as BatchLine, line);
  }

  /** Checks beyond the schema: uniqueness, the model catalog, sizes, prompt, file references. */
  private checkRequest(req: BatchLine, line: number): void {
    if (!this.customIds.add(req.custom_id)) {
      this.addError(
        'duplicate_custom_id',
        `custom_id '${req.custom_id}' appears more than once in the batch`,
        'custom_id',
        line,
      );
      return;
    }
    const endpoint = this.ctx.endpoint ?? '/v1/images/generations';
    if (req.url !== undefined && req.url !== endpoint) {
      this.addError('invalid_url', `url must be the batch's endpoint '${endpoint}' (got '${req.url}')`, 'url', line);
      return;
    }
    const body = req.body;
    if (endpoint === '/v1/images/edits' && body.image_file_id === undefined && body.image_file_ids === undefined) {
      this.addError(
        'missing_required_parameter',
        'an edit needs the image to edit: give image_file_id or image_file_ids (vision files)',
        'body.image_file_ids',
        line,
      );
      return;
    }
    const model = this.ctx.models.get(body.model);
    if (!model || model.enabled === false) {
      this.addError(
        'model_not_found',
        `model '${body.model}' does not exist or is not available for batches`,
        'body.model',
        line,
      );
      return;
    }
    if (this.model === null) {
      this.model = model.id;
    } else if (model.id !== this.model) {
      this.addError(
        'model_mismatch',
        `a batch uses one model: '${this.model}' (first line), not '${model.id}'`,
        'body.model',
        line,
      );
      return;
    }
    const fileIds =
      body.image_file_id === undefined && body.image_file_ids === undefined ? null : referencedFileIds(body);
    const checked = checkAgainstModel(body, model, {
      count: fileIds?.length ?? 0,
      param: body.image_file_ids ? 'image_file_ids' : 'image_file_id',
    });
    if ('code' in checked) {
      this.addError(checked.code, checked.message, `body.${checked.param}`, line);
      return;
    }
    const n = body.n ?? 1;
    const tier = checked.tier;
    let pending: PendingLine | null = null;
    if (fileIds) {
      let missing = false;
      for (let i = 0; i < fileIds.length; i++) {
        const id = fileIds[i];
        if (this.ownedFiles.has(id)) continue;
        if (this.missingFiles.has(id)) {
          this.addError(
            'file_not_found',
            `file '${id}' does not exist or is not one of your vision files`,
            fileParam(body, i),
            line,
          );
          missing = true;
          continue;
        }
        pending ??= { line, n, tier, rejected: false };
        const waiting = this.pendingFiles.get(id) ?? [];
        if (!waiting.length) this.pendingFiles.set(id, waiting);
        waiting.push({ pending, param: fileParam(body, i) });
        this.pendingReferences++;
      }
      if (missing) {
        // Counted as rejected now; pending references of this line add their own errors later.
        if (pending) pending.rejected = true;
        return;
      }
    }
    this.requestCount++;
    this.imageCount += n;
    this.imagesBySize[tier] = (this.imagesBySize[tier] ?? 0) + n;
  }

  private rejectForMissingFile(ref: PendingReference, id: string): void {
    const p = ref.pending;
    this.addError(
      'file_not_found',
      `file '${id}' does not exist or is not one of your vision files`,
      ref.param,
      p.line,
    );
    if (p.rejected) return;
    p.rejected = true;
    this.requestCount--;
    this.imageCount -= p.n;
    this.imagesBySize[p.tier] -= p.n;
    if (this.imagesBySize[p.tier] === 0) delete this.imagesBySize[p.tier];
  }

  private addError(code: BatchErrorCode, message: string, param: string | null, line: number): void {
    this.errorCount++;
    this.errors.push({ code, message, param, line });
    // file_not_found errors arrive after later lines' errors: keep a bounded surplus, then
    // sort and cut back to the cap (the earliest lines win).
    if (this.errors.length >= Math.max(4 * this.ctx.maxErrors, 64)) this.trimErrors();
  }

  private trimErrors(): void {
    this.errors.sort((a, b) => a.line - b.line);
    if (this.errors.length > this.ctx.maxErrors) this.errors.length = Math.max(this.ctx.maxErrors, 0);
  }
}

function fileParam(body: ImageRequestBody, index: number): string {
  return body.image_file_ids ? `body.image_file_ids[${index}]` : 'body.image_file_id';
}

/** Fatal: a byte sequence that is not UTF-8 is an error, never silently replaced (a custom_id must come back as sent). */
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Why a file is not UTF-8 text at all, from its first two bytes, or null. */
function notUtf8File(head: Buffer): string | null {
  if ((head[0] === 0xff && head[1] === 0xfe) || (head[0] === 0xfe && head[1] === 0xff)) {
    return 'the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8';
  }
  if (head[0] === 0x1f && head[1] === 0x8b) return 'the file is gzip-compressed; upload the uncompressed JSONL';
  return null;
}

/**
 * Where in a line the undecodable bytes are: the JSON path of the first string holding the
 * replacement character once decoded leniently, or null (then the line is not JSON either).
 */
function pathOfUndecodable(lenient: string): string | null {
  let value: unknown;
  try {
    value = JSON.parse(lenient);
  } catch {
    return null;
  }
  return findStringPath(value, (text) => text.includes('\uFFFD'));
}

function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === CR;
}

/** `/body/image_file_ids/0` → `body.image_file_ids[0]`. */
function toParam(instancePath: string, child?: string): string | null {
  const segments = instancePath.split('/').slice(1);
  if (child !== undefined) segments.push(child);
  if (segments.length === 0) return null;
  let out = '';
  for (const s of segments) out += /^\d+$/.test(s) ? `[${s}]` : out ? `.${s}` : s;
  return out;
}

/** Map ajv's first error to a precise error code and a client-readable message. */
export function describeSchemaError(err: ErrorObject): { code: BatchErrorCode; message: string; param: string | null } {
  const path = err.instancePath;
  const params = err.params as Record<string, unknown>;
  if (err.keyword === 'required') {
    const missing = String(params.missingProperty);
    const param = toParam(path, missing);
    if (path === '' && missing === 'custom_id')
      return { code: 'missing_custom_id', message: 'custom_id is required', param };
    if (path === '') return { code: 'invalid_line', message: `${missing} is required`, param };
    return { code: 'missing_required_parameter', message: `${param} is required`, param };
  }
  if (err.keyword === 'additionalProperties') {
    const extra = String(params.additionalProperty);
    const param = toParam(path, extra);
    if (path === '') {
      return {
        code: 'invalid_line',
        message: `unknown field '${extra}': a line has custom_id, method, url and body`,
        param,
      };
    }
    return { code: 'unknown_parameter', message: `unknown parameter '${param}'`, param };
  }
  const param = toParam(path);
  if (path === '') return { code: 'invalid_line', message: 'a line must be a JSON object', param: null };
  if (path === '/custom_id')
    return { code: 'invalid_custom_id', message: 'custom_id must be a string of 1 to 256 characters', param };
  if (path === '/method') return { code: 'invalid_method', message: "method must be 'POST'", param };
  if (path === '/url') {
    return { code: 'invalid_url', message: "url must be '/v1/images/generations' or '/v1/images/edits'", param };
  }
  if (path === '/body' && err.keyword === 'not') {
    return {
      code: 'conflicting_parameters',
      message: 'give image_file_id or image_file_ids, not both',
      param: 'body.image_file_ids',
    };
  }
  if (path === '/body') return { code: 'invalid_line', message: 'body must be a JSON object', param };
  if (path === '/body/prompt') return { code: 'invalid_prompt', message: 'prompt must be a string', param };
  if (path === '/body/response_format') {
    return {
      code: 'invalid_value',
      message: "response_format must be 'b64_json' (images inline) or 'url' (links to the images)",
      param,
    };
  }
  if (path === '/body/size' || path.startsWith('/body/image_config/')) {
    return { code: 'unsupported_size', message: `${param} ${err.message}`, param };
  }
  if (err.keyword === 'type') return { code: 'invalid_type', message: `${param} ${err.message}`, param };
  const allowed = err.keyword === 'enum' ? `: ${(params.allowedValues as unknown[]).join(', ')}` : '';
  return { code: 'invalid_value', message: `${param} ${err.message}${allowed}`, param };
}
