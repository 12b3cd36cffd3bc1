/**
 * The life of a batch. Every status change goes through `transition()` (batch-queries.ts), which
 * refuses a move this table does not allow: the rules live here, once.
 */
export const BATCH_STATUSES = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];
export type BatchOutcome = 'completed' | 'failed' | 'cancelled' | 'expired';

export const TRANSITIONS: Readonly<Record<BatchStatus, readonly BatchStatus[]>> = {
  // Invalid lines or not enough quota fail it; cancel and expiry end it with nothing charged.
  validating: ['in_progress', 'failed', 'cancelled', 'expired'],
  // Charged and running. `failed` only when a step failed for good (the dead-letter path, full refund).
  in_progress: ['finalizing', 'cancelling', 'failed'],
  cancelling: ['finalizing', 'failed'],
  // Stitching and settling end it as its outcome says.
  finalizing: ['completed', 'failed', 'cancelled', 'expired'],
  completed: [],
  failed: [],
  expired: [],
  cancelled: [],
};

export const FINISHED: readonly BatchStatus[] = BATCH_STATUSES.filter((s) => TRANSITIONS[s].length === 0);

export function canTransition(from: BatchStatus, to: BatchStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

export const isBatchStatus = (value: string): value is BatchStatus =>
  (BATCH_STATUSES as readonly string[]).includes(value);

/** A batch that is still meant to run: in progress, not cancelled and not expiring. */
export const isLive = (b: { status: BatchStatus; outcome: BatchOutcome | null }) =>
  b.status === 'in_progress' && b.outcome === null;
