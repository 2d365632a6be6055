import express, { type Express } from 'express';
import type { Config } from './config/config.js';
import type { Logger } from './infra/logger.js';
import { JwtAuthenticator } from './features/auth/jwt-authenticator.js';
import { batchRoutes } from './features/batches/batch-routes.js';
import { BatchService } from './features/batches/batch-service.js';
import { DeviceService } from './features/devices/device-service.js';
import { deviceRoutes } from './features/devices/device-routes.js';
import { docsRouter } from './features/docs/docs-routes.js';
import { createRegistry, generateDocument, type OpenApiDocument } from './features/docs/openapi.js';
import { HealthService } from './features/health/health-service.js';
import { healthRoutes } from './features/health/health-routes.js';
import { inferenceRoutes } from './features/inference/inference-routes.js';
import { InferenceService } from './features/inference/inference-service.js';
import { memoryRoutes } from './features/memory/memory-routes.js';
import { modelRoutes } from './features/models/model-routes.js';
import { ModelService } from './features/models/model-service.js';
import { postprocessingRoutes } from './features/postprocessing/postprocessing-routes.js';
import { WorkerScheduler } from './features/scheduling/worker-scheduler.js';
import { SessionEventLog } from './features/sessions/session-event-log.js';
import { SessionService } from './features/sessions/session-service.js';
import type { SessionStores } from './features/sessions/session-store.js';
import type { WorkerPool } from './features/workers/worker-handle.js';
import { mountRoutes } from './http/route.js';
import { notFoundHandler, problemMiddleware } from './http/problem-middleware.js';
import { requestContext } from './http/request-context.js';

export interface AppDeps {
  logger: Logger;
  workers: WorkerPool;
  version: string;
  /** Database-backed stores, or their in-memory fakes in unit tests. */
  stores: SessionStores;
}

export interface GatewayServices {
  sessions: SessionService;
  batches: BatchService;
}

export interface GatewayApp {
  app: Express;
  openapi: OpenApiDocument;
  services: GatewayServices;
}

/**
 * The composition root of the HTTP side: builds services from their
 * dependencies and the Express app from the services. Never listens; the
 * caller (main.ts, or a test) does.
 */
export function createApp(config: Config, deps: AppDeps): GatewayApp {
  const { logger, workers, stores } = deps;
  const scheduler = new WorkerScheduler(workers, config.grpcDeadlineMs);
  const sessions = new SessionService({
    sessions: stores.sessions,
    events: new SessionEventLog(stores.events, logger),
    scheduler,
    logger,
    inferenceDeadlineMs: config.inferenceDeadlineMs,
    outputUrl: (sessionId, file) => `/api/inference/outputs/${sessionId}/${encodeURIComponent(file)}`,
  });
  const inference = new InferenceService(sessions, scheduler);
  const batches = new BatchService({
    batches: stores.batches,
    sessions: stores.sessions,
    sessionService: sessions,
    inference,
    scheduler,
    logger,
  });
  const devices = new DeviceService(workers, scheduler, config.grpcDeadlineMs);
  const health = new HealthService(workers, { deadlineMs: config.healthCheckDeadlineMs, version: deps.version });
  const models = new ModelService(scheduler);
  const auth = new JwtAuthenticator(config);
  const registry = createRegistry();

  const routes = [
    ...healthRoutes(health),
    ...deviceRoutes(devices),
    ...memoryRoutes(scheduler),
    ...modelRoutes(models),
    ...inferenceRoutes({ inference, sessions, outputDirectory: config.outputDirectory }),
    ...postprocessingRoutes(sessions),
    ...batchRoutes(batches),
  ];

  const app = express();
  app.disable('x-powered-by');
  // Hashing every JSON body for an ETag costs CPU on each request; API
  // responses here are live data that clients do not revalidate.
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.use(requestContext(logger));
  app.use(express.json({ limit: config.requestBodyLimitBytes }));
  app.use(mountRoutes(routes, { registry, auth }));
  const openapi = generateDocument(registry, deps.version);
  app.use(docsRouter(openapi));
  app.use(notFoundHandler());
  app.use(problemMiddleware());
  return { app, openapi, services: { sessions, batches } };
}
