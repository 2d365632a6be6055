import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import { createApp } from './app.js';
import { createHttpServer } from './http/http-server.js';
import { loadConfig, type Config } from './config/config.js';
import { createStores } from './create-stores.js';
import { createRateLimits } from './features/rate-limits/rate-limits.js';
import { instrumentDatabase } from './infra/database/database-metrics.js';
import { GatewayMetrics } from './infra/metrics.js';
import { createWorkerPool } from './features/workers/create-worker-pool.js';
import { createDatabase, type Database } from './infra/database/database.js';
import type { WorkerPool } from './features/workers/worker-handle.js';
import { createLogger, type Logger } from './infra/logger.js';
import { readGatewayVersion } from './version.js';

export interface RunningGateway {
  config: Config;
  url: string;
  server: Server;
  workers: WorkerPool;
  database: Database;
  logger: Logger;
  /** Stop accepting, let in-flight requests finish (up to the grace), stop workers. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Where JSON log lines go (stdout by default); tests capture them. */
  logStream?: Writable;
}

/** Boot the whole gateway: config, logger, workers, HTTP server. */
export async function startGateway(env: NodeJS.ProcessEnv, options: StartOptions = {}): Promise<RunningGateway> {
  const config = loadConfig(env);
  const metrics = new GatewayMetrics();
  const logger = createLogger({
    level: config.logLevel,
    ...(options.logStream ? { stream: options.logStream } : {}),
    ...(config.seqServerUrl
      ? {
          seq: {
            serverUrl: config.seqServerUrl,
            apiKey: config.seqApiKey,
            maxQueued: config.seqMaxBufferedEvents,
            onDropped: (n: number) => metrics.logDropped.inc({ sink: 'seq' }, n),
          },
        }
      : {}),
  });
  const version = readGatewayVersion();
  const database = createDatabase({ databaseUrl: config.databaseUrl, dataDirectory: config.dataDirectory }, logger);
  instrumentDatabase(database.knex, metrics);
  await database.migrate();
  const workers = await createWorkerPool(config, logger, env, (worker, rpc, code, seconds) =>
    metrics.grpcDuration.observe({ worker, rpc, code }, seconds),
  );
  await workers.start();

  const limits = await createRateLimits(config, logger);
  const dependencies = [
    {
      name: 'database',
      check: async () => ({ healthy: true, detail: database.dialect, latencyMs: await database.ping() }),
    },
    {
      // Redis down is "degraded": limits fall back to local counters and requests go on.
      name: 'rate-limit store',
      check: async () => {
        const status = limits.status();
        return { healthy: status.healthy, detail: status.detail ?? status.store };
      },
    },
  ];
  const { app, services } = createApp(config, {
    logger,
    workers,
    version,
    stores: createStores(database.knex),
    limits,
    dependencies,
    metrics,
    pingDatabase: () => database.ping(),
    rateLimitStoreHealthy: () => limits.status().healthy,
  });
  // Jobs a previous process left running can never finish: say so before serving.
  await services.sessions.interruptLeftovers();
  await services.batches.interruptLeftovers();
  const server = createHttpServer(app).listen(config.port, config.host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const url = `http://${host}:${port}`;
  logger.info('gateway listening', { url, version, workerMode: workers.mode, workers: workers.workers().length });

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      logger.info('gateway draining', { graceSeconds: config.shutdownGraceSeconds });
      services.readiness.startDraining();
      const drained = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const grace = setTimeout(() => {
        logger.warn('grace period over; closing remaining connections');
        server.closeAllConnections();
      }, config.shutdownGraceSeconds * 1000);
      await drained;
      clearTimeout(grace);
      await workers.stop();
      await limits.close();
      await database.close();
      logger.info('gateway stopped');
      await logger.close();
    })();
    return closing;
  };
  return { config, url, server, workers, database, logger, close };
}
