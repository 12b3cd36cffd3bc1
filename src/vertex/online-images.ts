import { setTimeout as delay } from 'node:timers/promises';
import type { protos } from '@google-cloud/aiplatform';
import type { PredictionServiceClient } from './job-client.ts';
import { enumName, protoEnum } from './proto-enums.ts';

type FinishReason = protos.google.cloud.aiplatform.v1.Candidate.FinishReason;
const FinishReasons = protoEnum('google.cloud.aiplatform.v1.Candidate.FinishReason');
const BlockedReasons = protoEnum('google.cloud.aiplatform.v1.GenerateContentResponse.PromptFeedback.BlockedReason');
const Modalities = protoEnum('google.cloud.aiplatform.v1.Modality');

/** Token counts of one call, as Gemini reports them. */
export interface CallUsage {
  inputText: number;
  inputImage: number;
  output: number;
}

/** What one `generateContent` call came to. */
export type ImageOutcome =
  | { kind: 'image'; data: Buffer; mimeType: string; text: string | null; usage: CallUsage }
  | { kind: 'blocked'; message: string; usage: CallUsage | null }
  | { kind: 'failed'; message: string; timedOut: boolean; noImage?: boolean };

/** Gemini finish reasons that mean "refused by a safety or policy filter", not "broke". */
const BLOCKING_FINISH = new Set([
  'SAFETY',
  'RECITATION',
  'BLOCKLIST',
  'PROHIBITED_CONTENT',
  'SPII',
  'IMAGE_SAFETY',
  'IMAGE_PROHIBITED_CONTENT',
  'IMAGE_RECITATION',
]);

/** gRPC codes worth another try: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (429), UNAVAILABLE (503). */
const RETRYABLE_CODES = new Set([4, 8, 14]);
const RETRYABLE_ERRNOS = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);
/** Tries of one image (the first and the retries), each within what is left of the deadline. */
const MAX_ATTEMPTS = 4;
/** First wait before a retry; it doubles, with jitter. */
const RETRY_BASE_MS = 250;
const RETRY_MAX_MS = 8000;

/**
 * Vertex AI online prediction for image models: one `generateContent` call per image (Gemini image
 * models make one image per call), through the official PredictionServiceClient. Quota and
 * availability errors (429, 503), Vertex's own deadline (504) and calls not answered within
 * `callTimeoutMs` are retried with backoff inside the caller's deadline; anything else is the
 * image's outcome. Never throws.
 */
export class OnlineImages {
  private readonly client: PredictionServiceClient;
  private readonly parent: string;
  private readonly callTimeoutMs: number;

  constructor(client: PredictionServiceClient, opts: { project: string; location: string; callTimeoutMs: number }) {
    this.client = client;
    this.parent = `projects/${opts.project}/locations/${opts.location}/`;
    this.callTimeoutMs = opts.callTimeoutMs;
  }

  async generate(
    publisherModel: string,
    request: { contents: object[]; generationConfig: object },
    opts: { signal: AbortSignal; deadline: number },
  ): Promise<ImageOutcome> {
    const model = publisherModel.startsWith('projects/') ? publisherModel : this.parent + publisherModel;
    let last = 'no attempt was made';
    let asked = request;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const left = opts.deadline - Date.now();
      if (opts.signal.aborted || left <= 0) return { kind: 'failed', message: 'timed out', timedOut: true };
      // A call lost on the way would otherwise hold the image until the whole deadline: each try
      // gets at most callTimeoutMs, and its own signal so that giving up on it stops only it.
      const limit = Math.min(left, this.callTimeoutMs);
      const cut = new AbortController();
      const timer = setTimeout(() => cut.abort(), limit);
      const thisTry = AbortSignal.any([opts.signal, cut.signal]);
      try {
        const [response] = await this.call({ model, ...asked }, limit, thisTry);
        const outcome = readResponse(response);
        if (outcome.kind === 'failed' && outcome.noImage && asksForText(asked)) {
          // Allowed to, Gemini sometimes answers in words alone: the next try asks for the image alone.
          last = outcome.message;
          asked = { ...asked, generationConfig: { ...asked.generationConfig, responseModalities: ['IMAGE'] } };
          continue;
        }
        return outcome;
      } catch (err) {
        // Cut by the caller, or by this try's limit when that was all the time left: the deadline.
        if (opts.signal.aborted || (thisTry.aborted && limit === left)) {
          return { kind: 'failed', message: 'timed out', timedOut: true };
        }
        if (thisTry.aborted) {
          last = `no answer within ${this.callTimeoutMs} ms`;
        } else {
          last = describe(err);
          if (!retryable(err)) return { kind: 'failed', message: last, timedOut: false };
        }
      } finally {
        clearTimeout(timer);
      }
      if (attempt === MAX_ATTEMPTS) break; // no wait after the last try
      const wait = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      if (Date.now() + wait >= opts.deadline) break;
      try {
        await delay(wait, undefined, { signal: opts.signal });
      } catch {
        return { kind: 'failed', message: 'timed out', timedOut: true };
      }
    }
    return { kind: 'failed', message: `gave up after retries: ${last}`, timedOut: false };
  }

  /**
   * One call. The client retries nothing for generateContent and would time out at 30 s (gax's
   * default): the timeout is this try's limit, and its signal stops the call.
   */
  private async call(
    request: protos.google.cloud.aiplatform.v1.IGenerateContentRequest,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<[protos.google.cloud.aiplatform.v1.IGenerateContentResponse, ...unknown[]]> {
    return this.client.generateContent(request, { timeout: timeoutMs, signal } as never) as never;
  }
}

