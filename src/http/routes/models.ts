import { Router } from 'express';
import type { ModelInfo } from '../../billing/model-catalog.ts';
import type { Services } from '../../services.ts';

export function modelView(m: ModelInfo) {
  return {
    id: m.id,
    object: 'model',
    owned_by: 'google',
    vertex_model: m.publisherModel,
    capabilities: {
      aspect_ratios: m.aspectRatios,
      image_sizes: m.imageSizes,
      max_prompt_chars: m.maxPromptChars,
      max_reference_images: m.maxReferenceImages,
    },
    pricing: { unit: 'quota_per_image', sync: m.unitPrices, batch_ratio: m.batchRatio },
    enabled: m.enabled,
  };
}

export function modelRoutes(s: Services): Router {
  const r = Router();
  r.get('/models', async (_req, res) => {
    res.json({ object: 'list', data: (await s.models(true)).map(modelView) });
  });
  return r;
}
