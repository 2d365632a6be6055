import { BlockList, isIPv6 } from 'node:net';
import cors from 'cors';
import express, { type Express, type Request, type RequestHandler } from 'express';
import helmet from 'helmet';
import type { Config } from './config/config.js';
import type { GatewayStores } from './create-stores.js';
import type { Logger } from './infra/logger.js';
import { adminRoutes } from './features/admin/admin-routes.js';
import { ApiKeyService } from './features/api-keys/api-key-service.js';
import { AuditService } from './features/audit/audit-service.js';
import { Authenticator } from './features/auth/authenticator.js';
import { authRoutes } from './features/auth/auth-routes.js';
import { batchRoutes } from './features/batches/batch-routes.js';
import { BatchService } from './features/batches/batch-service.js';
import { DeviceService } from './features/devices/device-service.js';
import { deviceRoutes } from './features/devices/device-routes.js';
import { DOCS_OPERATIONS, docsRouter } from './features/docs/docs-routes.js';
import { createRegistry, generateDocument, type OpenApiDocument } from './features/docs/openapi.js';
import { HealthService, type DependencyCheck } from './features/health/health-service.js';
import { Readiness } from './features/health/readiness.js';
import { metricsRoutes } from './features/metrics/metrics-routes.js';
import { GatewayMetrics } from './infra/metrics.js';
import { healthRoutes } from './features/health/health-routes.js';
import { inferenceRoutes } from './features/inference/inference-routes.js';
import { InferenceService } from './features/inference/inference-service.js';
import { memoryRoutes } from './features/memory/memory-routes.js';
import { memoryRpcs } from './features/memory/memory-rpcs.js';
import { MemoryService } from './features/memory/memory-service.js';
import { modelRoutes } from './features/models/model-routes.js';
import { openAiErrorBody, OPENAI_PREFIX } from './features/openai/openai-errors.js';
import { openAiRoutes } from './features/openai/openai-routes.js';
import { OpenAiService } from './features/openai/openai-service.js';
import { ModelService } from './features/models/model-service.js';
import { postprocessingRoutes } from './features/postprocessing/postprocessing-routes.js';
import { postprocessingRpcs } from './features/postprocessing/postprocessing-rpcs.js';
import { PostprocessingService } from './features/postprocessing/postprocessing-service.js';
import { authRpcs } from './features/auth/auth-rpcs.js';
import { batchRpcs } from './features/batches/batch-rpcs.js';
import { deviceRpcs } from './features/devices/device-rpcs.js';
import { inferenceRpcs } from './features/inference/inference-rpcs.js';
import { modelRpcs } from './features/models/model-rpcs.js';
import type { RateLimits } from './features/rate-limits/rate-limits.js';
import { createGrpcFront } from './grpc/grpc-front.js';
import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import { WorkerScheduler } from './features/scheduling/worker-scheduler.js';
import { SessionEventLog } from './features/sessions/session-event-log.js';
import { InstanceLease } from './features/sessions/instance-lease.js';
import { SessionDispatcher } from './features/sessions/session-dispatcher.js';
import { SessionService } from './features/sessions/session-service.js';
import { LocalSessionBus, type SessionBus } from './infra/bus/session-bus.js';
import { StreamAdmission } from './features/sessions/stream-admission.js';
import { streamTokenAuth } from './features/sessions/stream-token-auth.js';
import { streamTokenRoutes } from './features/sessions/stream-token-routes.js';
import { StreamTokenService } from './features/sessions/stream-token-service.js';
import { ServiceUnavailableError } from './errors/gateway-error.js';
import type { WorkerPool } from './features/workers/worker-handle.js';
import { methodNotAllowed } from './http/method-not-allowed.js';
import { mountRoutes, type RouteGuards, type RouteSpec } from './http/route.js';
import type { RpcSpec } from './grpc/rpc.js';
import { notFoundHandler, problemMiddleware } from './http/problem-middleware.js';
import { requestContext } from './http/request-context.js';
import { NONE_REMOVED, type LayerName } from './ablation/layers.js';
import { ablatedRequestContext } from './ablation/ablated-request-context.js';
import { cannedListDevices } from './ablation/canned-list-devices.js';
import { fixedPrincipal } from './ablation/fixed-principal.js';
import { RelayOnlyDeviceService } from './ablation/relay-only-device-service.js';

