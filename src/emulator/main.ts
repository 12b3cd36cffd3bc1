/**
 * `npm run emulators`: both emulators as a standalone process, configured by
 * the same environment variables, read by the same parser, as `npm start`
 * (src/config.ts; standalone port defaults 4443 and 8090).
 */
import { ConfigError, loadEmulatorConfig } from '../config.ts';
import { startEmulators } from './index.ts';

let settings: ReturnType<typeof loadEmulatorConfig>;
try {
  settings = loadEmulatorConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(err.message);
  process.exit(2);
}
const { dataDir, emulator } = settings;
const emulators = await startEmulators({
  dataDir,
  gcsPort: emulator.gcsPort,
  vertexPort: emulator.vertexPort,
  vertex: emulator,
});

console.log(`Cloud Storage emulator: ${emulators.gcs.url}  (new Storage({ apiEndpoint: '${emulators.gcs.url}' }))`);
console.log(
  `Vertex AI emulator:     ${emulators.vertex.url}  (JobServiceClient, PredictionServiceClient: apiEndpoint '${emulators.vertex.host}', port ${emulators.vertex.port}, protocol 'http', fallback: true)`,
);
console.log(`Data under ${dataDir}/gcs and ${dataDir}/vertex. Ctrl-C to stop.`);

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
