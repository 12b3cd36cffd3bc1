import { CHANNELS, type NotificationListener, NotifiedCache, notify } from '../db/notifications.ts';
import { type Db, type Pool, withTransaction } from '../db/pool.ts';

/** What the service knows about one image model: capabilities (checked at validation) and prices. */
export interface ModelInfo {
  /** The name clients send in `body.model`, e.g. `gemini-2.5-flash-image`. */
  id: string;
  /** The Vertex model resource, e.g. `publishers/google/models/gemini-2.5-flash-image`. */
  publisherModel: string;
  /** Aspect ratios the model accepts in `imageConfig.aspectRatio`. */
  aspectRatios: string[];
  /** Size tiers the model accepts in `imageConfig.imageSize` (`1K`, `2K`, `4K`). */
  imageSizes: string[];
  defaultImageSize: string;
  maxPromptChars: number;
  maxReferenceImages: number;
  /** Sync price of one image per size tier, in integer quota units. */
  unitPrices: Record<string, number>;
  /** Discount applied to batch work, e.g. 0.5. */
  batchRatio: number;
  enabled: boolean;
}

/** A models row: prices as stored (base × multiplier; decimals as text, to stay exact). */
type ModelRow = Omit<ModelInfo, 'unitPrices' | 'batchRatio'> & {
  basePrices: Record<string, number>;
  priceMultiplier: string;
  batchRatio: string;
};

const modelColumns = `id, publisher_model AS "publisherModel", aspect_ratios AS "aspectRatios", image_sizes AS "imageSizes",
  default_image_size AS "defaultImageSize", max_prompt_chars AS "maxPromptChars",
  max_reference_images AS "maxReferenceImages", base_prices AS "basePrices",
  price_multiplier::text AS "priceMultiplier", batch_ratio::text AS "batchRatio", enabled`;

/** Model rows as ModelInfo; `batchRatioOverride` (BATCH_RATIO) replaces every model's own ratio. */
export async function listModels(db: Db, batchRatioOverride: string | null, onlyEnabled = false): Promise<ModelInfo[]> {
  const { rows } = await db.query<ModelRow>(
    `SELECT ${modelColumns} FROM models ${onlyEnabled ? 'WHERE enabled' : ''} ORDER BY id`,
  );
  return rows.map((r) => toModelInfo(r, batchRatioOverride));
}

/**
 * The catalog as the service reads it: every sync image request, batch validation and
 * `GET /v1/models` needs it, so each process keeps it in memory, dropped in every process by the
 * notification an edit sends at commit (and at most 1 s old should one be lost). The objects
 * handed out are shared: read them, never change them.
 */
export class ModelCatalog {
  private readonly pool: Pool;
  private readonly batchRatioOverride: string | null;
  private readonly cache: NotifiedCache<ModelInfo[]>;

  /** `listener` null: no cache (every read queries the database). */
  constructor(deps: { pool: Pool; batchRatioOverride: string | null; listener: NotificationListener | null }) {
    this.pool = deps.pool;
    this.batchRatioOverride = deps.batchRatioOverride;
    this.cache = new NotifiedCache({
      listener: deps.listener,
      channel: CHANNELS.modelChanged,
      clearOn: 'any',
      ttlMs: 1000,
      maxEntries: 1,
    });
  }

  async list(onlyEnabled: boolean): Promise<ModelInfo[]> {
    const all = await this.cache.get('all', () => listModels(this.pool, this.batchRatioOverride));
    return onlyEnabled ? all.filter((m) => m.enabled) : all;
  }

  /** Insert or edit one model (admin API); every process sees the change once this returns. */
  async save(id: string, patch: ModelPatch): Promise<void> {
    await withTransaction(this.pool, async (tx) => {
      await upsertModel(tx, id, patch);
      await notify(tx, CHANNELS.modelChanged, id);
    });
    this.cache.clear();
  }
}

