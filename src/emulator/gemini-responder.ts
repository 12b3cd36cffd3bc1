/**
 * Answers a GenerateContentRequest the way a Gemini image model does: a
 * placeholder image as inlineData, usageMetadata and modelVersion, or an
 * error. One function, {@link generateContent}, serves both surfaces: a line of
 * a batch job (`{request, status, response, processed_time}`, the request
 * echoed, labels included; see {@link answerLine}) and an online
 * `:generateContent` call. Directives in the prompt text steer the outcome.
 */
import { createHash } from 'node:crypto';
import type { Storage } from '@google-cloud/storage';
import type { EmulatorImage } from '../config.ts';
import type { ImageMimeType } from './image-generator.ts';
import { generateImage, IMAGE_MIME_TYPES, imageDimensions, tinyImage } from './image-generator.ts';
import type { KnownModel } from './models.ts';

/** `textonly`: where text is allowed too, the model answers with words alone, as Gemini sometimes does. */
export type Directive = 'fail' | 'block' | 'slow' | 'textonly';

export interface ResponderContext {
  model: KnownModel;
  /** Reads `fileData` reference images (`gs://…`). */
  storage: Storage;
  imagePadBytes: number;
  /** `tiny`: every image is one small precomputed image (scale runs); default `full`. */
  image?: EmulatorImage;
}

export interface LineResult {
  /** The JSON text of the output line (no trailing newline). */
  text: string;
  ok: boolean;
}

interface Part {
  text?: unknown;
  fileData?: { fileUri?: unknown; mimeType?: unknown };
  inlineData?: { mimeType?: unknown; data?: unknown };
}

/** What the responder reads of a request; enums arrive as names (JSON lines) or numbers (the npm client). */
export interface GenerateContentRequest {
  contents?: Array<{ role?: string; parts?: Part[] }>;
  generationConfig?: {
    responseModalities?: Array<string | number>;
    responseMimeType?: string;
    seed?: number;
    imageConfig?: {
      aspectRatio?: string;
      imageSize?: string;
      outputMimeType?: string;
      imageOutputOptions?: { mimeType?: string; compressionQuality?: number };
    };
  };
  labels?: Record<string, string>;
}

/**
 * A request the model refuses or fails: `code` is the HTTP status, `statusName`
 * the canonical status Google puts in `error.status`. Online calls answer it as
 * the HTTP error; a batch line puts it in `status`.
 */
export class GenerateContentError extends Error {
  readonly code: number;
  readonly statusName: string;
  constructor(code: number, statusName: string, message: string) {
    super(message);
    this.code = code;
    this.statusName = statusName;
  }
  /** The `status` text of a failed batch line (often an embedded google.rpc error). */
  get statusText(): string {
    return `${this.code === 400 ? 'Bad Request' : this.code === 404 ? 'Not Found' : 'Internal Server Error'}: ${JSON.stringify(
      {
        error: { code: this.code, message: this.message, status: this.statusName },
      },
    )}`;
  }
}

export function directivesIn(text: string): Set<Directive> {
  const found = new Set<Directive>();
  if (!text.includes('[emulate:')) return found; // nearly every line: no regular expression to run
  for (const m of text.matchAll(/\[emulate:(fail|block|slow|textonly)\]/g)) found.add(m[1] as Directive);
  return found;
}

/** Reads the directives of a raw line without generating anything (for timing). */
export function lineDirectives(line: string): Set<Directive> {
  return directivesIn(line);
}

/** The directives in a request's prompt text (for timing, before generating anything). */
export function requestDirectives(request: unknown): Set<Directive> {
  return directivesIn(promptText(request as GenerateContentRequest | undefined));
}

/**
 * Checks what Vertex's front end checks before the model runs: an object with
 * non-empty `contents`. Throws a 400 {@link GenerateContentError} otherwise.
 */
export function checkGenerateContentRequest(request: unknown): GenerateContentRequest {
  const r = request as GenerateContentRequest | undefined;
  if (!r || typeof r !== 'object' || Array.isArray(r)) {
    throw new GenerateContentError(400, 'INVALID_ARGUMENT', 'The request must be a GenerateContentRequest object.');
  }
  if (!Array.isArray(r.contents) || r.contents.length === 0) {
    throw new GenerateContentError(
      400,
      'INVALID_ARGUMENT',
      'Unable to submit request because it has an empty contents field.',
    );
  }
  return r;
}

/**
 * The model's answer to one GenerateContentRequest, shared by batch lines and
 * online calls: resolves with the GenerateContentResponse as JSON text (the
 * image's base64 is built into it once, never parsed or serialized again);
 * `[emulate:block]` gives `promptFeedback` and no candidates. Rejects with a
 * {@link GenerateContentError}: 400 for a bad request (no contents, an
 * unsupported size or format, a missing reference), 500 for `[emulate:fail]`.
 * Timing (`[emulate:slow]`) is the caller's.
 */
