import { randomUUID } from 'node:crypto';
import { Metadata, status as GrpcStatus, type ServerUnaryCall, type ServerWritableStream, type UntypedServiceImplementation, type sendUnaryData } from '@grpc/grpc-js';
import { ServiceUnavailableError, UnauthorizedError, type GatewayError } from '../errors/gateway-error.js';
import { toGatewayError } from '../http/problem-middleware.js';
import { parseRouteInput, scopeRefusal, type RouteSpec } from '../http/route.js';
import type { Authenticator } from '../features/auth/authenticator.js';
import type { AuditService } from '../features/audit/audit-service.js';
import type { Readiness } from '../features/health/readiness.js';
import type { LimiterName } from '../features/rate-limits/rate-limits.js';
import { addressKey } from '../features/rate-limits/client-address.js';
import type { Logger } from '../infra/logger.js';
import type { GatewayMetrics } from '../infra/metrics.js';
import { grpcCodeName } from '../errors/worker-status.js';
import { clientAddressResolver } from './client-address.js';
import { grpcCodeOf, toServiceError } from './grpc-status.js';
import { protoFieldPath, type RpcContext, type RpcInput, type RpcSpec, type RpcStream } from './rpc.js';

export interface GrpcFrontDeps {
  routes: readonly RouteSpec[];
  rpcs: readonly RpcSpec[];
  authenticator: Authenticator;
  /** The REST limiters' counters (absent in unit tests of other logic). */
  consume?: (limiter: LimiterName, key: string) => Promise<void>;
  readiness: Readiness;
  audit: AuditService;
  logger: Logger;
  metrics: GatewayMetrics;
  trustProxy: boolean | number | readonly string[];
}

// Safe to echo in a trailer and a log line verbatim (as REST's X-Request-Id).
const CORRELATION_ID = /^[A-Za-z0-9._:-]{1,128}$/;

const first = (metadata: Metadata, key: string): string | undefined => {
  const value = metadata.get(key)[0];
  return typeof value === 'string' ? value : undefined;
};

/**
 * The gateway's gRPC front: each rpc run through its REST route's chain, in
 * REST's order — drain rule, per-client limit, authentication, scope,
 * per-principal limit, validation by the route's schemas, the call (with its
 * audit entry) — and every error through the gRPC status table. One access
 * log line and one metric per call, like REST's.
 */
