/**
 * Answers one batch input line the way a Gemini image model does in a Vertex
 * batch job: `{request, status, response, processed_time}` with the request
 * echoed (labels included), a placeholder image as inlineData, usageMetadata
 * and modelVersion. Directives in the prompt text steer the outcome.
 */
import { createHash } from 'node:crypto';
import type { Storage } from '@google-cloud/storage';
import type { ImageMimeType } from './image-generator.ts';
import { generateImage, IMAGE_MIME_TYPES, imageDimensions } from './image-generator.ts';
import type { KnownModel } from './models.ts';

export type Directive = 'fail' | 'block' | 'slow';

export interface LineContext {
  model: KnownModel;
  storage: Storage;
  imagePadBytes: number;
}

export interface LineResult {
  /** The JSON text of the output line (no trailing newline). */
  text: string;
  ok: boolean;
  directives: Set<Directive>;
}

interface Part {
  text?: unknown;
  fileData?: { fileUri?: unknown; mimeType?: unknown };
  inlineData?: { mimeType?: unknown; data?: unknown };
}

interface GenerateContentRequest {
  contents?: Array<{ role?: string; parts?: Part[] }>;
  generationConfig?: {
    responseModalities?: string[];
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

/** A failed line: Vertex puts a message (often an embedded google.rpc error) in `status`. */
class LineError extends Error {
  readonly code: number;
  readonly statusName: string;
  constructor(code: number, statusName: string, message: string) {
    super(message);
    this.code = code;
    this.statusName = statusName;
  }
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
  for (const m of text.matchAll(/\[emulate:(fail|block|slow)\]/g)) found.add(m[1] as Directive);
  return found;
}

/** Reads the directives of a raw line without generating anything (for timing). */
export function lineDirectives(line: string): Set<Directive> {
  return directivesIn(line);
}

export async function answerLine(line: string, ctx: LineContext): Promise<LineResult> {
  const processedTime = new Date().toISOString();
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    const err = new LineError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received: the line is not a JSON object.');
    return {
      ok: false,
      directives: new Set(),
      text: JSON.stringify({ request: line, status: err.statusText, processed_time: processedTime }),
    };
  }
  const request = (parsed as { request?: unknown })?.request as GenerateContentRequest | undefined;
  const prompt = promptText(request);
  const directives = directivesIn(prompt);
  try {
    if (!request || typeof request !== 'object' || !Array.isArray(request.contents) || request.contents.length === 0) {
      throw new LineError(400, 'INVALID_ARGUMENT', 'Each line needs a "request" with non-empty "contents".');
    }
    if (directives.has('fail')) {
      throw new LineError(500, 'INTERNAL', 'Internal error encountered. (emulated by [emulate:fail])');
    }
    const response = directives.has('block')
      ? blockedResponse(request, ctx)
      : await imageResponse(request, prompt, ctx);
    return {
      ok: true,
      directives,
      text: `{"request":${JSON.stringify(request)},"status":"","response":${response},"processed_time":${JSON.stringify(processedTime)}}`,
    };
  } catch (err) {
    const lineErr = err instanceof LineError ? err : new LineError(500, 'INTERNAL', (err as Error).message);
    return {
      ok: false,
      directives,
      text: JSON.stringify({ request: request ?? parsed, status: lineErr.statusText, processed_time: processedTime }),
    };
  }
}

function promptText(request: GenerateContentRequest | undefined): string {
  const texts: string[] = [];
  for (const content of request?.contents ?? []) {
    for (const part of content?.parts ?? []) if (typeof part?.text === 'string') texts.push(part.text);
  }
  return texts.join('\n');
}

function promptTokens(prompt: string, images: number): number {
  // About four characters per text token; Gemini counts 258 tokens per input image.
  return Math.max(1, Math.ceil(prompt.length / 4)) + images * 258;
}

function blockedResponse(request: GenerateContentRequest, ctx: LineContext): string {
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
  for (const content of request.contents ?? [])
    for (const part of content?.parts ?? []) if (part?.fileData || part?.inlineData) count++;
  return count;
}

async function imageResponse(request: GenerateContentRequest, prompt: string, ctx: LineContext): Promise<string> {
  const config = request.generationConfig ?? {};
  const imageConfig = config.imageConfig ?? {};
  let dims: { width: number; height: number };
  try {
    dims = imageDimensions(imageConfig.aspectRatio, imageConfig.imageSize);
  } catch (err) {
    throw new LineError(400, 'INVALID_ARGUMENT', (err as Error).message);
  }
  const output = outputFormat(request);
  const references = await referenceDigests(request, ctx.storage);
  const modalities = (config.responseModalities ?? ['TEXT', 'IMAGE']).map((m) => String(m).toUpperCase());
  const wantsImage = modalities.includes('IMAGE');
  const wantsText = modalities.includes('TEXT') || !wantsImage;
  const seed = JSON.stringify([ctx.model.id, prompt, references, config.seed ?? null]);
  const parts: string[] = [];
  if (wantsText) {
    parts.push(JSON.stringify({ text: `Here is a placeholder image for: ${prompt.slice(0, 200)}` }));
  }
  let candidatesTokens = wantsText ? 20 : 0;
  if (wantsImage) {
    const image = await generateImage({ ...dims, seed, ...output, padToBytes: ctx.imagePadBytes || undefined });
    parts.push(`{"inlineData":{"mimeType":"${image.mimeType}","data":"${image.data.toString('base64')}"}}`);
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
    throw new LineError(
      400,
      'INVALID_ARGUMENT',
      `Unsupported image output mimeType ${JSON.stringify(asked)}: use one of ${IMAGE_MIME_TYPES.join(', ')}.`,
    );
  }
  const quality = options.compressionQuality;
  if (quality !== undefined && !(Number.isInteger(quality) && quality >= 0 && quality <= 100)) {
    throw new LineError(
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
  for (const content of request.contents ?? []) {
    for (const part of content?.parts ?? []) {
      if (part?.inlineData) {
        if (typeof part.inlineData.data !== 'string')
          throw new LineError(400, 'INVALID_ARGUMENT', 'inlineData.data must be base64 text.');
        digests.push(createHash('sha256').update(part.inlineData.data).digest('hex'));
      } else if (part?.fileData) {
        digests.push(await hashGcsObject(String(part.fileData.fileUri ?? ''), storage));
      }
    }
  }
  return digests;
}

async function hashGcsObject(uri: string, storage: Storage): Promise<string> {
  const m = /^gs:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!m) throw new LineError(400, 'INVALID_ARGUMENT', `fileData.fileUri must be a gs:// URI, got "${uri}".`);
  const hash = createHash('sha256');
  try {
    for await (const chunk of storage.bucket(m[1]).file(m[2]).createReadStream({ validation: false }))
      hash.update(chunk as Buffer);
  } catch (err) {
    if ((err as { code?: number }).code === 404)
      throw new LineError(400, 'INVALID_ARGUMENT', `Cannot fetch ${uri}: not found.`);
    throw new LineError(500, 'INTERNAL', `Cannot fetch ${uri}: ${(err as Error).message}`);
  }
  return hash.digest('hex');
}
