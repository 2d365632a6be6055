import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { withDeclaredImports } from './reflection-descriptors.js';
import type { Readiness } from '../features/health/readiness.js';
import type { Logger } from '../infra/logger.js';
import { GATEWAY_SERVICE_NAME, loadGatewayProtos } from './gateway-protos.js';

export interface GatewayGrpcServer {
  port: number;
  /** NOT_SERVING at once (draining), before the next readiness check would say so. */
  stopServing(): void;
  /** Let calls in flight finish up to `graceMs`, then cut what is left. */
  close(graceMs: number): Promise<void>;
}

/** How often grpc.health.v1 follows readiness (the same check as /health/ready). */
const HEALTH_REFRESH_MS = 1000;

/**
 * The gateway's public gRPC server: the DeviceOperations front, the standard
 * health service (the empty name and the service's, SERVING exactly while
 * /health/ready is 200 — a worker serves, the database answers, not
 * draining) and server reflection (grpcurl, Postman and friends discover
 * the API from it).
 */
export async function startGrpcServer(options: {
  host: string;
  port: number;
  implementation: grpc.UntypedServiceImplementation;
  readiness: Readiness;
  logger: Logger;
  maxMessageBytes: number;
}): Promise<GatewayGrpcServer> {
  const protos = loadGatewayProtos();
  const server = new grpc.Server({
    'grpc.max_receive_message_length': options.maxMessageBytes,
    'grpc.max_send_message_length': -1,
    // Idle internal clients keep their connection; dead ones are noticed.
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
  });
  server.addService(protos.service, options.implementation);
  const health = new HealthImplementation({ '': 'NOT_SERVING', [GATEWAY_SERVICE_NAME]: 'NOT_SERVING' });
  health.addToServer(server);
  new ReflectionService(withDeclaredImports(protos.definition)).addToServer(server);

  let serving: boolean | null = null;
  let stopped = false;
  const set = (now: boolean) => {
    if (now === serving) return;
    serving = now;
    const status = now ? 'SERVING' : 'NOT_SERVING';
    health.setStatus('', status);
    health.setStatus(GATEWAY_SERVICE_NAME, status);
  };
  const refresh = async () => {
    const report = await options.readiness.check();
    if (!stopped) set(report.ready);
  };
  await refresh();
  const timer = setInterval(() => void refresh().catch(() => set(false)), HEALTH_REFRESH_MS);
  timer.unref();

  const address = options.host.includes(':') ? `[${options.host}]` : options.host;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${address}:${options.port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  options.logger.info('gateway gRPC listening', { address: `${options.host}:${port}`, service: GATEWAY_SERVICE_NAME });

  return {
    port,
    stopServing: () => {
      stopped = true;
      set(false);
    },
    close: async (graceMs) => {
      stopped = true;
      clearInterval(timer);
      set(false);
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, Math.max(0, graceMs));
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}
