import type pg from 'pg';
import { DatabaseClient, type Db } from './pool.ts';

/** Channels the service NOTIFYs on: every process LISTENs to drop what its caches hold. */
export const CHANNELS = {
  /** Payload: the sha256 of a revoked API key (never the key). */
  apiKeyRevoked: 'ibg_api_key_revoked',
  /** Payload: the id of the model that changed. */
  modelChanged: 'ibg_model_changed',
  /** Payload: the ids of the users whose batches a statement changed, comma-separated; `*`: anyone's (sql/0007). */
  batchesChanged: 'ibg_batches_changed',
} as const;
export type Channel = (typeof CHANNELS)[keyof typeof CHANNELS];

/**
 * Sends a notification; inside a transaction it is delivered at commit (and never on rollback),
 * so a cache can never drop an entry for a change that did not happen, nor miss one that did.
 */
export async function notify(db: Db, channel: Channel, payload: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [channel, payload]);
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;

/**
 * One dedicated connection per process LISTENing on every channel. A cache that trusts it must
 * also hear `onReset`: while the connection is down (and when it comes back) notifications may
 * have been missed, so whatever the cache holds is suspect. `listening` says whether it is up.
 * The connection is remade with backoff until `stop()`.
 */
export class NotificationListener {
  private readonly connectionString: string;
  private readonly onError: (err: unknown) => void;
  private readonly handlers = new Map<Channel, Array<(payload: string) => void>>();
  private readonly resets: Array<() => void> = [];
  private client: pg.Client | null = null;
  private stopped = false;
  private retryMs = RETRY_MIN_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  private up = false;

  /** `onError`: the connection failed or broke (it is remade; the caches are bypassed meanwhile). */
  constructor(connectionString: string, onError: (err: unknown) => void) {
    this.connectionString = connectionString;
    this.onError = onError;
  }

  get listening(): boolean {
    return this.up;
  }

  on(channel: Channel, handler: (payload: string) => void): void {
    this.handlers.set(channel, [...(this.handlers.get(channel) ?? []), handler]);
  }

  onReset(handler: () => void): void {
    this.resets.push(handler);
  }

  /** Connects and LISTENs; resolves once listening (or once the first attempt failed: it retries on its own). */
  async start(): Promise<void> {
    await this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.down();
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    this.retryTimer = null;
    if (this.stopped) return;
    // TCP keepalive notices a silently dead peer; the caches' short TTL bounds what it misses meanwhile.
    const client = new DatabaseClient({
      connectionString: this.connectionString,
      application_name: 'ibg-notifications',
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    this.client = client;
    let failed = false;
    const fail = (err: unknown) => {
      if (failed || this.stopped) return;
      failed = true;
      this.onError(err);
      this.down();
      client.end().catch(() => {});
      this.retryTimer = setTimeout(() => void this.connect(), this.retryMs);
      this.retryTimer.unref();
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    };
    client.on('error', fail);
    client.on('end', () => fail(new Error('connection ended')));
    client.on('notification', (n) => {
      for (const handler of this.handlers.get(n.channel as Channel) ?? []) handler(n.payload ?? '');
    });
    try {
      await client.connect();
      for (const channel of Object.values(CHANNELS)) await client.query(`LISTEN ${channel}`);
    } catch (err) {
      fail(err);
      return;
    }
    if (this.stopped || failed) return;
    // Anything that changed while nobody was listening was not heard: start from empty caches.
    for (const reset of this.resets) reset();
    this.up = true;
    this.retryMs = RETRY_MIN_MS;
  }

  private down() {
    if (!this.up) return;
    this.up = false;
    for (const reset of this.resets) reset();
  }
}

/**
 * A small in-memory cache kept right by notifications: an entry is dropped when its channel names
 * its key (or, with `clearOn: 'any'`, on any notification of the channel), everything is dropped
 * when the listener resets, and nothing is cached while it is down. `ttlMs` bounds how stale an
 * entry can be should a notification still be missed; `maxEntries` bounds memory (the oldest
 * entry goes first). Concurrent loads of one key share one query.
 */
export class NotifiedCache<V> {
  private readonly listener: NotificationListener | null;
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly entries = new Map<string, { value: V; until: number }>();
  private readonly loading = new Map<string, Promise<V>>();
  /** Bumped by every drop: a load that started before one must not store what it read. */
  private epoch = 0;

  constructor(opts: {
    /** null: no cache (every get loads). */
    listener: NotificationListener | null;
    channel: Channel;
    clearOn: 'key' | 'any';
    ttlMs: number;
    maxEntries: number;
  }) {
    this.listener = opts.listener;
    this.ttlMs = opts.ttlMs;
    this.maxEntries = opts.maxEntries;
    this.listener?.on(opts.channel, (payload) => (opts.clearOn === 'key' ? this.drop(payload) : this.clear()));
    this.listener?.onReset(() => this.clear());
  }

  /** The cached value, or `load()`'s; `keep(value)` false: not cached (e.g. an unknown key). */
  async get(key: string, load: () => Promise<V>, keep: (value: V) => boolean = () => true): Promise<V> {
    if (!this.listener?.listening) return load();
    const hit = this.entries.get(key);
    if (hit && hit.until > Date.now()) return hit.value;
    const pending = this.loading.get(key);
    if (pending) return pending;
    const epoch = this.epoch;
    const until = Date.now() + this.ttlMs;
    const promise = load().then(
      (value) => {
        if (this.loading.get(key) === promise) this.loading.delete(key);
        if (keep(value) && epoch === this.epoch && this.listener?.listening) this.set(key, value, until);
        return value;
      },
      (err) => {
        if (this.loading.get(key) === promise) this.loading.delete(key);
        throw err;
      },
    );
    this.loading.set(key, promise);
    return promise;
  }

  drop(key: string): void {
    this.epoch++;
    this.entries.delete(key);
    this.loading.delete(key);
  }

  clear(): void {
    this.epoch++;
    this.entries.clear();
    this.loading.clear();
  }

  private set(key: string, value: V, until: number) {
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, until });
  }
}
