import { createHash } from 'node:crypto';
import type { BillingService } from '../billing/billing-service.ts';
import type { Pool } from '../db/pool.ts';
import { withTransaction } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import { randomToken } from '../ids.ts';
import * as q from './account-queries.ts';

export const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');

/** Users and their API keys: the gateway's side of identity. */
export class AccountService {
  private readonly pool: Pool;
  private readonly billing: BillingService;

  constructor(deps: { pool: Pool; billing: BillingService }) {
    this.pool = deps.pool;
    this.billing = deps.billing;
  }

  /** A new user with a fresh key; an opening quota is a top-up with its log row. */
  async createUser(name: string, quota: number): Promise<{ user: q.UserRow; apiKey: string }> {
    return withTransaction(this.pool, async (tx) => {
      const user = await q.insertUser(tx, name);
      const apiKey = await this.issueKey(tx, user.id);
      if (quota > 0) await this.billing.topUpIn(tx, user.id, quota, 'opening quota');
      return { user: (await q.findUser(tx, user.id))!, apiKey };
    });
  }

  async createKey(userId: number): Promise<string> {
    await this.getUser(userId);
    return this.issueKey(this.pool, userId);
  }

  listKeys(userId: number) {
    return q.listApiKeys(this.pool, userId);
  }

  async revokeKey(userId: number, keyId: number): Promise<void> {
    if (!(await q.revokeApiKey(this.pool, userId, keyId))) {
      throw notFound('api_key', keyId);
    }
  }

  private async issueKey(db: Pool | Parameters<typeof q.insertApiKey>[0], userId: number): Promise<string> {
    const key = `sk-${randomToken(48)}`;
    await q.insertApiKey(db, userId, hashKey(key), `sk-…${key.slice(-4)}`);
    return key;
  }

  /** The user behind a bearer key, or null for an unknown or revoked key. */
  async authenticate(key: string): Promise<number | null> {
    if (!/^sk-[A-Za-z0-9]{16,128}$/.test(key)) return null;
    return q.findUserIdByKeyHash(this.pool, hashKey(key));
  }

  async getUser(userId: number): Promise<q.UserRow> {
    const user = await q.findUser(this.pool, userId);
    if (!user) throw notFound('user', userId);
    return user;
  }

  /** Batch uploads need the privacy policy accepted first (403 otherwise, before anything is stored). */
  async requirePrivacy(userId: number): Promise<void> {
    const user = await this.getUser(userId);
    if (!user.privacyAcceptedAt) {
      throw new ApiError(
        'privacy_not_accepted',
        'Accept the image batch privacy policy first: PUT /api/image-batch-privacy {"accept": true}.',
        'purpose',
      );
    }
  }

  async acceptPrivacy(userId: number, body: unknown): Promise<Date> {
    const accept = (body as { accept?: unknown } | null)?.accept;
    if (accept !== true) {
      throw new ApiError(
        'privacy_not_accepted',
        'Send {"accept": true} to accept the image batch privacy policy.',
        'accept',
        400,
      );
    }
    return q.acceptPrivacy(this.pool, userId);
  }
}