function asksForText(request: { generationConfig: object }): boolean {
  const modalities = (request.generationConfig as { responseModalities?: unknown[] }).responseModalities;
  return modalities?.includes('TEXT') ?? false;
}

function retryable(err: unknown): boolean {
  const e = err as { code?: number | string } | null;
  if (typeof e?.code === 'number') return RETRYABLE_CODES.has(e.code) || e.code === 429 || e.code === 503;
  return typeof e?.code === 'string' && RETRYABLE_ERRNOS.has(e.code);
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; details?: unknown; message?: unknown } | null;
  const text = String(e?.details || e?.message || err).slice(0, 300);
  return typeof e?.code === 'number' ? `Vertex error ${e.code}: ${text}` : text;
}

/** The first image of a response, or why there is none (blocked by a filter, or nothing made). */
export function readResponse(response: protos.google.cloud.aiplatform.v1.IGenerateContentResponse): ImageOutcome {
  const usage = readUsage(response.usageMetadata);
  const blockReason = enumName(BlockedReasons, response.promptFeedback?.blockReason);
  if (blockReason && blockReason !== 'BLOCKED_REASON_UNSPECIFIED' && blockReason !== '0') {
    const detail = response.promptFeedback?.blockReasonMessage;
    return { kind: 'blocked', message: `the prompt was blocked (${blockReason})${detail ? `: ${detail}` : ''}`, usage };
  }
  const candidate = response.candidates?.[0];
  const texts: string[] = [];
  for (const part of candidate?.content?.parts ?? []) {
    const inline = part.inlineData;
    if (inline?.data && String(inline.mimeType ?? '').startsWith('image/')) {
      const data = typeof inline.data === 'string' ? Buffer.from(inline.data, 'base64') : Buffer.from(inline.data);
      const text = candidate?.content?.parts
        ?.map((p) => p.text)
        .filter((t): t is string => Boolean(t))
        .join('\n');
      return { kind: 'image', data, mimeType: String(inline.mimeType), text: text || null, usage: usage ?? ZERO };
    }
    if (part.text) texts.push(part.text);
  }
  const finish = enumName(FinishReasons, candidate?.finishReason as FinishReason | undefined);
  if (BLOCKING_FINISH.has(finish)) {
    return { kind: 'blocked', message: `the image was blocked (${finish})`, usage };
  }
  const said = texts.join(' ').slice(0, 200);
  return {
    kind: 'failed',
    message: `the model returned no image${finish ? ` (finish reason ${finish})` : ''}${said ? `: ${said}` : ''}`,
    timedOut: false,
    noImage: true,
  };
}

const ZERO: CallUsage = { inputText: 0, inputImage: 0, output: 0 };

function readUsage(u: protos.google.cloud.aiplatform.v1.GenerateContentResponse.IUsageMetadata | null | undefined) {
  if (!u) return null;
  let inputImage = 0;
  for (const d of u.promptTokensDetails ?? []) {
    if (enumName(Modalities, d.modality) === 'IMAGE') inputImage += Number(d.tokenCount ?? 0);
  }
  const input = Number(u.promptTokenCount ?? 0);
  return { inputText: Math.max(0, input - inputImage), inputImage, output: Number(u.candidatesTokenCount ?? 0) };
}
