import express, { type Express } from 'express';
import type { Config } from './config/config.js';
import type { Logger } from './infra/logger.js';
import { JwtAuthenticator } from './features/auth/jwt-authenticator.js';
import { DeviceService } from './features/devices/device-service.js';
import { deviceRoutes } from './features/devices/device-routes.js';
import { docsRouter } from './features/docs/docs-routes.js';
import { createRegistry, generateDocument, type OpenApiDocument } from './features/docs/openapi.js';
import { HealthService } from './features/health/health-service.js';
import { healthRoutes } from './features/health/health-routes.js';
import type { WorkerPool } from './features/workers/worker-handle.js';
import { mountRoutes } from './http/route.js';
import { notFoundHandler, problemMiddleware } from './http/problem-middleware.js';
import { requestContext } from './http/request-context.js';

export interface AppDeps {
  logger: Logger;
  workers: WorkerPool;
  version: string;
}

export interface GatewayApp {
  app: Express;
  openapi: OpenApiDocument;
}

/**
 * The composition root of the HTTP side: builds services from their
 * dependencies and the Express app from the services. Never listens; the
 * caller (main.ts, or a test) does.
 */
export function createApp(config: Config, deps: AppDeps): GatewayApp {
  const devices = new DeviceService(deps.workers, config.grpcDeadlineMs);
  const health = new HealthService(deps.workers, { deadlineMs: config.healthCheckDeadlineMs, version: deps.version });
  const auth = new JwtAuthenticator(config);
  const registry = createRegistry();

  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(requestContext(deps.logger));
  app.use(express.json({ limit: '1mb' }));
  app.use(mountRoutes([...healthRoutes(health), ...deviceRoutes(devices)], { registry, auth }));
  const openapi = generateDocument(registry, deps.version);
  app.use(docsRouter(openapi));
  app.use(notFoundHandler());
  app.use(problemMiddleware());
  return { app, openapi };
}