export async function generateContent(request: unknown, ctx: ResponderContext): Promise<string> {
  const checked = checkGenerateContentRequest(request);
  const prompt = promptText(checked);
  const directives = directivesIn(prompt);
  if (directives.has('fail')) {
    throw new GenerateContentError(500, 'INTERNAL', 'Internal error encountered. (emulated by [emulate:fail])');
  }
  if (directives.has('block')) return blockedResponse(checked, ctx);
  return imageResponse(checked, prompt, ctx, directives.has('textonly'));
}

/** One batch input line → its output line. */
export async function answerLine(line: string, ctx: ResponderContext): Promise<LineResult> {
  const processedTime = new Date().toISOString();
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    const err = new GenerateContentError(
      400,
      'INVALID_ARGUMENT',
      'Invalid JSON payload received: the line is not a JSON object.',
    );
    return {
      ok: false,
      text: JSON.stringify({ request: line, status: err.statusText, processed_time: processedTime }),
    };
  }
  const request = (parsed as { request?: unknown })?.request;
  try {
    const response = await generateContent(request, ctx);
    return {
      ok: true,
      text: `{"request":${echoOf(line, parsed, request)},"status":"","response":${response},"processed_time":${JSON.stringify(processedTime)}}`,
    };
  } catch (err) {
    const lineErr =
      err instanceof GenerateContentError ? err : new GenerateContentError(500, 'INTERNAL', (err as Error).message);
    return {
      ok: false,
      text: JSON.stringify({ request: request ?? parsed, status: lineErr.statusText, processed_time: processedTime }),
    };
  }
}

const REQUEST_KEY = '{"request":';

/**
 * The request as the output line echoes it: the line's own text of it when the line is just
 * `{"request": …}` (as the service writes them), instead of serializing it again.
 */
function echoOf(line: string, parsed: unknown, request: unknown): string {
  const text = line.trimEnd();
  if (text.startsWith(REQUEST_KEY) && text.endsWith('}') && Object.keys(parsed as object).length === 1) {
    return text.slice(REQUEST_KEY.length, -1);
  }
  return JSON.stringify(request);
}

/** GenerationConfig.Modality by name or number (the npm client sends numbers: TEXT = 1, IMAGE = 2). */
const MODALITIES = ['MODALITY_UNSPECIFIED', 'TEXT', 'IMAGE', 'AUDIO'];

function modalityName(m: unknown): string {
  if (typeof m === 'number') return MODALITIES[m] ?? String(m);
  return String(m).toUpperCase();
}

/** Every part of every content, skipping whatever is not a list where one belongs. */
function* partsOf(request: GenerateContentRequest | undefined): Generator<Part> {
  const contents: unknown = request?.contents;
  if (!Array.isArray(contents)) return;
  for (const content of contents) {
    const parts: unknown = content?.parts;
    if (!Array.isArray(parts)) continue;
    for (const part of parts) if (part && typeof part === 'object') yield part as Part;
  }
}

function promptText(request: GenerateContentRequest | undefined): string {
  const texts: string[] = [];
  for (const part of partsOf(request)) if (typeof part.text === 'string') texts.push(part.text);
  return texts.join('\n');
}

function promptTokens(prompt: string, images: number): number {
  // About four characters per text token; Gemini counts 258 tokens per input image.
  return Math.max(1, Math.ceil(prompt.length / 4)) + images * 258;
}

function blockedResponse(request: GenerateContentRequest, ctx: ResponderContext): string {
  const prompt = promptText(request);
  const tokens = promptTokens(prompt, referenceCount(request));
  return JSON.stringify({
    promptFeedback: {
      blockReason: 'PROHIBITED_CONTENT',
      blockReasonMessage: 'The prompt was blocked (emulated by [emulate:block]).',
    },
    usageMetadata: { promptTokenCount: tokens, totalTokenCount: tokens },
    modelVersion: ctx.model.id,
  });
}

function referenceCount(request: GenerateContentRequest): number {
  let count = 0;
  for (const part of partsOf(request)) if (part.fileData || part.inlineData) count++;
  return count;
}

