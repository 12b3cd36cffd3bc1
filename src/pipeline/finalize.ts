import * as batches from '../batches/batch-queries.ts';
import { batchPrice } from '../billing/pricing.ts';
import { withTransaction } from '../db/pool.ts';
import { findBatchInputFile, insertFile } from '../files/file-queries.ts';
import { newId, randomToken } from '../ids.ts';
import type { Services } from '../services.ts';
import { resultKeys, shardKeys } from '../storage/object-keys.ts';
import { finish, gatherWrites } from '../storage/streams.ts';
import { endBatch } from '../webhooks/batch-events.ts';
import { abandonBatch } from './dead-letter.ts';
import { objectImageSink } from './image-sink.ts';
import { defineJob, LONG_STEP } from './job.ts';
import { readJsonLines } from './json-lines.ts';
import { listShards, type ShardRow } from './shard-queries.ts';
import type { ManifestLine } from './stage.ts';
import { type ShardLine, stitchShard } from './stitcher.ts';

const VERTEX_FAILED = new Set(['JOB_STATE_FAILED', 'JOB_STATE_EXPIRED']);

interface Tally {
  linesCompleted: number;
  linesFailed: number;
  imagesSucceeded: number;
  /** Successful images per size tier: what the batch is finally billed for. */
  succeededBySize: Record<string, number>;
  /** Url-mode images stored under this run's images prefix. */
  imagesLinked: number;
}

/**
 * Step 5: stitch every shard's predictions into one output file and one error file, in input
 * order, then settle — final status, files, request counts, settled amount and refund (with
 * its `difference` log row) in one transaction. Running twice stitches twice, into objects of
 * each run's own, and settles once: the status compare-and-set admits only the first.
 */
export async function finalizeBatch(s: Services, batchId: string): Promise<void> {
  const batch = await batches.findBatch(s.pool, batchId);
  if (batch?.status !== 'finalizing') return;
  const shards = await listShards(s.pool, batchId);
  // Keys of this run's own: a second run (a redelivered job) never overwrites the files the
  // first one settled with; whichever commits first wins, and the other deletes its copies.
  const run = randomToken(8).toLowerCase();
  const keys = resultKeys(batch.userId, batchId, run);
  const tally = await stitchAll(s, batch, shards, keys);

  // Every Vertex job failed (or expired unstarted in Vertex's queue): the batch failed; anything
  // less is a completed batch with failures.
  const outcome =
    batch.outcome ??
    (shards.length && shards.every((x) => VERTEX_FAILED.has(x.vertexState ?? '')) ? 'failed' : 'completed');
  // Priced as it was charged: a price or ratio changed meanwhile cannot skew the refund.
  const settled = Math.min(batch.preDeducted, batchPrice(batch.modelSnapshot!, tally.succeededBySize));
  const refund = batch.preDeducted - settled;
  const [outputBytes, errorBytes] = await Promise.all([s.store.size(keys.output), s.store.size(keys.errors)]);

  const retentionMs = batch.outputExpiresSeconds
    ? batch.outputExpiresSeconds * 1000
    : s.config.delivery.fileRetentionMs;
  const files = await withTransaction(s.pool, async (tx) => {
    const locked = await batches.findBatch(tx, batchId, { forUpdate: true });
    if (locked?.status !== 'finalizing') return null;
    const file = async (
      purpose: 'batch_output' | 'batch_error',
      key: string,
      bytes: number,
      name: string,
      companionPrefix: string | null = null,
    ) =>
      (
        await insertFile(tx, {
          id: newId('file'),
          userId: batch.userId,
          purpose,
          filename: `${batchId}_${name}.jsonl`,
          bytes,
          mimeType: 'application/jsonl',
          objectKey: key,
          retentionMs,
          companionPrefix,
        })
      ).id;
    // The url-mode images go with the output file (deleted or expired with it).
    const images = tally.imagesLinked > 0 ? keys.images : null;
    const outputFileId =
      tally.linesCompleted > 0 ? await file('batch_output', keys.output, outputBytes, 'output', images) : null;
    const errorFileId = errorBytes > 0 ? await file('batch_error', keys.errors, errorBytes, 'errors') : null;
    const failures = vertexFailures(shards);
    // Only rows and jobs besides the status: the webhooks are sent by their own jobs once this commits.
    await endBatch(s, tx, batchId, ['finalizing'], outcome, {
      outputFileId,
      errorFileId,
      requestCompleted: tally.linesCompleted,
      requestFailed: tally.linesFailed,
      imageSucceeded: tally.imagesSucceeded,
      settled,
      refunded: refund,
      ...(failures.length ? { errors: failures } : {}),
    });
    await s.billing.refundIn(tx, {
      userId: batch.userId,
      batchId,
      model: batch.model,
      amount: refund,
      content: `batch ${batchId} ${outcome}: ${tally.imagesSucceeded} of ${batch.imageTotal} image(s) generated; settled ${settled} of ${batch.preDeducted}, refunded ${refund}`,
    });
    return { outputFileId, errorFileId };
  });
  // Objects no file record points at (empty, or another run's win) go now; so, once settled, do
  // the staging inputs and Vertex's copies: the output file holds every image.
  if (!files?.outputFileId) await s.store.delete(keys.output);
  if (!files?.errorFileId) await s.store.delete(keys.errors);
  if (!files?.outputFileId && tally.imagesLinked > 0) await s.store.deletePrefix(keys.images);
  if (files) for (const shard of shards) await s.store.deletePrefix(shardKeys(batch.userId, batchId, shard.seq).dir);
}

