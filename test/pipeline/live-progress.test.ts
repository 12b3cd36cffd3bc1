import { afterEach, describe, expect, it } from '@jest/globals';
import { FINISHED, uploadBatch } from '../support/batches.ts';
import { call, imageLine } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * request_counts move while a batch runs, as Vertex reports progress. The test service looks at
 * Vertex jobs every 100–500 ms; the default schedule's looks (1 s, 3 s, 7 s… after a change of
 * state) are checked in test/unit/poll-schedule.test.ts.
 */
const CLIENT_POLL_MS = 250;

interface Seen {
  status: string;
  completed: number;
  failed: number;
}

/** Polls the batch every 250 ms, as a client would, until it has finished; every answer in order. */
async function watch(svc: TestService, key: string, id: string, timeoutMs = 60_000): Promise<Seen[]> {
  const seen: Seen[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await call(`${svc.url}/v1/image-batches/${id}`, { key });
    seen.push({ status: body.status, completed: body.request_counts.completed, failed: body.request_counts.failed });
    if (FINISHED.includes(body.status)) return seen;
    if (Date.now() > deadline) throw new Error(`batch ${id} still ${body.status}: ${JSON.stringify(seen.slice(-3))}`);
    await new Promise((r) => setTimeout(r, CLIENT_POLL_MS));
  }
}

function expectNeverBackwards(seen: Seen[]) {
  for (let i = 1; i < seen.length; i++) {
    expect(seen[i].completed).toBeGreaterThanOrEqual(seen[i - 1].completed);
    expect(seen[i].failed).toBeGreaterThanOrEqual(seen[i - 1].failed);
  }
}

let svc: TestService | undefined;
afterEach(async () => {
  await svc?.stop();
  svc = undefined;
});

describe('live request counts', () => {
  it('move while a 60-line batch runs at 100 ms a line, and are exact at the end', async () => {
    svc = await startTestService({ VERTEX_EMULATOR_LINE_MS: '100' });
    const user = await svc.createUser(10_000_000);
    // Every tenth line fails, so that `failed` has something to show too.
    const lines = Array.from({ length: 60 }, (_, i) =>
      imageLine(`line-${i}`, i % 10 === 9 ? 'this one fails [emulate:fail]' : `a red cube number ${i}`),
    );
    const created = await uploadBatch(svc, user.apiKey, lines);
    expect(created.status).toBe(200);

    const seen = await watch(svc, user.apiKey, created.body.id);
    const running = seen.filter((s) => s.status === 'in_progress');
    const between = new Set(running.filter((s) => s.completed > 0 && s.completed < 54).map((s) => s.completed));
    expect(between.size).toBeGreaterThanOrEqual(3);
    expect(running.some((s) => s.failed > 0 && s.failed < 6)).toBe(true);
    expectNeverBackwards(seen);
    for (const s of running) {
      expect(s.completed).toBeLessThanOrEqual(54);
      expect(s.failed).toBeLessThanOrEqual(6);
    }
    expect(seen.at(-1)).toEqual({ status: 'completed', completed: 54, failed: 6 });
  });

  it('sum the shards: one that has ended counts while another still runs', async () => {
    // Two shards of 10: the first runs in about a second, the second starts with a line 4 s slow.
    svc = await startTestService({
      SHARD_MAX_REQUESTS: '10',
      VERTEX_EMULATOR_LINE_MS: '100',
      VERTEX_EMULATOR_SLOW_MS: '4000',
    });
    const user = await svc.createUser(10_000_000);
    const lines = Array.from({ length: 20 }, (_, i) =>
      imageLine(`line-${i}`, i === 10 ? 'a slow one [emulate:slow]' : `a blue sphere number ${i}`),
    );
    const created = await uploadBatch(svc, user.apiKey, lines);
    expect(created.status).toBe(200);

    const seen = await watch(svc, user.apiKey, created.body.id);
    expect(seen.some((s) => s.status === 'in_progress' && s.completed >= 10 && s.completed < 20)).toBe(true);
    expectNeverBackwards(seen);
    expect(seen.at(-1)).toEqual({ status: 'completed', completed: 20, failed: 0 });
  });
});
