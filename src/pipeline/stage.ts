import { createHash } from 'node:crypto';
import * as batches from '../batches/batch-queries.ts';
import { isLive } from '../batches/batch-states.ts';
import type { ModelInfo } from '../billing/model-catalog.ts';
import { withTransaction } from '../db/pool.ts';
import { findBatchInputFile, findOwnedVisionFiles } from '../files/file-queries.ts';
import type { Services } from '../services.ts';
import { shardKeys } from '../storage/object-keys.ts';
import { finish, gatherWrites, writeWithBackpressure } from '../storage/streams.ts';
import {
  type ImageRequestBody,
  type ReferenceImage,
  referencedFileIds,
  sizeTier,
  toGeminiLines,
} from '../vertex/translate.ts';
import { abandonBatch } from './dead-letter.ts';
import { defineJob, LONG_STEP } from './job.ts';
import { readJsonLines } from './json-lines.ts';
import { insertShard, listShards, type NewShard } from './shard-queries.ts';
import { submitJob } from './submit.ts';

/** One line of a shard's manifest: what stitching needs to know of each request, in order. */
export interface ManifestLine {
  i: number; // request index in the batch
  c: string; // custom_id
  n: number; // images asked for
  t: string; // size tier, for settlement
  f?: 'url'; // response_format, only when `url` (older manifests have none: b64_json)
}

/** A shard id is derived from its batch and position, so staging twice names the same shards. */
export function shardId(batchId: string, seq: number): string {
  return `sh-${createHash('sha256').update(`${batchId}/${seq}`).digest('hex').slice(0, 32)}`;
}

/**
 * Step 2: translate every request into Gemini batch lines (one per image) and write them,
 * streaming, into shards of at most SHARD_MAX_REQUESTS requests and SHARD_MAX_BYTES bytes,
 * each with a manifest. The shard rows and their submit jobs commit together, and only
 * while the batch is live; running twice rewrites the same objects.
 */
export async function stageBatch(s: Services, batchId: string): Promise<void> {
  const batch = await batches.findBatch(s.pool, batchId);
  if (!batch || !isLive(batch)) return;
  const existing = await listShards(s.pool, batchId);
  if (existing.length) {
    for (const shard of existing.filter((x) => x.status === 'staged')) {
      await s.queue.send(submitJob, { shardId: shard.id }, { key: shard.id });
    }
    return;
  }
  const model = batch.modelSnapshot!;
  const input = (await findBatchInputFile(s.pool, batch.userId, batch.inputFileId))!;
  const shards = await writeShards(s, batch, model, input.objectKey);

  await withTransaction(s.pool, async (tx) => {
    const locked = await batches.findBatch(tx, batchId, { forUpdate: true });
    if (!locked || !isLive(locked) || (await listShards(tx, batchId)).length) return;
    for (const shard of shards) {
      await insertShard(tx, shard);
      await s.queue.send(submitJob, { shardId: shard.id }, { tx, key: shard.id });
    }
  });
}

async function writeShards(
  s: Services,
  batch: batches.BatchRow,
  model: ModelInfo,
  inputKey: string,
): Promise<NewShard[]> {
  const { shardMaxRequests, shardMaxBytes } = s.config.limits;
  const references = new Map<string, ReferenceImage>();
  const shards: NewShard[] = [];
  let current: OpenShard | null = null;

  for await (const { index, value } of readJsonLines<{ custom_id: string; body: ImageRequestBody }>(
    s.store.readStream(inputKey),
  )) {
    const body = value.body;
    const refs = await resolveReferences(s, batch.userId, referencedFileIds(body), references);
    let text = '';
    for (const line of toGeminiLines(body, { lineIndex: index, model, references: refs }))
      text += `${JSON.stringify(line)}\n`;
    const bytes = Buffer.byteLength(text);
    // A request never straddles two shards; a shard closes before it would exceed either bound.
    if (current && (current.shard.requestCount >= shardMaxRequests || current.bytes + bytes > shardMaxBytes)) {
      shards.push(await current.close());
      current = null;
    }
    current ??= openShard(s, batch, model, shards.length, index);
    const n = body.n ?? 1;
    const m: ManifestLine = { i: index, c: value.custom_id, n, t: sizeTier(body, model) };
    if (body.response_format === 'url') m.f = 'url';
    await current.write(text, bytes, n, m);
  }
  if (current) shards.push(await current.close());
  return shards;
}

interface OpenShard {
  shard: NewShard;
  bytes: number;
  write(text: string, bytes: number, images: number, manifest: ManifestLine): Promise<void>;
  close(): Promise<NewShard>;
}

function openShard(s: Services, batch: batches.BatchRow, model: ModelInfo, seq: number, firstLine: number): OpenShard {
  const keys = shardKeys(batch.userId, batch.id, seq);
  // Written a line at a time: gathered into bigger chunks on their way to the store.
  const input = gatherWrites(s.store.writeStream(keys.input, 'application/jsonl'));
  const manifest = gatherWrites(s.store.writeStream(keys.manifest, 'application/jsonl'));
  const shard: NewShard = {
    id: shardId(batch.id, seq),
    batchId: batch.id,
    seq,
    model: model.id,
    firstLine,
    requestCount: 0,
    imageCount: 0,
    inputUri: s.store.uri(keys.input),
    outputPrefix: s.store.uri(keys.output),
  };
  const open: OpenShard = {
    shard,
    bytes: 0,
    async write(text, bytes, images, m) {
      open.bytes += bytes;
      shard.requestCount++;
      shard.imageCount += images;
      await writeWithBackpressure(input, text);
      await writeWithBackpressure(manifest, `${JSON.stringify(m)}\n`);
    },
    async close() {
      await Promise.all([finish(input), finish(manifest)]);
      return shard;
    },
  };
  return open;
}

async function resolveReferences(
  s: Services,
  userId: number,
  ids: string[],
  cache: Map<string, ReferenceImage>,
): Promise<ReferenceImage[]> {
  const missing = ids.filter((id) => !cache.has(id));
  if (missing.length) {
    for (const f of await findOwnedVisionFiles(s.pool, userId, missing)) {
      cache.set(f.id, { gcsUri: s.store.uri(f.objectKey), mimeType: f.mimeType });
    }
  }
  return ids.map((id) => {
    const ref = cache.get(id);
    // Validation checked every reference; a file deleted since then cannot be sent.
    if (!ref) throw new Error(`reference image ${id} is gone`);
    return ref;
  });
}

export const stageJob = defineJob<{ batchId: string }>({
  name: 'batch-stage',
  queue: LONG_STEP,
  handle: (s, { batchId }) => stageBatch(s, batchId),
  onDead: (s, { batchId }, error) => abandonBatch(s, batchId, error),
});