async function imageResponse(
  request: GenerateContentRequest,
  prompt: string,
  ctx: ResponderContext,
  textOnly: boolean,
): Promise<string> {
  const config = request.generationConfig ?? {};
  const imageConfig = config.imageConfig ?? {};
  let dims: { width: number; height: number };
  try {
    dims = imageDimensions(imageConfig.aspectRatio, imageConfig.imageSize);
  } catch (err) {
    throw new GenerateContentError(400, 'INVALID_ARGUMENT', (err as Error).message);
  }
  const output = outputFormat(request);
  const references = await referenceDigests(request, ctx.storage);
  const modalities = (config.responseModalities ?? ['TEXT', 'IMAGE']).map(modalityName);
  const wantsText = modalities.includes('TEXT') || !modalities.includes('IMAGE');
  const wantsImage = modalities.includes('IMAGE') && !(textOnly && wantsText);
  const seed = JSON.stringify([ctx.model.id, prompt, references, config.seed ?? null]);
  const parts: string[] = [];
  if (wantsText) {
    parts.push(JSON.stringify({ text: `Here is a placeholder image for: ${prompt.slice(0, 200)}` }));
  }
  let candidatesTokens = wantsText ? 20 : 0;
  if (wantsImage) {
    const image =
      ctx.image === 'tiny'
        ? await tinyImage(output.mimeType, ctx.imagePadBytes)
        : await generateImage({ ...dims, seed, ...output, padToBytes: ctx.imagePadBytes || undefined }).then((i) => ({
            mimeType: i.mimeType,
            base64: i.data.toString('base64'),
          }));
    parts.push(`{"inlineData":{"mimeType":"${image.mimeType}","data":"${image.base64}"}}`);
    candidatesTokens += ctx.model.imageTokens(imageConfig.imageSize);
  }
  const promptCount = promptTokens(prompt, references.length);
  const usage = {
    promptTokenCount: promptCount,
    candidatesTokenCount: candidatesTokens,
    totalTokenCount: promptCount + candidatesTokens,
    promptTokensDetails: [
      { modality: 'TEXT', tokenCount: promptCount - references.length * 258 },
      ...(references.length ? [{ modality: 'IMAGE', tokenCount: references.length * 258 }] : []),
    ],
    candidatesTokensDetails: wantsImage
      ? [{ modality: 'IMAGE', tokenCount: ctx.model.imageTokens(imageConfig.imageSize) }]
      : [{ modality: 'TEXT', tokenCount: candidatesTokens }],
  };
  const responseId = createHash('sha256').update(seed).digest('base64url').slice(0, 22);
  return `{"candidates":[{"content":{"role":"model","parts":[${parts.join(',')}]},"finishReason":"STOP","index":0}],"usageMetadata":${JSON.stringify(usage)},"modelVersion":${JSON.stringify(ctx.model.id)},"createTime":${JSON.stringify(new Date().toISOString())},"responseId":${JSON.stringify(responseId)}}`;
}

/**
 * The image format asked for: `imageOutputOptions` (what the service sends,
 * the v1 protos' field), else the older `outputMimeType`, else an `image/*`
 * `responseMimeType`; PNG when none. A format or quality the model cannot
 * produce fails the line, as a bad request.
 */
function outputFormat(request: GenerateContentRequest): { mimeType: ImageMimeType; quality?: number } {
  const config = request.generationConfig ?? {};
  const options = config.imageConfig?.imageOutputOptions ?? {};
  const responseImageType =
    typeof config.responseMimeType === 'string' && config.responseMimeType.startsWith('image/')
      ? config.responseMimeType
      : undefined;
  const asked = options.mimeType ?? config.imageConfig?.outputMimeType ?? responseImageType ?? 'image/png';
  if (!(IMAGE_MIME_TYPES as readonly unknown[]).includes(asked)) {
    throw new GenerateContentError(
      400,
      'INVALID_ARGUMENT',
      `Unsupported image output mimeType ${JSON.stringify(asked)}: use one of ${IMAGE_MIME_TYPES.join(', ')}.`,
    );
  }
  const quality = options.compressionQuality;
  if (quality !== undefined && !(Number.isInteger(quality) && quality >= 0 && quality <= 100)) {
    throw new GenerateContentError(
      400,
      'INVALID_ARGUMENT',
      `imageOutputOptions.compressionQuality must be a whole number from 0 to 100, got ${JSON.stringify(quality)}.`,
    );
  }
  return { mimeType: asked as ImageMimeType, quality };
}

/**
 * A digest per reference image, so the picture derives from it: fileData
 * objects are hashed as a stream from Cloud Storage, inlineData from its base64.
 */
async function referenceDigests(request: GenerateContentRequest, storage: Storage): Promise<string[]> {
  const digests: string[] = [];
  for (const part of partsOf(request)) {
    if (part.inlineData) {
      if (typeof part.inlineData.data !== 'string')
        throw new GenerateContentError(400, 'INVALID_ARGUMENT', 'inlineData.data must be base64 text.');
      digests.push(createHash('sha256').update(part.inlineData.data).digest('hex'));
    } else if (part.fileData) {
      digests.push(await hashGcsObject(String(part.fileData.fileUri ?? ''), storage));
    }
  }
  return digests;
}

async function hashGcsObject(uri: string, storage: Storage): Promise<string> {
  const m = /^gs:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!m)
    throw new GenerateContentError(400, 'INVALID_ARGUMENT', `fileData.fileUri must be a gs:// URI, got "${uri}".`);
  const hash = createHash('sha256');
  try {
    for await (const chunk of storage.bucket(m[1]).file(m[2]).createReadStream({ validation: false }))
      hash.update(chunk as Buffer);
  } catch (err) {
    if ((err as { code?: number }).code === 404)
      throw new GenerateContentError(400, 'INVALID_ARGUMENT', `Cannot fetch ${uri}: not found.`);
    throw new GenerateContentError(500, 'INTERNAL', `Cannot fetch ${uri}: ${(err as Error).message}`);
  }
  return hash.digest('hex');
}