/** One batch error per shard whose Vertex job failed or expired. */
function vertexFailures(shards: ShardRow[]): batches.BatchError[] {
  return shards
    .filter((x) => VERTEX_FAILED.has(x.vertexState ?? ''))
    .map((x) => {
      const expired = x.vertexState === 'JOB_STATE_EXPIRED';
      const what = expired ? 'expired in the queue' : 'failed';
      return {
        code: expired ? 'vertex_job_expired' : 'vertex_job_failed',
        message: `The Vertex job for requests ${x.firstLine + 1}–${x.firstLine + x.requestCount} ${what}${x.error ? `: ${x.error.message}` : ''}`,
        param: null,
        line: null,
      };
    });
}

async function stitchAll(
  s: Services,
  batch: batches.BatchRow,
  shards: ShardRow[],
  keys: { output: string; errors: string; images: string },
): Promise<Tally> {
  const tally: Tally = { linesCompleted: 0, linesFailed: 0, imagesSucceeded: 0, succeededBySize: {}, imagesLinked: 0 };
  const storeImage = objectImageSink({ store: s.store, links: s.links, prefix: keys.images });
  // The stitcher writes a line in a few pieces: gathered into bigger chunks on their way to the store.
  const output = gatherWrites(s.store.writeStream(keys.output, 'application/jsonl'));
  const errorOutput = gatherWrites(s.store.writeStream(keys.errors, 'application/jsonl'));
  const stitch = async (lines: AsyncIterable<{ value: ManifestLine }>, predictionKeys: string[]) => {
    const tiers = new Map<number, string>();
    async function* shardLines(): AsyncGenerator<ShardLine> {
      for await (const { value: m } of lines) {
        tiers.set(m.i, m.t);
        yield { lineIndex: m.i, customId: m.c, n: m.n, responseFormat: m.f === 'url' ? 'url' : 'b64_json' };
      }
    }
    await stitchShard({
      lines: shardLines(),
      predictionFiles: predictionKeys.map(
        (key) => (range?: { start: number; end: number }) => s.store.readStream(key, range),
      ),
      output,
      errorOutput,
      newRequestId: () => newId('batch_req'),
      images: (image) => {
        tally.imagesLinked++;
        return storeImage(image);
      },
      onLine: (line, imagesSucceeded) => {
        const tier = tiers.get(line.lineIndex)!;
        tiers.delete(line.lineIndex);
        if (imagesSucceeded === 0) return void tally.linesFailed++;
        tally.linesCompleted++;
        tally.imagesSucceeded += imagesSucceeded;
        tally.succeededBySize[tier] = (tally.succeededBySize[tier] ?? 0) + imagesSucceeded;
      },
    });
  };
  try {
    if (!shards.length) {
      // Cancelled or expired before staging: every request is reported, none was sent.
      await stitch(inputLines(s, batch), []);
    }
    for (const shard of shards) {
      const manifestKey = shardKeys(batch.userId, batch.id, shard.seq).manifest;
      const manifest = readJsonLines<ManifestLine>(s.store.readStream(manifestKey));
      await stitch(manifest, shard.outputDir ? await predictionKeys(s, shard.outputDir) : []);
    }
    await Promise.all([finish(output), finish(errorOutput)]);
  } catch (err) {
    output.destroy();
    errorOutput.destroy();
    // A retry stitches into a run of its own: this run's images would be orphans (best effort,
    // the stitch's own error is the one to report).
    if (tally.imagesLinked > 0) await s.store.deletePrefix(keys.images).catch(() => {});
    throw err;
  }
  return tally;
}

/** The batch's requests read from its input file, as manifest lines (for a batch never staged). */
async function* inputLines(s: Services, batch: batches.BatchRow): AsyncGenerator<{ value: ManifestLine }> {
  const input = (await findBatchInputFile(s.pool, batch.userId, batch.inputFileId))!;
  for await (const { index, value } of readJsonLines<{ custom_id: string; body: { n?: number } }>(
    s.store.readStream(input.objectKey),
  )) {
    yield { value: { i: index, c: value.custom_id, n: value.body.n ?? 1, t: '' } };
  }
}

/** Every predictions file in a job's output directory, whatever Vertex named them. */
async function predictionKeys(s: Services, outputDir: string): Promise<string[]> {
  const objects = await s.store.list(s.store.keyOf(outputDir.endsWith('/') ? outputDir : `${outputDir}/`));
  return objects
    .map((o) => o.key)
    .filter((k) => /(^|\/)(predictions[^/]*\.jsonl|prediction\.results-[^/]*)$/.test(k))
    .sort();
}

export const finalizeJob = defineJob<{ batchId: string }>({
  name: 'batch-finalize',
  queue: LONG_STEP,
  handle: (s, { batchId }) => finalizeBatch(s, batchId),
  onDead: (s, { batchId }, error) => abandonBatch(s, batchId, error),
});
