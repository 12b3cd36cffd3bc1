// TEMPORARY placeholder by the main engineer so the pipeline can be tested; the emulator
// helper replaces this file entirely.
import path from 'node:path';
import { startGcsEmulator } from './gcs-emulator.ts';
import { startVertexEmulator, type VertexEmulatorOptions } from './vertex-emulator.ts';

export async function startEmulators(opts: { dataDir: string; gcsPort?: number; vertexPort?: number; vertex: Omit<VertexEmulatorOptions, 'dataDir' | 'gcsEndpoint' | 'port'> }) {
  const gcs = await startGcsEmulator({ dataDir: path.join(opts.dataDir, 'gcs'), port: opts.gcsPort ?? 0 });
  const vertex = await startVertexEmulator({ ...opts.vertex, dataDir: path.join(opts.dataDir, 'vertex'), gcsEndpoint: gcs.url, port: opts.vertexPort ?? 0 });
  return { gcs, vertex, close: async () => { await vertex.close(); await gcs.close(); } };
}