/** Per-client and per-principal limits, in front of every route and rpc (see features/rate-limits). */
export interface RouteLimits {
  perClient: RequestHandler;
  perPrincipal: RequestHandler;
  inference: RequestHandler;
  /** The same counters for the gRPC front. */
  consume?: RateLimits['consume'];
}

export interface AppDeps {
  logger: Logger;
  workers: WorkerPool;
  version: string;
  /** Database-backed stores, or their in-memory fakes in unit tests. */
  stores: GatewayStores;
  /** Rate limits; none in unit tests of other logic. */
  limits?: RouteLimits;
  /** Extra dependencies /health/detailed reports (database, Redis…). */
  dependencies?: DependencyCheck[];
  /** The gateway's metrics (one registry per app); a fresh one when absent. */
  metrics?: GatewayMetrics;
  /** A real query against the database, for readiness; fakes answer at once. */
  pingDatabase?: () => Promise<number>;
  /** Whether rate-limit counters are where they belong, for metrics. */
  rateLimitStoreHealthy?: () => boolean;
  /** How instances tell each other about sessions: PostgreSQL LISTEN/NOTIFY between replicas; in process by default. */
  bus?: SessionBus;
  /** Layers left out, for the bench's layer ablation only (ablation/layers.ts); never in production. */
  ablate?: ReadonlySet<LayerName>;
}

export interface GatewayServices {
  sessions: SessionService;
  /** Claims queued work, takes over orphaned sessions, renews the lease; started by main.ts. */
  dispatcher: SessionDispatcher;
  lease: InstanceLease;
  batches: BatchService;
  apiKeys: ApiKeyService;
  audit: AuditService;
  readiness: Readiness;
  metrics: GatewayMetrics;
}

export interface GatewayApp {
  app: Express;
  /** The public gRPC service's methods over the same services (main.ts serves them on GRPC_PORT). */
  grpc: UntypedServiceImplementation;
  /** Both fronts' operations, for the contract tests that keep them in step. */
  operations: { routes: readonly RouteSpec[]; rpcs: readonly RpcSpec[] };
  openapi: OpenApiDocument;
  services: GatewayServices;
}

function allowList(entries: readonly string[] | undefined): BlockList {
  const list = new BlockList();
  for (const entry of entries ?? []) {
    const [address, bits] = entry.split('/');
    const type = isIPv6(address!) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address!, type);
    else list.addSubnet(address!, Number(bits), type);
  }
  return list;
}

/**
 * Once draining, new work is refused with 503 (a load balancer still sending
 * retries elsewhere); reads, cancellations, health and open streams go on.
 */
function refuseWhileDraining(readiness: Readiness): RequestHandler {
  return (req, _res, next) => {
    // DELETE stays allowed: cancelling a job that runs here is how a client stops it.
    const work = req.path.startsWith('/api/') || req.path.startsWith(`${OPENAI_PREFIX}/`);
    if (!readiness.isDraining || ['GET', 'HEAD', 'DELETE'].includes(req.method) || !work) {
      next();
      return;
    }
    next(new ServiceUnavailableError('The gateway is shutting down; retry on another instance.', 1, 'draining'));
  };
}

/**
 * The composition root of the HTTP side: builds services from their
 * dependencies and the Express app from the services. Never listens; the
 * caller (main.ts, or a test) does.
 */
