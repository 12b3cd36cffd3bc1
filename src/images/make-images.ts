import { buffer } from 'node:stream/consumers';
import type { ModelInfo } from '../billing/model-catalog.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import type { ImageOutcome, OnlineImages } from '../vertex/online-images.ts';
import { type ReferencePart, toGeminiRequest } from '../vertex/translate.ts';
import type { ImageJobRow, ImageUsage } from './image-job-queries.ts';

/** One image made by a call, not stored yet. */
export interface MadeImage {
  index: number;
  data: Buffer;
  mimeType: string;
  revisedPrompt: string | null;
}

export interface FailedImage {
  index: number;
  blocked: boolean;
  timedOut: boolean;
  message: string;
}

/** Calls one job runs at once: `n` up to 10 would otherwise burst on the project's quota. */
export const CALLS_PER_JOB = 4;

/** Gemini has no mask input: the mask goes as one more image, introduced by this instruction. */
const MASK_INSTRUCTION =
  'The next image is a mask: change only the areas where the mask is transparent, keep the rest as it is.';

/**
 * Makes the images `indices` of a job with one `generateContent` call each, at most
 * CALLS_PER_JOB at a time, handing each image to `onImage` as it arrives (the caller stores or
 * keeps it). The request is built once, by the same translator as batch lines, with the stored
 * reference images inline.
 */
export async function makeImages(
  deps: { online: OnlineImages; store: ObjectStore },
  job: ImageJobRow,
  model: ModelInfo,
  opts: { indices: number[]; signal: AbortSignal; deadline: number; onImage(image: MadeImage): Promise<void> },
): Promise<{ failures: FailedImage[]; usage: ImageUsage }> {
  const references: ReferencePart[] = [];
  for (const input of job.inputs) {
    if (input.role === 'mask') references.push({ text: MASK_INSTRUCTION });
    const data = await buffer(deps.store.readStream(input.key));
    references.push({ inlineData: { mimeType: input.mimeType, data: data.toString('base64') } });
  }
  const request = toGeminiRequest(job.request, model, references, { withText: true });
  const failures: FailedImage[] = [];
  const usage: ImageUsage = {
    input_tokens: 0,
    output_tokens: 0,
    total_tokens: 0,
    input_tokens_details: { text_tokens: 0, image_tokens: 0 },
  };
  const queue = [...opts.indices];
  const worker = async () => {
    for (let index = queue.shift(); index !== undefined; index = queue.shift()) {
      const outcome: ImageOutcome = await deps.online.generate(model.publisherModel, request, opts);
      if (outcome.kind !== 'failed' && outcome.usage) {
        const u = outcome.usage;
        usage.input_tokens += u.inputText + u.inputImage;
        usage.output_tokens += u.output;
        usage.total_tokens += u.inputText + u.inputImage + u.output;
        usage.input_tokens_details.text_tokens += u.inputText;
        usage.input_tokens_details.image_tokens += u.inputImage;
      }
      if (outcome.kind === 'image') {
        await opts.onImage({ index, data: outcome.data, mimeType: outcome.mimeType, revisedPrompt: outcome.text });
      } else {
        failures.push({
          index,
          blocked: outcome.kind === 'blocked',
          timedOut: outcome.kind === 'failed' && outcome.timedOut,
          message: outcome.message,
        });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CALLS_PER_JOB, queue.length) }, worker));
  return { failures: failures.sort((a, b) => a.index - b.index), usage };
}