export function createGrpcFront(deps: GrpcFrontDeps): UntypedServiceImplementation {
  const byOperation = new Map(deps.routes.map((route) => [route.operationId, route]));
  const clientAddress = clientAddressResolver(deps.trustProxy);
  const implementation: UntypedServiceImplementation = {};

  for (const rpc of deps.rpcs) {
    const route = byOperation.get(rpc.operationId);
    if (!route) throw new Error(`rpc ${rpc.name} mirrors the unknown REST operation ${rpc.operationId}`);
    if (typeof route.auth !== 'object') throw new Error(`rpc ${rpc.name}: only authenticated operations are served over gRPC`);
    const scope = route.auth.scope;
    const limiter: LimiterName = route.rateLimit === 'inference' ? 'inference' : 'principal';
    const changes = !['get', 'delete'].includes(route.method);
    const fieldName = rpc.field ?? protoFieldPath;

    /** Everything before the call: the context, then each refusal REST would give, in REST's order. */
    const admit = async (metadata: Metadata, message: Record<string, unknown>, context: RpcContext): Promise<RpcInput> => {
      if (changes && deps.readiness.isDraining) {
        throw new ServiceUnavailableError('The gateway is shutting down; retry on another instance.', 1, 'draining');
      }
      await deps.consume?.('client', addressKey(context.clientAddress));
      const principal = await deps.authenticator.identify(
        { authorization: first(metadata, 'authorization'), 'x-api-key': first(metadata, 'x-api-key') },
        context.log,
      );
      if ('reason' in principal) throw new UnauthorizedError();
      context.principal = principal;
      const refusal = scopeRefusal(scope, principal);
      if (refusal) throw refusal;
      await deps.consume?.(limiter, principal.id);
      const parsed = parseRouteInput(route.request, rpc.input?.(message) ?? {});
      return { params: (parsed.params ?? {}) as Record<string, unknown>, query: (parsed.query ?? {}) as Record<string, unknown>, body: parsed.body, context };
    };

    const contextOf = (metadata: Metadata, peer: string): RpcContext => {
      const offered = first(metadata, 'x-request-id');
      const correlationId = offered && CORRELATION_ID.test(offered) ? offered : randomUUID();
      return {
        correlationId,
        log: deps.logger.child({ correlationId }),
        principal: null,
        clientAddress: clientAddress(peer, first(metadata, 'x-forwarded-for')),
      };
    };

    /** The call, with the route's audit entry (success or failure) like REST's. */
    const invoke = async <T>(input: RpcInput, call: () => Promise<T>): Promise<T> => {
      if (!route.audit) return call();
      const target = route.audit.target?.(input as never) ?? null;
      const record = (outcome: 'success' | 'failure', details: Record<string, unknown> | null) =>
        void deps.audit.record({
          actor: input.context.principal?.id ?? 'anonymous',
          action: route.audit!.action,
          target,
          clientAddress: input.context.clientAddress,
          outcome,
          details,
        });
      try {
        const result = await call();
        record('success', null);
        return result;
      } catch (error) {
        record('failure', { status: toGatewayError(error).status, channel: 'grpc' });
        throw error;
      }
    };

    const finish = (context: RpcContext, started: bigint, code: number, error: GatewayError | null) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const codeName = grpcCodeName(code);
      deps.metrics.grpcServerDuration.observe({ method: rpc.name, code: codeName }, seconds);
      if (error) countRefusal(deps.metrics, error, context);
      if (error && !error.isRefusal()) context.log.error('rpc failed', { errorId: error.id, rpc: rpc.name, code: codeName, err: error });
      else if (error) context.log.info('rpc refused', { errorId: error.id, rpc: rpc.name, code: codeName, detail: error.detail });
      context.log.info('rpc', { rpc: rpc.name, code: codeName, durationMs: seconds * 1000, principal: context.principal?.id ?? null });
    };

    const trailer = (context: RpcContext) => {
      const metadata = new Metadata();
      metadata.set('x-request-id', context.correlationId);
      return metadata;
    };

    if (rpc.unary) {
      const unary = rpc.unary;
      implementation[rpc.name] = (call: ServerUnaryCall<Record<string, unknown>, unknown>, callback: sendUnaryData<unknown>) => {
        const started = process.hrtime.bigint();
        const peer = call.getPeer();
        const context = contextOf(call.metadata, peer);
        admit(call.metadata, call.request, context)
          .then((input) => invoke(input, () => unary(input)))
          .then(
            (response) => {
              finish(context, started, GrpcStatus.OK, null);
              callback(null, response, trailer(context));
            },
            (error: unknown) => {
              const problem = toGatewayError(error);
              finish(context, started, GrpcStatus[grpcCodeOf(problem)], problem);
              callback(toServiceError(problem, context.correlationId, (field) => fieldName(field, call.request)));
            },
          );
      };
    } else if (rpc.stream) {
      const stream = rpc.stream;
      implementation[rpc.name] = (call: ServerWritableStream<Record<string, unknown>, unknown>) => {
        const started = process.hrtime.bigint();
        const peer = call.getPeer();
        const context = contextOf(call.metadata, peer);
        const cancels: (() => void)[] = [];
        let ended = false;
        call.once('cancelled', () => {
          if (ended) return;
          ended = true;
          finish(context, started, GrpcStatus.CANCELLED, null);
          for (const fn of cancels.splice(0)) fn();
        });
        const out: RpcStream = {
          write: (message) => {
            if (!ended) call.write(message);
          },
          end: () => {
            if (ended) return;
            ended = true;
            finish(context, started, GrpcStatus.OK, null);
            call.end(trailer(context));
          },
          onCancel: (fn) => {
            if (call.cancelled) fn();
            else cancels.push(fn);
          },
          get cancelled() {
            return call.cancelled;
          },
        };
        admit(call.metadata, call.request, context)
          .then((input) => invoke(input, () => stream(input, out)))
          .catch((error: unknown) => {
            if (ended) return;
            ended = true;
            const problem = toGatewayError(error);
            finish(context, started, GrpcStatus[grpcCodeOf(problem)], problem);
            call.emit('error', toServiceError(problem, context.correlationId, (field) => fieldName(field, call.request)));
          });
      };
    }
  }
  return implementation;
}

/** The refusals metrics count, as the problem middleware counts REST's. */
function countRefusal(metrics: GatewayMetrics, error: GatewayError, context: RpcContext): void {
  const code = grpcCodeOf(error);
  if (error.type === 'rate-limited') metrics.rateLimitRejections.inc({ limiter: (error as { limiter?: string }).limiter ?? 'unknown' });
  else if (error.type === 'forbidden') metrics.authFailures.inc({ method: context.principal?.method ?? 'none', reason: 'scope' });
  else if (code === 'UNAVAILABLE' && 'reason' in error) metrics.backpressureRejections.inc({ reason: String((error as { reason: unknown }).reason) });
}
