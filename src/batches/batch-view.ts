import type { BatchRow } from './batch-queries.ts';

const unix = (d: Date | null) => (d ? Math.floor(d.getTime() / 1000) : null);

/** The OpenAI Batch object, plus `model` and `billing`. */
export function batchView(b: BatchRow) {
  return {
    id: b.id,
    object: 'batch',
    endpoint: b.endpoint,
    model: b.model,
    errors: b.errors ? { object: 'list', data: b.errors } : null,
    input_file_id: b.inputFileId,
    completion_window: '24h',
    status: b.status,
    output_file_id: b.outputFileId,
    error_file_id: b.errorFileId,
    created_at: unix(b.createdAt),
    in_progress_at: unix(b.inProgressAt),
    expires_at: unix(b.expiresAt),
    finalizing_at: unix(b.finalizingAt),
    completed_at: unix(b.completedAt),
    failed_at: unix(b.failedAt),
    expired_at: unix(b.expiredAt),
    cancelling_at: unix(b.cancellingAt),
    cancelled_at: unix(b.cancelledAt),
    request_counts: { total: b.requestTotal, completed: b.requestCompleted, failed: b.requestFailed },
    metadata: b.metadata,
    billing: { pre_deducted: b.preDeducted, settled: b.settled, refunded: b.refunded },
  };
}
