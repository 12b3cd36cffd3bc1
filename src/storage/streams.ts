import { once } from 'node:events';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';

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

/** Chunks at least this big go to the upload as they are. */
const PASS_THROUGH_BYTES = 16 * 1024;
/** Smaller ones are gathered into chunks of about this size. */
const GATHER_BYTES = 64 * 1024;

/**
 * A writable in front of an object store upload that gathers small writes (a JSON line at a
 * time) into chunks of about 256 KB: every chunk written to a Cloud Storage upload stream goes
 * through half a dozen streams (hashing, the resumable upload, HTTP), which costs more than the
 * bytes of a short line, so a million-line file written line by line would be CPU-bound in
 * them. Big chunks (images) go through as they are. Ending it ends the upload and finishes once
 * the upload has finished (for Cloud Storage: the object is stored); an error on either side
 * destroys both.
 */
export function gatherWrites(upload: Writable): Writable {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const take = (): Buffer => {
    const data = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    return data;
  };
  const send = (data: Buffer, callback: (err?: Error | null) => void) => {
    if (upload.write(data)) return callback();
    once(upload, 'drain').then(() => callback(), callback);
  };
  const gatherer = new Writable({
    highWaterMark: GATHER_BYTES,
    write(chunk: Buffer, _encoding, callback) {
      if (chunk.length < PASS_THROUGH_BYTES) {
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes < GATHER_BYTES) return callback();
        return send(take(), callback);
      }
      if (pendingBytes > 0) upload.write(take());
      send(chunk, callback);
    },
    final(callback) {
      if (pendingBytes > 0) upload.write(take());
      upload.end();
      finished(upload).then(() => callback(), callback);
    },
    destroy(err, callback) {
      if (!upload.destroyed) upload.destroy(err ?? undefined);
      callback(err);
    },
  });
  upload.on('error', (err) => gatherer.destroy(err));
  return gatherer;
}
