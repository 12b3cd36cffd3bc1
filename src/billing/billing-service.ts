import type pg from 'pg';
import type { Db, Pool } from '../db/pool.ts';
import { afterCommit, withTransaction } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import * as q from './billing-queries.ts';

/** A quota move for one batch or one image job (the id its log row is tied to). */
type Charge = { userId: number; amount: number; content: string } & (
  | { batchId: string; imageJobId?: undefined }
  | { imageJobId: string; batchId?: undefined }
);

/**
 * Every quota move lives here. Each one changes the quota and writes its log row in one
 * statement on the caller's transaction (which takes the user's row lock), so for every user:
 * quota change = Σ log deltas.
 */
export class BillingService {
  private readonly pool: Pool;
  private readonly onLogged: (type: q.LogType, quotaDelta: number) => void;

  /** `onLogged` hears of each log row once its transaction has committed (the metrics count them). */
  constructor(deps: { pool: Pool; onLogged?: (type: q.LogType, quotaDelta: number) => void }) {
    this.pool = deps.pool;
    this.onLogged = deps.onLogged ?? (() => {});
  }

  async topUp(userId: number, amount: number, note = 'top-up'): Promise<void> {
    await withTransaction(this.pool, (tx) => this.topUpIn(tx, userId, amount, note));
  }

  async topUpIn(tx: pg.PoolClient, userId: number, amount: number, note: string): Promise<void> {
    if (!Number.isSafeInteger(amount) || amount <= 0) {
      throw new ApiError('invalid_quota', 'quota must be a positive whole number of quota units', 'quota');
    }
    // A positive move is never refused: nothing moved means no such user.
    const moved = await this.move(tx, {
      userId,
      delta: amount,
      usedDelta: 0,
      type: 'topup',
      content: `${note}: +${amount}`,
    });
    if (!moved) throw notFound('user', userId);
  }

  /**
   * Takes `amount` from the user's remaining quota for a batch or an image job. Returns false,
   * changing nothing, when the user has less than that left.
   */
  preDeductIn(tx: pg.PoolClient, charge: Charge & { model: string }): Promise<boolean> {
    return this.move(tx, { ...charge, delta: -charge.amount, usedDelta: charge.amount, type: 'pre_deduction' });
  }

  /** Gives back `refund` of a pre-deduction; a difference row only when it is not zero. */
  async refundIn(tx: pg.PoolClient, refund: Charge & { model: string | null }): Promise<void> {
    if (refund.amount === 0) return;
    const moved =
      refund.amount > 0 &&
      (await this.move(tx, { ...refund, delta: refund.amount, usedDelta: -refund.amount, type: 'difference' }));
    if (!moved) {
      throw new Error(`refund of ${refund.amount} for ${refund.batchId ?? refund.imageJobId} cannot be applied`);
    }
  }

  private async move(tx: pg.PoolClient, move: Parameters<typeof q.moveQuotaLogged>[1]): Promise<boolean> {
    if (!(await q.moveQuotaLogged(tx, move))) return false;
    afterCommit(tx, () => this.onLogged(move.type, move.delta));
    return true;
  }

  /**
   * A user's quota against their log rows. Users start at 0 and every move writes its row, so
   * `balanced` (quota = Σ log deltas) must always hold; false means a move escaped the ledger.
   */
  async ledger(userId: number): Promise<{ quota: number; logSum: number; logCount: number; balanced: boolean }> {
    const row = await q.userLedger(this.pool, userId);
    if (!row) throw notFound('user', userId);
    return { ...row, balanced: row.quota === row.logSum };
  }

  logs(db: Db, filter: Parameters<typeof q.listLogs>[1]) {
    return q.listLogs(db, filter);
  }
}
