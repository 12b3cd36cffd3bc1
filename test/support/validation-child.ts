/**
 * Validates one batch input in a process of its own, so that its memory is measured alone: the
 * real validator reading the object through the real object store (the Storage client against
 * the Cloud Storage emulator). Prints one JSON line: the validation result's counts and memory
 * figures in bytes: live JS heap and array buffers at their peak (sampled after a full GC every
 * 100 ms, so garbage not yet collected does not count) and the RSS before validating; run with
 * peak-rss.ts preloaded, it reports its peak RSS on stderr.
 *
 *   node --expose-gc --import test/support/peak-rss.ts [--max-old-space-size=…] test/support/validation-child.ts <storage endpoint> <bucket> <key>
 */
import { validateBatchInput } from '../../src/pipeline/line-validator.ts';
import { ObjectStore } from '../../src/storage/object-store.ts';
import { testModel } from '../unit/fixtures.ts';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

const [apiEndpoint, bucket, key] = process.argv.slice(2);
const store = new ObjectStore({ bucket, projectId: 'test-project', apiEndpoint });
const model = testModel({ maxPromptChars: 32_000 });

gc();
const baseline = process.memoryUsage();
let peakHeap = baseline.heapUsed;
let peakArrayBuffers = baseline.arrayBuffers;
const sample = () => {
  gc();
  const m = process.memoryUsage();
  peakHeap = Math.max(peakHeap, m.heapUsed);
  peakArrayBuffers = Math.max(peakArrayBuffers, m.arrayBuffers);
};
const timer = setInterval(sample, 100);
const result = await validateBatchInput(store.readStream(key), {
  models: new Map([[model.id, model]]),
  maxRequests: 10_000_000,
  maxErrors: 100,
  findOwnedVisionFiles: async () => new Set<string>(),
});
clearInterval(timer);
sample();
process.stdout.write(
  `${JSON.stringify({
    requestCount: result.requestCount,
    imageCount: result.imageCount,
    errorCount: result.errorCount,
    errors: result.errors.slice(0, 3),
    model: result.model,
    heap: { baseline: baseline.heapUsed, peak: peakHeap },
    arrayBuffers: { baseline: baseline.arrayBuffers, peak: peakArrayBuffers },
    rss: { baseline: baseline.rss },
  })}\n`,
);