export function createApp(config: Config, deps: AppDeps): GatewayApp {
  const { logger, workers, stores } = deps;
  // Decided here, once: a removed layer is never mounted, and production (nothing removed) builds what it always built.
  const without = deps.ablate ?? NONE_REMOVED;
  const on = (layer: LayerName) => !without.has(layer);
  const metrics = deps.metrics ?? new GatewayMetrics();
  const readiness = new Readiness(workers, deps.pingDatabase ?? (async () => 0));
  metrics.observe({
    workers: () => workers.workers().map((w) => ({ id: w.id, state: w.snapshot().state, restarts: w.snapshot().restarts })),
    ready: async () => (await readiness.check()).ready,
    rateLimitStoreHealthy: () => deps.rateLimitStoreHealthy?.() ?? true,
  });
  const audit = new AuditService(stores.audit, logger);
  const bus = deps.bus ?? new LocalSessionBus();
  const apiKeys = new ApiKeyService(stores.apiKeys, logger, {
    bootstrapAdminKey: config.adminApiKey,
    cacheSeconds: config.apiKeyCacheSeconds,
    revocations: bus,
  });
  const authenticator = new Authenticator(config, config.authApiKeysEnabled ? apiKeys : null, metrics);
  // Placement reads cheap worker metadata: a worker that does not answer within the health deadline is skipped.
  const scheduler = new WorkerScheduler(workers, Math.min(config.grpcDeadlineMs, config.healthCheckDeadlineMs), config.maxInflightPerWorker);
  const lease = new InstanceLease(stores.instances, config.sessionLeaseSeconds * 1000, logger);
  const sessions = new SessionService({
    sessions: stores.sessions,
    eventStore: stores.events,
    events: new SessionEventLog(stores.events, logger, bus, lease.id),
    bus,
    scheduler,
    logger,
    instanceId: lease.id,
    inferenceDeadlineMs: config.inferenceDeadlineMs,
    queueTimeoutMs: config.queueTimeoutSeconds * 1000,
    outputUrl: (sessionId, file) => `/api/inference/outputs/${sessionId}/${encodeURIComponent(file)}`,
    metrics,
    maxActiveSessions: config.maxActiveSessions,
  });
  const dispatcher = new SessionDispatcher({ sessions: stores.sessions, service: sessions, scheduler, lease, bus, logger });
  const streams = new StreamAdmission({ perPrincipal: config.maxSseStreamsPerPrincipal, total: config.maxSseStreams });
  const inference = new InferenceService(sessions, scheduler);
  const batches = new BatchService({ batches: stores.batches, sessions: stores.sessions, sessionService: sessions, inference, scheduler, logger });
  const devicePool = on('grpc') ? workers : cannedListDevices(workers);
  const devices = on('handler')
    ? new DeviceService(devicePool, scheduler, config.grpcDeadlineMs)
    : new RelayOnlyDeviceService(devicePool, scheduler, config.grpcDeadlineMs);
  const health = new HealthService(workers, {
    deadlineMs: config.healthCheckDeadlineMs,
    version: deps.version,
    dependencies: deps.dependencies ?? [],
    inFlight: (workerId) => scheduler.inFlightOf(workerId),
    disks: [
      { name: 'models', path: config.modelDirectory },
      { name: 'outputs', path: config.outputDirectory },
      { name: 'data', path: config.dataDirectory },
    ],
  });
  const models = new ModelService(scheduler, config.modelLoadDeadlineMs);
  const memory = new MemoryService(scheduler);
  const postprocessing = new PostprocessingService(sessions);
  const openai = new OpenAiService({ inference, sessions, models, outputDirectory: config.outputDirectory });
  const registry = createRegistry();
  const streamTokens = StreamTokenService.fromConfig(config);
  if (!streamTokens) logger.warn('no stream tokens: browsers cannot follow sessions with EventSource (set STREAM_TOKEN_SECRET)');

  const internal = allowList(config.internalAllowList);
  const guards: RouteGuards = {
    authenticate: on('auth') ? (onFailure) => authenticator.middleware(onFailure) : fixedPrincipal,
    ...(deps.limits && on('client-limit') ? { perClient: deps.limits.perClient } : {}),
    ...(deps.limits && on('principal-limit') ? { perPrincipal: deps.limits.perPrincipal, inference: deps.limits.inference } : {}),
    jsonBody: express.json({ limit: config.requestBodyLimitBytes }),
    streamToken: streamTokenAuth(streamTokens, metrics),
    internalAccess: (req: Request) => {
      if (config.metricsPublic) return true;
      const ip = req.socket.remoteAddress ?? '';
      const address = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
      return address !== '' && internal.check(address, isIPv6(address) ? 'ipv6' : 'ipv4');
    },
    audit: ({ req, action, target, outcome, details }) =>
      void audit.record({
        actor: req.context.principal?.id ?? 'anonymous',
        action,
        target,
        clientAddress: req.ip ?? null,
        outcome,
        details: details ?? null,
      }),
  };
  const routes = [
      ...healthRoutes(health, readiness),
      ...metricsRoutes(metrics, workers),
      ...authRoutes(),
      ...deviceRoutes(devices),
      ...memoryRoutes(memory),
      ...modelRoutes(models),
      ...inferenceRoutes({
        inference,
        sessions,
        outputDirectory: config.outputDirectory,
        audit,
        streams,
        streamTokens,
        sse: {
          open: metrics.sseStreams,
          maxBufferedBytes: config.sseMaxBufferedBytes,
          onOverflow: (bytes) => {
            metrics.sseSlowReaders.inc();
            logger.warn('event stream reader too slow; disconnected', { bufferedBytes: bytes });
          },
        },
      }),
      ...streamTokenRoutes(sessions, streamTokens),
      ...postprocessingRoutes(postprocessing),
      ...batchRoutes(batches),
      ...adminRoutes(apiKeys, audit),
      ...openAiRoutes(openai),
  ];
  const router = mountRoutes(routes, { registry, guards, without });
  // The same operations over gRPC: each rpc takes auth, scope, limits, schemas and audit from its route.
  const rpcs = [
      ...authRpcs(),
      ...deviceRpcs(devices),
      ...memoryRpcs(memory),
      ...modelRpcs(models),
      ...inferenceRpcs({ inference, sessions, audit, streams }),
      ...batchRpcs(batches),
      ...postprocessingRpcs(postprocessing),
  ];
  const grpc = createGrpcFront({
    routes,
    rpcs,
    authenticator,
    ...(deps.limits?.consume ? { consume: deps.limits.consume } : {}),
    readiness,
    audit,
    logger,
    metrics,
    trustProxy: config.trustProxy,
  });

  const app = express();
  app.disable('x-powered-by');
  // Hashing every JSON body for an ETag costs CPU on each request; API
  // responses here are live data that clients do not revalidate.
  app.set('etag', false);
  app.set('query parser', 'simple');
  // Exactly the proxy hops that exist (NGINX); with the default, a
  // client-sent X-Forwarded-For never changes req.ip.
  app.set('trust proxy', config.trustProxy);
  app.use(
    on('context') && on('access-log') && on('metrics') ? requestContext(logger, metrics) : ablatedRequestContext(logger, metrics, without),
  );
  if (on('helmet')) {
    app.use(
      helmet({
        contentSecurityPolicy: {
          directives: {
            defaultSrc: ["'self'"],
            // Swagger UI: its bundle and init script are files; it styles inline and uses data: images.
            scriptSrc: ["'self'"],
            styleSrc: ["'self'", "'unsafe-inline'"],
            imgSrc: ["'self'", 'data:'],
            connectSrc: ["'self'"],
            objectSrc: ["'none'"],
            frameAncestors: ["'none'"],
          },
        },
        crossOriginResourcePolicy: { policy: 'same-origin' },
      }),
    );
  }
  const origins = new Set(config.corsOrigins ?? []);
  if (on('cors')) {
    app.use(
      cors({
        // Listed origins only (never a wildcard), credentials allowed for them.
        origin: (origin, callback) => callback(null, origin !== undefined && origins.has(origin)),
        credentials: true,
        allowedHeaders: ['Authorization', 'Content-Type', 'X-API-Key', 'X-Request-Id', 'Last-Event-ID'],
        exposedHeaders: ['X-Request-Id', 'Location', 'Retry-After', 'RateLimit', 'RateLimit-Policy', 'X-Session-Id', 'X-Seed'],
        maxAge: 600,
      }),
    );
  }
  if (on('draining')) app.use(refuseWhileDraining(readiness));
  app.use(router);
  const openapi = generateDocument(registry, deps.version);
  app.use(docsRouter(openapi));
  app.use(methodNotAllowed([...routes, ...DOCS_OPERATIONS]));
  app.use(notFoundHandler());
  if (on('problem-writer')) app.use(problemMiddleware(metrics, [openAiErrorBody]));
  return {
    app,
    grpc,
    operations: { routes, rpcs },
    openapi,
    services: { sessions, dispatcher, lease, batches, apiKeys, audit, readiness, metrics },
  };
}
