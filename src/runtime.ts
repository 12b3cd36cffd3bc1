import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { countBatchesByStatus } from './batches/batch-queries.ts';
import type { Config } from './config.ts';
import { DatabaseAvailability } from './db/availability.ts';
import { type EmbeddedDatabase, ensureDatabase, startEmbeddedPostgres } from './db/embedded.ts';
import { migrate } from './db/migrate.ts';
import { NotificationListener } from './db/notifications.ts';
import { createPool, type Pool } from './db/pool.ts';
import { createApp, createOperationsApp } from './http/app.ts';
import { log } from './logger.ts';
import { Metrics } from './metrics.ts';
import { JobQueue } from './pipeline/job-queue.ts';
import { PIPELINE_JOBS } from './pipeline/jobs.ts';
import { startWorkers, type Workers } from './pipeline/workers.ts';
import { createServices, type Services } from './services.ts';
import { ObjectStore } from './storage/object-store.ts';
import { LinkSigner, linkSigningSecret } from './storage/signed-links.ts';
import { BatchJobs } from './vertex/batch-jobs.ts';
import { createJobClient, createPredictionClient } from './vertex/job-client.ts';
import { OnlineImages } from './vertex/online-images.ts';

export interface Runtime {
  services: Services;
  /** Where this process listens: the API, or (ROLE=worker) the operators' endpoints alone. */
  url: string;
  /** The HTTP server behind `url` (tests listen to what it answers). */
  server: http.Server;
  /** The in-process emulators, when this process started them. */
  emulators: Emulators | null;
  stop(): Promise<void>;
}

type Emulators = Awaited<ReturnType<typeof import('./emulator/index.ts').startEmulators>>;

const DATABASE = 'gateway';

/**
 * Starts one process of the service: Postgres (embedded unless DATABASE_URL), migrations,
 * the emulators when no Google settings are given, the job queue, then the HTTP API and/or
 * the pipeline workers as ROLE says. `stop()` undoes it in reverse order.
 */
export async function startRuntime(config: Config): Promise<Runtime> {
  const stops: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const fn of stops.reverse()) await fn().catch((err) => log.warn({ err }, 'shutdown step failed'));
  };
  try {
    await fs.mkdir(config.dataDir, { recursive: true });
    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      const embedded: EmbeddedDatabase = await startEmbeddedPostgres(
        path.join(config.dataDir, 'postgres'),
        config.embeddedPostgresPort,
      );
      stops.push(() => embedded.stop());
      await ensureDatabase(embedded.connectionString(), DATABASE);
      databaseUrl = embedded.connectionString(DATABASE);
    }
    const pool: Pool = createPool(databaseUrl, 20);
    const database = new DatabaseAvailability();
    pool.on('connect', () => database.reachable());
    stops.push(() => pool.end());
    const applied = await migrate(pool);
    if (applied.length) log.info({ applied }, 'migrations applied');
    // Keeps the in-memory caches (API keys, the model catalog) in step with other processes.
    const notifications = new NotificationListener(databaseUrl, (err) => {
      if (!database.report(err, 'notifications')) log.warn({ err }, 'notification listener failed; retrying');
    });
    await notifications.start();
    stops.push(() => notifications.stop());

    let { gcsApiEndpoint, vertexApiEndpoint } = config.google;
    let emulators: Emulators | null = null;
    if (config.google.useEmulators) {
      // Loaded only when used: a deployment on Google Cloud never starts (or imports) them.
      const { startEmulators } = await import('./emulator/index.ts');
      emulators = await startEmulators({
        dataDir: config.dataDir, // objects under gcs/, jobs under vertex/, as `npm run emulators` keeps them
        gcsPort: config.emulator.gcsPort,
        vertexPort: config.emulator.vertexPort,
        vertex: { ...config.emulator, projectId: config.google.project },
      });
      stops.push(() => emulators!.close());
      gcsApiEndpoint = emulators.gcs.url;
      vertexApiEndpoint = emulators.vertex.url;
      log.info({ gcs: gcsApiEndpoint, vertex: vertexApiEndpoint }, 'local emulators started');
    }
    const store = new ObjectStore({
      bucket: config.google.bucket,
      projectId: config.google.project,
      apiEndpoint: gcsApiEndpoint,
    });
    const metrics = new Metrics();
    const jobClient = createJobClient({
      location: config.google.location,
      endpoint: vertexApiEndpoint,
      onCall: metrics.vertexCall,
    });
    stops.push(() => jobClient.close());
    const vertex = new BatchJobs(jobClient, config.google.project, config.google.location);
    const predictionClient = createPredictionClient({
      location: config.google.location,
      endpoint: vertexApiEndpoint,
      onCall: metrics.vertexCall,
    });
    stops.push(() => predictionClient.close());
    const online = new OnlineImages(predictionClient, {
      project: config.google.project,
      location: config.google.location,
      callTimeoutMs: config.images.callTimeoutMs,
    });

    const queue = await JobQueue.start(databaseUrl, {
      jobs: PIPELINE_JOBS,
      heartbeatSeconds: config.pipeline.jobHeartbeatSeconds,
      superviseSeconds: config.pipeline.jobSuperviseSeconds,
      retryLimit: config.pipeline.jobRetryLimit,
      onError: (err) => {
        if (!database.report(err, 'job queue')) log.warn({ err }, 'job queue error');
      },
    });
    stops.push(() => queue.stop());
    metrics.readFrom({ batchCounts: () => countBatchesByStatus(pool), queueCounts: () => queue.queueCounts() });
    let apiUrl: string | null = null;
    // Links are absolute: PUBLIC_URL, else this process's own address, known once it listens
    // (below, before any worker can finalize); a worker-only process has HOST:PORT to go by.
    const links = new LinkSigner({
      secret: await linkSigningSecret(pool, config.delivery.urlSigningSecret),
      baseUrl: () => config.delivery.publicUrl ?? apiUrl ?? `http://${config.host}:${config.port}`,
      ttlMs: config.delivery.imageUrlTtlMs,
    });
    const services = createServices({
      config,
      pool,
      database,
      notifications,
      store,
      links,
      queue,
      vertex,
      online,
      metrics,
    });

    // The API; or, in a worker-only process, the operators' endpoints alone (health, metrics).
    const listening = http.createServer(config.role === 'worker' ? createOperationsApp(services) : createApp(services));
    // Uploads of up to GBs may take long; idle sockets still time out.
    listening.requestTimeout = 0;
    listening.headersTimeout = 60_000;
    // Idle keep-alive sockets outlive every client's own idle timeout (undici's is 4 s, Node's
    // server default 5 s): otherwise a client can send on a socket the server is closing and
    // get ECONNRESET, which a busy machine made visible.
    listening.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      listening.once('error', reject);
      listening.listen(config.port, config.host, resolve);
    });
    const { port } = listening.address() as AddressInfo;
    const url = `http://${config.host}:${port}`;
    if (config.role !== 'worker') apiUrl = url;
    // Pushed before the workers: stopped after them, so health and metrics answer while they drain.
    stops.push(() => closeServer(listening));
    if (config.role !== 'api') {
      const workers: Workers = await startWorkers(services);
      stops.push(() => workers.stop());
    }
    return { services, url, server: listening, emulators, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Stops accepting connections, lets in-flight requests finish, then drops idle keep-alives. */
function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 10_000).unref();
  });
}
