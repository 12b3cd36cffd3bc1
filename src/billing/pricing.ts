import type { ModelInfo } from './model-catalog.ts';
import { toScaled } from './model-catalog.ts';

/**
 * Batch price of a number of images per size tier: Σ images × sync unit price × batch ratio,
 * computed exactly in integers and rounded up once for the whole amount (never per image,
 * so a large batch is not overcharged by rounding).
 */
export function batchPrice(
  model: Pick<ModelInfo, 'unitPrices' | 'batchRatio'>,
  imagesBySize: Record<string, number>,
): number {
  let sync = 0n;
  for (const [tier, images] of Object.entries(imagesBySize)) {
    const unit = model.unitPrices[tier];
    if (unit === undefined) throw new Error(`no price for size ${tier}`);
    sync += BigInt(images) * BigInt(unit);
  }
  const [ratio, scale] = toScaled(model.batchRatio);
  return Number((sync * ratio + scale - 1n) / scale);
}
