/**
 * `npm run emulators`: both emulators as a standalone process, configured by
 * the same environment variables the service reads.
 */
import { emulatorSettingsFromEnv } from './settings.ts';
import { startEmulators } from './index.ts';

const settings = emulatorSettingsFromEnv(process.env);
const emulators = await startEmulators({
  dataDir: settings.dataDir,
  gcsPort: settings.gcsPort,
  vertexPort: settings.vertexPort,
  vertex: {
    queueMs: settings.queueMs,
    lineMs: settings.lineMs,
    slowMs: settings.slowMs,
    imagePadBytes: settings.imagePadBytes,
    jobFault: settings.jobFault,
    transportFaults: settings.transportFaults,
  },
});

console.log(`Cloud Storage emulator: ${emulators.gcs.url}  (new Storage({ apiEndpoint: '${emulators.gcs.url}' }))`);
console.log(`Vertex AI emulator:     ${emulators.vertex.url}  (JobServiceClient apiEndpoint '${emulators.vertex.host}', port ${emulators.vertex.port}, protocol 'http', fallback: true)`);
console.log(`Data under ${settings.dataDir}/gcs and ${settings.dataDir}/vertex. Ctrl-C to stop.`);

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log(`${signal}: stopping the emulators…`);
  try {
    await emulators.close();
    process.exit(0);
  } catch (err) {
    console.error(err);
    process.exit(1);
  }
}
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
