import type { BatchError } from '../batches/batch-queries.ts';
import * as batches from '../batches/batch-queries.ts';
import { batchPrice } from '../billing/pricing.ts';
import { withTransaction } from '../db/pool.ts';
import { findBatchInputFile, findOwnedVisionFiles } from '../files/file-queries.ts';
import type { Services } from '../services.ts';
import { endBatch } from '../webhooks/batch-events.ts';
import { abandonBatch } from './dead-letter.ts';
import { defineJob, LONG_STEP } from './job.ts';
import { type ValidationResult, validateBatchInput } from './line-validator.ts';
import { stageJob } from './stage.ts';

/**
 * Step 1: stream the uploaded JSONL through the line validator. Any invalid line fails the
 * batch with the full (capped) list and nothing charged. A valid batch is priced, and the
 * pre-deduction, its log row and the move to `in_progress` commit together — or, without
 * enough quota, the batch fails with `insufficient_quota` and nothing moves.
 */
export async function validateBatch(s: Services, batchId: string): Promise<void> {
  const batch = await batches.findBatch(s.pool, batchId);
  if (batch?.status !== 'validating') return;
  const input = await findBatchInputFile(s.pool, batch.userId, batch.inputFileId);
  if (!input) return;

  const models = new Map((await s.models(true)).map((m) => [m.id, m]));
  const result = await validateBatchInput(s.store.readStream(input.objectKey), {
    models,
    endpoint: batch.endpoint,
    maxRequests: s.config.limits.batchMaxRequests,
    maxErrors: s.config.limits.maxErrorsListed,
    findOwnedVisionFiles: async (ids) =>
      new Set((await findOwnedVisionFiles(s.pool, batch.userId, ids)).map((f) => f.id)),
  });

  if (result.errorCount > 0 || !result.model) {
    await fail(s, batchId, listedErrors(result), result);
    return;
  }
  const model = models.get(result.model)!;
  const price = batchPrice(model, result.imagesBySize);
  await withTransaction(s.pool, async (tx) => {
    const locked = await batches.findBatch(tx, batchId, { forUpdate: true });
    if (locked?.status !== 'validating') return;
    const charged = await s.billing.preDeductIn(tx, {
      userId: batch.userId,
      batchId,
      model: model.id,
      amount: price,
      content: `batch ${batchId}: ${result.imageCount} image(s) of ${model.id} (${sizes(result.imagesBySize)}) × batch ratio ${model.batchRatio}`,
    });
    if (!charged) {
      const { rows } = await tx.query<{ quota: number }>('SELECT quota FROM users WHERE id = $1', [batch.userId]);
      const error: BatchError = {
        code: 'insufficient_quota',
        message: `This batch costs ${price} quota units and you have ${rows[0].quota} left.`,
        param: null,
        line: null,
      };
      await endBatch(s, tx, batchId, ['validating'], 'failed', failedChanges([error], model.id));
      return;
    }
    await batches.transition(tx, batchId, ['validating'], 'in_progress', {
      model: model.id,
      requestTotal: result.requestCount,
      imageTotal: result.imageCount,
      preDeducted: price,
      modelSnapshot: model,
    });
    await s.queue.send(stageJob, { batchId }, { tx, key: batchId });
  });
}

const sizes = (bySize: Record<string, number>) =>
  Object.entries(bySize)
    .map(([t, n]) => `${n}×${t}`)
    .join(', ');

/** The capped list, with one more entry saying how many were left out. */
function listedErrors(result: ValidationResult): BatchError[] {
  const listed: BatchError[] = result.errors.map((e) => ({
    code: e.code,
    message: e.message,
    param: e.param,
    line: e.line,
  }));
  const more = result.errorCount - listed.length;
  if (more > 0) {
    listed.push({ code: 'too_many_errors', message: `${more} more error(s) not listed.`, param: null, line: null });
  }
  if (!listed.length)
    listed.push({ code: 'empty_file', message: 'The file holds no request.', param: null, line: null });
  return listed;
}

function failedChanges(errors: BatchError[], model: string | null): batches.BatchChanges {
  return { errors, outcome: 'failed', model, settled: 0, refunded: 0 };
}

/** Ends the batch `failed`; its event commits with the status (a transaction for that alone). */
async function fail(s: Services, batchId: string, errors: BatchError[], result: ValidationResult) {
  await withTransaction(s.pool, (tx) =>
    endBatch(s, tx, batchId, ['validating'], 'failed', failedChanges(errors, result.model)),
  );
}

export const validateJob = defineJob<{ batchId: string }>({
  name: 'batch-validate',
  queue: LONG_STEP,
  handle: (s, { batchId }) => validateBatch(s, batchId),
  onDead: (s, { batchId }, error) => abandonBatch(s, batchId, error),
});
