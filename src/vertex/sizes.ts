import type { ModelInfo } from '../billing/model-catalog.ts';
import type { ImageRequestBody } from './translate.ts';

/** What a request asks Gemini for: `imageConfig.aspectRatio` and `imageConfig.imageSize`. */
export interface ResolvedSize {
  aspectRatio: string;
  imageSize: string;
}

/** Why a request's size cannot be served; `param` is the field to blame (`body.size`, …). */
export interface SizeProblem {
  param: string;
  message: string;
}

/**
 * The OpenAI sizes clients actually send (gpt-image-1 and dall-e-3), pinned to the tier a client
 * expects to pay for: `1792x1024` is dall-e-3's "1K" landscape even though its long side is > 1024,
 * and its 7:4 ratio is served as Gemini's 16:9.
 */
const KNOWN_SIZES: Record<string, ResolvedSize> = {
  '1024x1024': { aspectRatio: '1:1', imageSize: '1K' },
  '1536x1024': { aspectRatio: '3:2', imageSize: '1K' },
  '1024x1536': { aspectRatio: '2:3', imageSize: '1K' },
  '1792x1024': { aspectRatio: '16:9', imageSize: '1K' },
  '1024x1792': { aspectRatio: '9:16', imageSize: '1K' },
  '2048x2048': { aspectRatio: '1:1', imageSize: '2K' },
  '4096x4096': { aspectRatio: '1:1', imageSize: '4K' },
};

/**
 * A free `WxH` matches a model ratio within 3 %: Gemini's own pixel sizes are not exact ratios
 * (16:9 is 1344x768 = 1.75, 3:4 is 864x1184 = 0.73), and the standard ratios sit ≥ 6 % apart,
 * so the closest ratio inside this band is unambiguous.
 */
const RATIO_TOLERANCE = 0.03;

const sizeCache = new WeakMap<ModelInfo, Map<string, ResolvedSize | SizeProblem>>();

/**
 * Resolve a body's size against a model. `image_config` fields win over `size` one by one;
 * `size` absent or `auto` means the model default (1:1, or its first ratio, at defaultImageSize).
 * `quality` (`hd`, `high`, …) never changes the tier: the price follows the pixels requested,
 * not a quality hint Gemini has no knob for.
 */
export function resolveSize(body: ImageRequestBody, model: ModelInfo): ResolvedSize | SizeProblem {
  const cfg = body.image_config;
  // Almost every line of a batch asks for the same size: memoise per model (bounded by the
  // number of distinct combinations, which the schema's patterns keep small).
  const key = `${body.size ?? ''}|${cfg?.aspect_ratio ?? ''}|${cfg?.image_size ?? ''}`;
  const perModel = sizeCache.get(model) ?? new Map<string, ResolvedSize | SizeProblem>();
  if (!perModel.size) sizeCache.set(model, perModel);
  let hit = perModel.get(key);
  if (hit === undefined) {
    hit = resolveUncached(body, model);
    if (perModel.size < 1000) perModel.set(key, hit);
  }
  return hit;
}

export function isSizeProblem(r: ResolvedSize | SizeProblem): r is SizeProblem {
  return (r as SizeProblem).message !== undefined;
}

function resolveUncached(body: ImageRequestBody, model: ModelInfo): ResolvedSize | SizeProblem {
  const cfg = body.image_config ?? {};
  let aspectRatio: string | undefined = cfg.aspect_ratio;
  let imageSize: string | undefined = cfg.image_size?.toUpperCase();
  const sizeNeeded = aspectRatio === undefined || imageSize === undefined;
  if (sizeNeeded && body.size !== undefined && body.size !== 'auto') {
    const fromSize = parseOpenAiSize(body.size, model);
    if (!fromSize) {
      return {
        param: 'body.size',
        message: `size '${body.size}' is not supported by model '${model.id}' (aspect ratios: ${model.aspectRatios.join(', ')})`,
      };
    }
    aspectRatio ??= fromSize.aspectRatio;
    imageSize ??= fromSize.imageSize;
  }
  aspectRatio ??= model.aspectRatios.includes('1:1') ? '1:1' : model.aspectRatios[0];
  imageSize ??= model.defaultImageSize;
  if (!model.aspectRatios.includes(aspectRatio)) {
    const param = cfg.aspect_ratio !== undefined ? 'body.image_config.aspect_ratio' : 'body.size';
    return {
      param,
      message: `aspect ratio '${aspectRatio}' is not supported by model '${model.id}' (supported: ${model.aspectRatios.join(', ')})`,
    };
  }
  if (!model.imageSizes.includes(imageSize)) {
    const param = cfg.image_size !== undefined ? 'body.image_config.image_size' : 'body.size';
    return {
      param,
      message: `image size '${imageSize}' is not supported by model '${model.id}' (supported: ${model.imageSizes.join(', ')})`,
    };
  }
  return { aspectRatio, imageSize };
}

/** `WxH` → ratio and tier, or null when no model ratio is close enough. */
export function parseOpenAiSize(size: string, model: ModelInfo): ResolvedSize | null {
  const known = KNOWN_SIZES[size];
  if (known) return known;
  const m = /^(\d+)x(\d+)$/.exec(size);
  if (!m) return null;
  const w = Number(m[1]);
  const h = Number(m[2]);
  if (w <= 0 || h <= 0) return null;
  const aspectRatio = closestRatio(w / h, model.aspectRatios);
  if (!aspectRatio) return null;
  return { aspectRatio, imageSize: tierOfLongSide(Math.max(w, h)) };
}

/** Tier by long side: ≤ 1024 → 1K, ≤ 2048 → 2K, else 4K. */
export function tierOfLongSide(longSide: number): string {
  if (longSide <= 1024) return '1K';
  if (longSide <= 2048) return '2K';
  return '4K';
}

function closestRatio(ratio: number, candidates: string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const [a, b] = c.split(':').map(Number);
    if (!a || !b) continue;
    const distance = Math.abs(ratio / (a / b) - 1);
    if (distance <= RATIO_TOLERANCE && distance < bestDistance) {
      best = c;
      bestDistance = distance;
    }
  }
  return best;
}