export interface ModelPatch {
  publisherModel?: string;
  aspectRatios?: string[];
  imageSizes?: string[];
  defaultImageSize?: string;
  maxPromptChars?: number;
  maxReferenceImages?: number;
  basePrices?: Record<string, number>;
  priceMultiplier?: number;
  batchRatio?: number;
  enabled?: boolean;
}

/** Insert or update one model (admin API); only the given fields change. */
export async function upsertModel(db: Db, id: string, patch: ModelPatch): Promise<void> {
  await db.query(
    `INSERT INTO models (id, publisher_model, aspect_ratios, image_sizes, default_image_size, max_prompt_chars,
                         max_reference_images, base_prices, price_multiplier, batch_ratio, enabled)
     VALUES ($1, coalesce($2, 'publishers/google/models/' || $1), coalesce($3, ARRAY['1:1']), coalesce($4, ARRAY['1K']),
             coalesce($5, '1K'), coalesce($6, 32000), coalesce($7, 3),
             coalesce($8::jsonb, '{"1K": 5000, "2K": 5000, "4K": 12500}'::jsonb), coalesce($9::numeric, 1), coalesce($10::numeric, 0.5), coalesce($11::boolean, true))
     ON CONFLICT (id) DO UPDATE SET
       publisher_model = coalesce($2, models.publisher_model),
       aspect_ratios = coalesce($3, models.aspect_ratios),
       image_sizes = coalesce($4, models.image_sizes),
       default_image_size = coalesce($5, models.default_image_size),
       max_prompt_chars = coalesce($6, models.max_prompt_chars),
       max_reference_images = coalesce($7, models.max_reference_images),
       base_prices = coalesce($8, models.base_prices),
       price_multiplier = coalesce($9::numeric, models.price_multiplier),
       batch_ratio = coalesce($10::numeric, models.batch_ratio),
       enabled = coalesce($11, models.enabled),
       updated_at = now()`,
    [
      id,
      patch.publisherModel ?? null,
      patch.aspectRatios ?? null,
      patch.imageSizes ?? null,
      patch.defaultImageSize ?? null,
      patch.maxPromptChars ?? null,
      patch.maxReferenceImages ?? null,
      patch.basePrices ?? null,
      patch.priceMultiplier ?? null,
      patch.batchRatio ?? null,
      patch.enabled ?? null,
    ],
  );
}

function toModelInfo(r: ModelRow, batchRatioOverride: string | null): ModelInfo {
  const unitPrices: Record<string, number> = {};
  // Unit prices are whole quota units: base × multiplier, rounded up once per tier.
  for (const [tier, base] of Object.entries(r.basePrices)) unitPrices[tier] = mulDecimalCeil(base, r.priceMultiplier);
  return {
    id: r.id,
    publisherModel: r.publisherModel,
    aspectRatios: r.aspectRatios,
    imageSizes: r.imageSizes,
    defaultImageSize: r.defaultImageSize,
    maxPromptChars: r.maxPromptChars,
    maxReferenceImages: r.maxReferenceImages,
    unitPrices,
    batchRatio: Number(batchRatioOverride ?? r.batchRatio),
    enabled: r.enabled,
  };
}

/** Exact `integer × decimal`, rounded up, without floating point. */
export function mulDecimalCeil(n: number, decimal: string | number): number {
  const [scaled, scale] = toScaled(decimal);
  const product = BigInt(n) * scaled;
  return Number((product + scale - 1n) / scale);
}

/** `'0.5'` → [5000n, 10000n]: a decimal as an integer over 10^4. */
export function toScaled(decimal: string | number): [bigint, bigint] {
  const s = typeof decimal === 'number' ? decimal.toFixed(4) : decimal;
  const [whole, frac = ''] = s.split('.');
  const digits = `${frac}0000`.slice(0, 4);
  return [BigInt(whole) * 10000n + BigInt(digits), 10000n];
}
