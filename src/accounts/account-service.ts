import { hash } from 'node:crypto';
import type { BillingService } from '../billing/billing-service.ts';
import { CHANNELS, type NotificationListener, NotifiedCache, notify } from '../db/notifications.ts';
import type { Pool } from '../db/pool.ts';
import { withTransaction } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import { randomToken } from '../ids.ts';
import type { Page } from '../keyset-page.ts';
import * as q from './account-queries.ts';

/** One-shot: every authenticated request hashes its key, and a Hash object per call cost several µs. */
export const hashKey = (key: string) => hash('sha256', key, 'hex');

/**
 * Authentication is on every request, so each process keeps key → user in memory (by the key's
 * hash; the key itself is never kept). A revocation NOTIFYs every process in its transaction,
 * which drop the key at once; the TTL bounds staleness to 1 s should a notification be lost
 * on a connection not yet known to be dead (while the listener is known down, nothing is cached).
 * At one lookup per key per second per process, the database barely sees authentication.
 */
const KEY_CACHE_TTL_MS = 1000;
const KEY_CACHE_MAX_ENTRIES = 10_000;

/** Users and their API keys: the gateway's side of identity. */
export class AccountService {
  private readonly pool: Pool;
  private readonly billing: BillingService;
  /** Key hash → user id, for keys that authenticated (unknown keys are not kept). */
  private readonly keys: NotifiedCache<number | null>;

  /** `listener` null: no key cache (every request reads the database). */
  constructor(deps: { pool: Pool; billing: BillingService; listener: NotificationListener | null }) {
    this.pool = deps.pool;
    this.billing = deps.billing;
    this.keys = new NotifiedCache({
      listener: deps.listener,
      channel: CHANNELS.apiKeyRevoked,
      clearOn: 'key',
      ttlMs: KEY_CACHE_TTL_MS,
      maxEntries: KEY_CACHE_MAX_ENTRIES,
    });
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

  /** Every process refuses the key once this returns (its notification is sent at commit). */
  async revokeKey(userId: number, keyId: number): Promise<void> {
    const keyHash = await withTransaction(this.pool, async (tx) => {
      const hash = await q.revokeApiKey(tx, userId, keyId);
      if (hash) await notify(tx, CHANNELS.apiKeyRevoked, hash);
      return hash;
    });
    if (!keyHash) throw notFound('api_key', keyId);
    this.keys.drop(keyHash);
  }

  private async issueKey(db: Pool | Parameters<typeof q.insertApiKey>[0], userId: number): Promise<string> {
    const key = `sk-${randomToken(48)}`;
    await q.insertApiKey(db, userId, hashKey(key), `sk-…${key.slice(-4)}`);
    return key;
  }

  /** The user behind a bearer key, or null for an unknown or revoked key. */
  async authenticate(key: string): Promise<number | null> {
    if (!/^sk-[A-Za-z0-9]{16,128}$/.test(key)) return null;
    const keyHash = hashKey(key);
    return this.keys.get(
      keyHash,
      () => q.findUserIdByKeyHash(this.pool, keyHash),
      (userId) => userId !== null,
    );
  }

  /** Users newest first, `limit` after id `after`, optionally matching `search` (see listUsers). */
  async listUsers(opts: { limit: number; after: number | null; search: string | null }): Promise<Page<q.UserRow>> {
    const rows = await q.listUsers(this.pool, { ...opts, limit: opts.limit + 1 });
    return { page: rows.slice(0, opts.limit), hasMore: rows.length > opts.limit };
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
