import cliProgress from 'cli-progress';
import { type BatchStatus, FINISHED } from '../batches/batch-states.ts';
import type { Batch, GatewayClient } from './api-client.ts';
import { CliError, EXIT } from './cli-error.ts';

/** How a waiting command shows a batch's progress. */
export interface ProgressView {
  update(batch: Batch): void;
  /** The batch reached a final status (or the wait was abandoned): leave the terminal clean. */
  stop(): void;
}

export interface WaitOptions {
  /** First delay between polls, used again whenever the batch moved. */
  minDelayMs?: number;
  /** The backoff's cap while nothing changes. */
  maxDelayMs?: number;
  /** How long the service may stay unreachable before the wait gives up. */
  outageLimitMs?: number;
}

/**
 * Polls until the batch has a final status. The delay grows ×1.5 while nothing changes (a batch
 * may queue for hours) and drops back to the minimum when the status or counts move, so progress
 * shows promptly without hammering the service. A service that is briefly unreachable (a restart)
 * does not end the wait; one that stays away for `outageLimitMs` does.
 */
export async function waitForBatch(
  client: GatewayClient,
  id: string,
  view: ProgressView,
  opts: WaitOptions = {},
): Promise<Batch> {
  const { minDelayMs = 500, maxDelayMs = 10_000, outageLimitMs = 120_000 } = opts;
  let delay = minDelayMs;
  let seen = '';
  let outageSince: number | null = null;
  for (;;) {
    let batch: Batch;
    try {
      batch = await client.getBatch(id);
      outageSince = null;
    } catch (err) {
      if (!(err instanceof CliError) || err.exitCode !== EXIT.unavailable) throw err;
      outageSince ??= Date.now();
      if (Date.now() - outageSince > outageLimitMs) throw err;
      delay = Math.min(delay * 1.5, maxDelayMs);
      await sleep(delay);
      continue;
    }
    view.update(batch);
    if (FINISHED.includes(batch.status as BatchStatus)) return batch;
    const c = batch.request_counts;
    const now = `${batch.status} ${c.total} ${c.completed} ${c.failed}`;
    delay = now === seen ? Math.min(delay * 1.5, maxDelayMs) : minDelayMs;
    seen = now;
    await sleep(delay);
  }
}

/** "batch_… in_progress 12/40 (30%)", plus ", 2 failed" when some did. */
function progressLine(b: Batch): string {
  const { total, completed, failed } = b.request_counts;
  const done = completed + failed;
  const pct = total > 0 ? Math.floor((done * 100) / total) : 0;
  return `${b.id} ${b.status} ${done}/${total} (${pct}%)${failed ? `, ${failed} failed` : ''}`;
}

/**
 * Progress on stderr (stdout stays for results): a bar when stderr is a terminal, otherwise
 * plain lines, one per status change and at most one per `throttleMs` for count changes.
 */
export function progressView(stream: NodeJS.WriteStream, throttleMs = 5_000): ProgressView {
  return stream.isTTY ? barView(stream) : lineView(stream, throttleMs);
}

function lineView(stream: NodeJS.WritableStream, throttleMs: number): ProgressView {
  let lastStatus = '';
  let lastLine = '';
  let lastAt = 0;
  return {
    update(b) {
      const line = progressLine(b);
      if (line === lastLine) return;
      const statusChanged = b.status !== lastStatus;
      if (!statusChanged && Date.now() - lastAt < throttleMs) return;
      stream.write(`${line}\n`);
      lastStatus = b.status;
      lastLine = line;
      lastAt = Date.now();
    },
    stop() {},
  };
}

function barView(stream: NodeJS.WriteStream): ProgressView {
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: '{id} {status} |{bar}| {done}/{count} ({pct}%){failed}',
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(b) {
      const { total, completed, failed } = b.request_counts;
      const done = completed + failed;
      // The bar's own total must be positive; the counts shown come from the payload.
      const payload = {
        id: b.id,
        status: b.status,
        done,
        count: total,
        pct: total > 0 ? Math.floor((done * 100) / total) : 0,
        failed: failed ? `, ${failed} failed` : '',
      };
      if (!started) {
        bar.start(Math.max(total, 1), done, payload);
        started = true;
      } else {
        bar.setTotal(Math.max(total, 1));
        bar.update(done, payload);
      }
    },
    stop() {
      if (started) bar.stop();
      started = false;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
