import type { RequestHandler, Response } from 'express';
import { CHANNELS, type NotificationListener } from '../db/notifications.ts';
import { userId } from './middleware.ts';

/**
 * Users are dropped by bucket: a fixed array of generations whatever the number of users. Two
 * users sharing a bucket only cost each other a reload now and then.
 */
const BUCKETS = 4096;
/**
 * How stale an answer can be should a notice still be missed: on a connection that died without
 * the listener knowing yet (while it is known down nothing is cached at all).
 */
const TTL_MS = 5000;
/** An answer bigger than this share of the cache is not kept (it would push out many small ones). */
const MAX_SHARE = 16;
/** What an entry costs beyond its text: its key (twice: the entry's and the map's) and the objects around it. */
const ENTRY_OVERHEAD = 160;

/** Where an answer came from: memory, Postgres then kept, or Postgres only. */
export type ReadResult = 'hit' | 'miss' | 'bypass';

interface Entry {
  /** JSON text: its length counts against `maxBytes` (see cost). */
  body: string;
  generation: number;
  until: number;
}

/**
 * The JSON answers clients poll most (a batch, a page of batches), kept serialized per process
 * until that user's batches change. Every committed change of a user's batches, by any process,
 * is announced on `ibg_batches_changed` (the triggers of sql/0007): hearing it bumps the user's
 * generation, and an answer of an older generation is never served. A load records the
 * generation it started in, so what it read is stale as soon as a change lands during it.
 *
 * Read-your-writes in this process does not wait for the notice: while a request of the user
 * that changes batches runs, that user's answers are neither served nor kept, and its end bumps
 * the generation again (`writing`). Another process hears the change when the notice arrives,
 * milliseconds after the commit.
 *
 * Nothing is cached while the listener is down, everything is dropped when it resets, entries
 * live at most TTL_MS, and memory is bounded by `maxBytes` (the oldest answer goes first; 0
 * turns the cache off). Concurrent loads of one answer share one query.
 */
export class ReadCache {
  private readonly listener: NotificationListener | null;
  private readonly maxBytes: number;
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, { generation: number; body: Promise<string> }>();
  private readonly generations = new Uint32Array(BUCKETS);
  private readonly writers = new Uint32Array(BUCKETS);
  private readonly counted: (result: ReadResult) => void;
  private bytes = 0;

  constructor(opts: {
    listener: NotificationListener | null;
    maxBytes: number;
    /** Told of every read (the metric). */
    counted?: (result: ReadResult) => void;
  }) {
    this.listener = opts.maxBytes > 0 ? opts.listener : null;
    this.maxBytes = opts.maxBytes;
    this.counted = opts.counted ?? (() => {});
    this.listener?.on(CHANNELS.batchesChanged, (payload) => {
      if (payload === '*') this.clear();
      else for (const id of payload.split(',')) this.changed(Number(id));
    });
    this.listener?.onReset(() => this.clear());
  }

  /**
   * Answers `res` with the user's answer under `key`: kept, or `load()`ed (its errors are
   * thrown, never kept). A kept answer is sent at once, without a promise in between.
   */
  answer(res: Response, user: number, key: string, load: () => Promise<unknown>): void | Promise<void> {
    const bucket = user % BUCKETS;
    if (!this.listener?.listening || this.writers[bucket] > 0) {
      this.counted('bypass');
      return load().then((value) => sendJson(res, JSON.stringify(value)));
    }
    const generation = this.generations[bucket];
    const k = `${user} ${key}`;
    const hit = this.entries.get(k);
    if (hit !== undefined) {
      if (hit.generation === generation && hit.until > Date.now()) {
        this.counted('hit');
        return sendJson(res, hit.body);
      }
      this.forget(k, hit);
    }
    this.counted('miss');
    return this.load(k, bucket, generation, load).then((body) => sendJson(res, body));
  }

  private async load(k: string, bucket: number, generation: number, load: () => Promise<unknown>): Promise<string> {
    const pending = this.loading.get(k);
    if (pending?.generation === generation) return pending.body;
    const until = Date.now() + TTL_MS;
    const body = load().then((value) => JSON.stringify(value));
    this.loading.set(k, { generation, body });
    try {
      const answer = await body;
      if (this.generations[bucket] === generation && this.listener?.listening) this.keep(k, answer, generation, until);
      return answer;
    } finally {
      if (this.loading.get(k)?.body === body) this.loading.delete(k);
    }
  }

  /**
   * Route middleware (after authentication) of the requests that change batches (create, cancel,
   * delete): until one has ended, that user's answers are neither served nor kept. A request
   * whose client already hung up (during authentication) changes nothing: it is not counted, as
   * its end was already announced and would never be heard again.
   */
  readonly writing: RequestHandler = (req, res, next) => {
    if (this.listener && !res.destroyed) {
      const bucket = userId(req) % BUCKETS;
      this.writers[bucket]++;
      this.generations[bucket]++;
      res.once('close', () => {
        this.writers[bucket]--;
        this.generations[bucket]++;
      });
    }
    next();
  };

  private changed(user: number) {
    if (Number.isSafeInteger(user)) this.generations[user % BUCKETS]++;
    else this.clear();
  }

  private clear() {
    for (let i = 0; i < BUCKETS; i++) this.generations[i]++;
    this.entries.clear();
    this.loading.clear();
    this.bytes = 0;
  }

  /**
   * Oldest first out: every answer is reloaded within TTL_MS anyway, so the order answers were
   * kept in is close to the order they were used in, without moving one on every hit.
   */
  private keep(k: string, body: string, generation: number, until: number) {
    const size = cost(k, body);
    if (size > this.maxBytes / MAX_SHARE) return;
    const old = this.entries.get(k);
    if (old) this.forget(k, old);
    for (const [oldest, entry] of this.entries) {
      if (this.bytes + size <= this.maxBytes) break;
      this.forget(oldest, entry);
    }
    this.entries.set(k, { body, generation, until });
    this.bytes += size;
  }

  private forget(k: string, entry: Entry) {
    this.entries.delete(k);
    this.bytes -= cost(k, entry.body);
  }
}

/** Memory an entry holds, roughly: text of one byte a character (V8's for ASCII), key twice. */
function cost(k: string, body: string): number {
  return body.length + 2 * k.length + ENTRY_OVERHEAD;
}

/**
 * Sends JSON text as `res.json` would have. Kept as a string, not bytes: Node writes a string
 * body in one piece with the headers, where a Buffer goes out as a second buffer of a writev.
 */
function sendJson(res: Response, body: string): void {
  res.set('Content-Type', 'application/json; charset=utf-8').send(body);
}
