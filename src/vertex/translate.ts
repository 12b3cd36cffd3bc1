import type { ModelInfo } from '../billing/model-catalog.ts';
import { isSizeProblem, resolveSize } from './sizes.ts';

/** A batch line's `body` once it passed schemas/image-request.schema.json. */
export interface ImageRequestBody {
  model: string;
  prompt: string;
  n?: number;
  size?: string;
  quality?: string;
  background?: string;
  moderation?: string;
  style?: string;
  user?: string;
  stream?: false;
  partial_images?: 0;
  output_format?: 'png' | 'jpeg' | 'webp';
  output_compression?: number;
  response_format?: 'b64_json' | 'url';
  image_config?: { aspect_ratio?: string; image_size?: string };
  image_file_id?: string;
  image_file_ids?: string[];
}

/** A reference image already copied to GCS, where Vertex can read it. */
export interface ReferenceImage {
  gcsUri: string;
  mimeType: string;
}

/** Label keys that carry a prediction back to its input line (Vertex has no per-line id). */
export const LINE_LABEL = 'ibg_line';
export const IMAGE_LABEL = 'ibg_img';

const MIME_BY_FORMAT = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' } as const;

/** The file ids a body references, in order (`image_file_id` or `image_file_ids`). */
export function referencedFileIds(body: ImageRequestBody): string[] {
  if (body.image_file_ids) return body.image_file_ids;
  if (body.image_file_id) return [body.image_file_id];
  return [];
}

/** A reference image as a Gemini part: a Cloud Storage object (batch) or inline bytes (online). */
export type ReferencePart =
  | { fileData: { fileUri: string; mimeType: string } }
  | { inlineData: { mimeType: string; data: string } }
  | { text: string };

export const fileDataPart = (r: ReferenceImage): ReferencePart => ({
  fileData: { fileUri: r.gcsUri, mimeType: r.mimeType },
});

/**
 * The one OpenAI → Gemini translation, for batch lines and online calls alike: the prompt, then
 * the reference parts, and an imageConfig of the resolved size and output format. Throws when
 * the model cannot serve the size (callers validated it before). `withText` asks for the model's
 * text too: online answers carry it as `revised_prompt`; batch lines keep to the image alone.
 */
export function toGeminiRequest(
  body: ImageRequestBody,
  model: ModelInfo,
  references: ReferencePart[],
  opts: { withText?: boolean } = {},
): { contents: object[]; generationConfig: object } {
  const size = resolveSize(body, model);
  if (isSizeProblem(size)) throw new Error(size.message);
  const imageConfig: Record<string, unknown> = { aspectRatio: size.aspectRatio, imageSize: size.imageSize };
  if (body.output_format) {
    // ImageConfig.imageOutputOptions {mimeType, compressionQuality} is the field in the v1 protos
    // (google.cloud.aiplatform.v1.ImageConfig); quality only means something for lossy formats.
    const imageOutputOptions: Record<string, unknown> = { mimeType: MIME_BY_FORMAT[body.output_format] };
    if (body.output_compression !== undefined && body.output_format !== 'png') {
      imageOutputOptions.compressionQuality = body.output_compression;
    }
    imageConfig.imageOutputOptions = imageOutputOptions;
  }
  return {
    contents: [{ role: 'user', parts: [{ text: body.prompt }, ...references] }],
    generationConfig: { responseModalities: opts.withText ? ['TEXT', 'IMAGE'] : ['IMAGE'], imageConfig },
  };
}

/**
 * One Gemini batch line `{"request": GenerateContentRequest}` per image: Gemini image models
 * return one image per request, so `n` expands into n requests told apart by `labels.ibg_img`.
 * Labels carry only the line index — never the raw custom_id, which may break Vertex's label
 * rules (lowercase [a-z0-9_-], ≤ 63 characters).
 */
export function toGeminiLines(
  body: ImageRequestBody,
  opts: { lineIndex: number; model: ModelInfo; references: ReferenceImage[] },
): object[] {
  let request: { contents: object[]; generationConfig: object };
  try {
    request = toGeminiRequest(body, opts.model, opts.references.map(fileDataPart));
  } catch (err) {
    throw new Error(`line ${opts.lineIndex}: ${(err as Error).message}`);
  }
  // The same contents/generationConfig objects are shared by the n requests: callers serialise them.
  const n = body.n ?? 1;
  const lines: object[] = [];
  for (let k = 0; k < n; k++) {
    lines.push({
      request: { ...request, labels: { [LINE_LABEL]: String(opts.lineIndex), [IMAGE_LABEL]: String(k) } },
    });
  }
  return lines;
}

/** The size tier ('1K' | '2K' | '4K') a request is priced at. Throws if the model cannot serve it. */
export function sizeTier(body: ImageRequestBody, model: ModelInfo): string {
  const size = resolveSize(body, model);
  if (isSizeProblem(size)) throw new Error(size.message);
  return size.imageSize;
}
