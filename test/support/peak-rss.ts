/**
 * Preloaded into a child process (`node --import ./test/support/peak-rss.ts …`): at exit it
 * writes `peak_rss=<bytes>` to stderr, the most physical memory the process ever held.
 *
 * Linux's VmHWM is exact and belongs to this program alone (getrusage's maxRSS is not: it starts
 * from the parent's size at fork). Elsewhere, sampling every few milliseconds comes close.
 */
import fs from 'node:fs';

let sampled = process.memoryUsage.rss();
const timer = setInterval(() => {
  sampled = Math.max(sampled, process.memoryUsage.rss());
}, 5);
timer.unref();

process.on('exit', () => {
  let peak = Math.max(sampled, process.memoryUsage.rss());
  try {
    const hwm = /^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (hwm) peak = Number(hwm[1]) * 1024;
  } catch {
    // no /proc: the sampled peak
  }
  fs.writeSync(2, `peak_rss=${peak}\n`);
});
