/**
 * Starts both emulators wired together: the Vertex emulator reads inputs and
 * writes outputs through the Storage client pointed at the GCS emulator.
 */
import path from 'node:path';
import type { RunningEmulator } from './gcs-emulator.ts';
import { startGcsEmulator } from './gcs-emulator.ts';
import type { RunningVertexEmulator, VertexEmulatorOptions } from './vertex-emulator.ts';
import { startVertexEmulator } from './vertex-emulator.ts';

export type { GcsEmulatorOptions, RunningEmulator } from './gcs-emulator.ts';
export { startGcsEmulator } from './gcs-emulator.ts';
export type { RunningVertexEmulator, TransportFault, VertexEmulatorOptions } from './vertex-emulator.ts';
export { startVertexEmulator } from './vertex-emulator.ts';

export interface StartEmulatorsOptions {
  dataDir: string;
  /** Loopback by default. */
  host?: string;
  /** 0 or absent: a random free port. */
  gcsPort?: number;
  vertexPort?: number;
  vertex: Omit<VertexEmulatorOptions, 'dataDir' | 'gcsEndpoint' | 'port'>;
}

export interface RunningEmulators {
  gcs: RunningEmulator;
  vertex: RunningVertexEmulator;
  close(): Promise<void>;
}

export async function startEmulators(opts: StartEmulatorsOptions): Promise<RunningEmulators> {
  const host = opts.host ?? opts.vertex.host ?? '127.0.0.1';
  const gcs = await startGcsEmulator({ host, port: opts.gcsPort ?? 0, dataDir: path.join(opts.dataDir, 'gcs') });
  let vertex: RunningVertexEmulator;
  try {
    vertex = await startVertexEmulator({
      ...opts.vertex,
      host,
      port: opts.vertexPort ?? 0,
      dataDir: path.join(opts.dataDir, 'vertex'),
      gcsEndpoint: gcs.url,
    });
  } catch (err) {
    await gcs.close();
    throw err;
  }
  return {
    gcs,
    vertex,
    // Vertex first: its running jobs still talk to Cloud Storage while they stop.
    close: async () => {
      await vertex.close();
      await gcs.close();
    },
  };
}
