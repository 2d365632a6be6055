import { mkdirSync } from 'node:fs';
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import { createApp, type GatewayServices } from './app.js';
import { createHttpServer } from './http/http-server.js';
import { loadConfig, type Config } from './config/config.js';
import { createStores } from './create-stores.js';
import { createRateLimits } from './features/rate-limits/rate-limits.js';
import { instrumentDatabase } from './infra/database/database-metrics.js';
import { GatewayMetrics } from './infra/metrics.js';
import { createWorkerPool } from './features/workers/create-worker-pool.js';
import { HealthMonitor } from './features/workers/health-monitor.js';
import { createDatabase, type Database } from './infra/database/database.js';
import type { WorkerPool } from './features/workers/worker-handle.js';
import { createLogger, type Logger } from './infra/logger.js';
import { PgSessionBus } from './infra/bus/pg-session-bus.js';
import { LocalSessionBus } from './infra/bus/session-bus.js';
import { readGatewayVersion } from './version.js';
import { startGrpcServer } from './grpc/grpc-server.js';
import type { LayerName } from './ablation/layers.js';

export interface RunningGateway {
  config: Config;
  url: string;
  /** host:port of the public gRPC API (device_ops.gateway.v1.DeviceOperations). */
  grpcAddress: string;
  server: Server;
  workers: WorkerPool;
  database: Database;
  logger: Logger;
  /** The services behind the routes (tests and the fault report look inside). */
  services: GatewayServices;
  /** Stop accepting, let in-flight requests finish (up to the grace), stop workers. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Where JSON log lines go (stdout by default); tests capture them. */
  logStream?: Writable;
  /** Layers left out, for the bench's layer ablation only (gateway/bench/ablation-server.ts; ablation/layers.ts). */
  ablate?: ReadonlySet<LayerName>;
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
  if (config.seqServerUrl) metrics.logDropped.inc({ sink: 'seq' }, 0);
  const version = readGatewayVersion();
  // Folders the gateway serves from and reports the free space of.
  for (const dir of [config.modelDirectory, config.outputDirectory, config.dataDirectory]) mkdirSync(dir, { recursive: true });
  const database = createDatabase({ databaseUrl: config.databaseUrl, dataDirectory: config.dataDirectory }, logger);
  instrumentDatabase(database.knex, metrics);
  await database.migrate();
  // The worker-call histogram is part of the per-request metrics the ablation can remove.
  const observeCall = options.ablate?.has('metrics')
    ? undefined
    : (worker: string, rpc: string, code: string, seconds: number) => metrics.grpcDuration.observe({ worker, rpc, code }, seconds);
  const workers = await createWorkerPool(config, logger, env, observeCall);
  await workers.start();
  // Health checks with a deadline: a frozen or partitioned worker is taken out of scheduling within seconds.
  const monitor = new HealthMonitor(workers, config.workerHealthIntervalMs, config.healthCheckDeadlineMs, logger);
  monitor.start();

  const limits = await createRateLimits(config, logger);
  // Replicas on one PostgreSQL tell each other about sessions through it; SQLite is one process.
  const bus =
    database.dialect === 'postgres'
      ? new PgSessionBus(config.databaseUrl!, (channel, payload) => database.knex.raw('select pg_notify(?, ?)', [channel, payload]), logger)
      : new LocalSessionBus();
  if (bus instanceof PgSessionBus) await bus.start();
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
    ...(config.seqServerUrl
      ? [{ name: 'seq log sink', check: async () => logger.seqStatus?.() ?? { healthy: false, detail: 'not configured' } }]
      : []),
  ];
  const { app, grpc: grpcFront, services } = createApp(config, {
    logger,
    workers,
    version,
    stores: createStores(database.knex),
    limits,
    dependencies,
    metrics,
    pingDatabase: () => database.ping(),
    rateLimitStoreHealthy: () => limits.status().healthy,
    bus,
    ...(options.ablate ? { ablate: options.ablate } : {}),
  });
  if (options.ablate?.size) logger.warn('layers removed for the layer ablation bench; not for production', { layers: [...options.ablate] });
  // A lease of its own before serving; sessions of instances that went away are taken over once their leases run out.
  await services.lease.register();
  await services.dispatcher.start();
  const server = createHttpServer(app).listen(config.port, config.host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const url = `http://${host}:${port}`;
  const grpcServer = await startGrpcServer({
    host: config.host,
    port: config.grpcPort,
    implementation: grpcFront,
    readiness: services.readiness,
    logger,
    maxMessageBytes: config.requestBodyLimitBytes,
  });
  const grpcAddress = `${host}:${grpcServer.port}`;
  logger.info('gateway listening', { url, grpcAddress, version, workerMode: workers.mode, workers: workers.workers().length });

  let closing: Promise<void> | null = null;
  /**
   * Drain, in order: readiness 503 at once (load balancers stop sending)
   * and new work refused with 503 while /health stays 200; no more queued
   * work is claimed; running jobs get up to SHUTDOWN_GRACE_SECONDS; then no
   * new connections. Jobs still running then: with local workers (which
   * stop with the gateway) recorded `interrupted`, their followers told;
   * with remote workers (which run on) handed over — the lease is given up
   * and another instance follows them to their end. The remaining
   * connections close; workers stop last.
   */
  const close = () => {
    closing ??= (async () => {
      const graceMs = config.shutdownGraceSeconds * 1000;
      const deadline = Date.now() + graceMs;
      logger.info('gateway draining', { graceSeconds: config.shutdownGraceSeconds, activeSessions: services.sessions.activeCount });
      services.readiness.startDraining();
      grpcServer.stopServing();
      services.dispatcher.pause(); // no further queued session starts here
      // Still listening while jobs finish: /health answers 200, /health/ready
      // 503, and new work gets 503 (see refuseWhileDraining).
      const idle = await services.sessions.waitIdle(graceMs);
      const drained = new Promise<void>((resolve) => server.close(() => resolve()));
      const grpcDrained = grpcServer.close(Math.max(200, deadline - Date.now()));
      server.closeIdleConnections();
      services.sessions.close();
      if (!idle && workers.mode === 'local') {
        const count = await services.sessions.interruptActive('the gateway shut down before the job finished');
        logger.warn('grace period over; jobs still running were interrupted', { count });
      } else if (!idle) {
        const count = await services.sessions.handOver('the gateway instance stopped');
        logger.info('grace period over; jobs still running were handed over to the other instances', { count });
      }
      await services.dispatcher.stop();
      await services.lease.giveUp();
      // Let responses of the jobs that just ended reach their clients, then close what is left.
      const lastWrites = setTimeout(() => server.closeAllConnections(), Math.max(200, deadline - Date.now()));
      await drained;
      await grpcDrained;
      clearTimeout(lastWrites);
      monitor.stop();
      await workers.stop();
      await limits.close();
      await bus.close();
      await database.close();
      logger.info('gateway stopped');
      await logger.close();
    })();
    return closing;
  };
  return { config, url, grpcAddress, server, workers, database, logger, services, close };
}
