import { describe, expect, it } from '@jest/globals';
import { loadConfig } from '../../src/config.ts';
import { nextPollAttempt, pollDelayMs } from '../../src/pipeline/poll.ts';

/** When the looks at a job happen, from its submission, if its state never changes. */
function lookTimes(looks: number, p: { pollIntervalMs: number; pollMaxIntervalMs: number }): number[] {
  const times: number[] = [];
  let at = 0;
  for (let attempt = 0; attempt < looks; attempt++) {
    at += pollDelayMs(attempt, p);
    times.push(at);
  }
  return times;
}

describe('the poll schedule of a Vertex job', () => {
  const defaults = loadConfig({}).pipeline;

  it('looks soon after submission on the defaults, then ever less often, up to the cap', () => {
    expect(defaults.pollIntervalMs).toBe(1000);
    expect(lookTimes(6, defaults)).toEqual([1000, 3000, 7000, 15_000, 31_000, 63_000]);
    expect(pollDelayMs(8, defaults)).toBe(256_000);
    expect(pollDelayMs(9, defaults)).toBe(defaults.pollMaxIntervalMs);
    expect(pollDelayMs(10_000, defaults)).toBe(defaults.pollMaxIntervalMs);
  });

  it('never looks twice within POLL_INTERVAL_MS, whatever the settings', () => {
    for (const p of [
      defaults,
      { pollIntervalMs: 100, pollMaxIntervalMs: 500 },
      { pollIntervalMs: 250, pollMaxIntervalMs: 250 },
    ]) {
      for (let attempt = 0; attempt < 80; attempt++) {
        const delay = pollDelayMs(attempt, p);
        expect(delay).toBeGreaterThanOrEqual(p.pollIntervalMs);
        expect(delay).toBeLessThanOrEqual(p.pollMaxIntervalMs);
        expect(delay).toBeGreaterThanOrEqual(pollDelayMs(Math.max(0, attempt - 1), p));
      }
    }
  });

  it('refuses a POLL_INTERVAL_MS that would ask Vertex in a loop', () => {
    expect(() => loadConfig({ POLL_INTERVAL_MS: '0' })).toThrow(/POLL_INTERVAL_MS must be at least 100ms/);
    expect(loadConfig({ POLL_INTERVAL_MS: '100ms' }).pipeline.pollIntervalMs).toBe(100);
  });

  it('starts over at the short wait when the job changes state, and backs off while it does not', () => {
    expect(nextPollAttempt(0, null, 'JOB_STATE_QUEUED')).toBe(1); // the first look: nothing to compare with
    expect(nextPollAttempt(0, 'JOB_STATE_QUEUED', 'JOB_STATE_QUEUED')).toBe(1);
    expect(nextPollAttempt(7, 'JOB_STATE_QUEUED', 'JOB_STATE_QUEUED')).toBe(8);
    expect(nextPollAttempt(7, 'JOB_STATE_QUEUED', 'JOB_STATE_RUNNING')).toBe(0);
    expect(nextPollAttempt(3, 'JOB_STATE_RUNNING', 'JOB_STATE_RUNNING')).toBe(4);
  });

  it('sees a small job that ends seconds after it starts within a second of its end', () => {
    // The default emulator's job: QUEUED for 2 s, PENDING for 0.5 s, done some 0.1 s later.
    const stateAt = (ms: number) => (ms < 2000 ? 'QUEUED' : ms < 2500 ? 'PENDING' : ms < 2600 ? 'RUNNING' : 'DONE');
    // Each look happens a little after it is due (the queue's wake-up, the call itself).
    const late = 60;
    let at = 0;
    let attempt = 0;
    let state: string | null = null;
    for (;;) {
      at += pollDelayMs(attempt, defaults) + late;
      const seen = stateAt(at);
      if (seen === 'DONE') break;
      attempt = nextPollAttempt(attempt, state, seen);
      state = seen;
    }
    expect(at - 2600).toBeLessThan(1000 + late);
  });
});
