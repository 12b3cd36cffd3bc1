import { once } from 'node:events';
import type { Writable } from 'node:stream';

/** Writes one chunk, waiting for `drain` when the stream asks for it (an error rejects). */
export async function writeWithBackpressure(stream: Writable, chunk: string | Buffer): Promise<void> {
  if (!stream.write(chunk)) await once(stream, 'drain');
}

/** Ends a stream and waits until everything is flushed (for a Cloud Storage upload: stored). */
export function finish(stream: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.once('error', reject);
    stream.once('finish', resolve);
    stream.end();
  });
}
