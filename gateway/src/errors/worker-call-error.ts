import { status as GrpcStatus } from '@grpc/grpc-js';
import { GatewayError } from './gateway-error.js';

type GrpcCodeName = keyof typeof GrpcStatus;

interface Mapping {
  httpStatus: number;
  type: string;
  title: string;
  /** Seconds for Retry-After, where retrying later makes sense. */
  retryAfterSeconds?: number;
}

/**
 * The one table from a worker's gRPC status to the HTTP status the client
 * sees. Each row has a test (test/unit/worker-call-error.test.ts).
 * CANCELLED only happens when our client already went away: the response is
 * never written, the row exists so it is logged and counted as such.
 */
export const GRPC_TO_HTTP: Readonly<Partial<Record<GrpcCodeName, Mapping>>> = Object.freeze({
  INVALID_ARGUMENT: { httpStatus: 400, type: 'invalid-argument', title: 'Invalid argument' },
  NOT_FOUND: { httpStatus: 404, type: 'not-found', title: 'Not found' },
  FAILED_PRECONDITION: { httpStatus: 409, type: 'failed-precondition', title: 'Conflict with the worker state' },
  RESOURCE_EXHAUSTED: { httpStatus: 503, type: 'worker-capacity', title: 'Worker at capacity', retryAfterSeconds: 5 },
  UNAVAILABLE: { httpStatus: 503, type: 'worker-unavailable', title: 'Worker unavailable', retryAfterSeconds: 5 },
  DEADLINE_EXCEEDED: { httpStatus: 504, type: 'worker-timeout', title: 'Worker did not answer in time' },
  CANCELLED: { httpStatus: 499, type: 'client-closed-request', title: 'Client closed the request' },
  // The worker refused the gateway's own credentials: a deployment fault, not the client's.
  UNAUTHENTICATED: { httpStatus: 502, type: 'worker-auth-failed', title: "The worker refused the gateway's credentials" },
});

const OTHER: Mapping = { httpStatus: 502, type: 'worker-error', title: 'Worker failed' };

export function grpcCodeName(code: number): GrpcCodeName | 'UNKNOWN_CODE' {
  const name = (Object.keys(GrpcStatus) as GrpcCodeName[]).find((key) => GrpcStatus[key] === code);
  return name ?? 'UNKNOWN_CODE';
}

/** A call to a worker failed; carries the gRPC code and maps it to HTTP. */
export class WorkerCallError extends GatewayError {
  readonly status: number;
  readonly type: string;
  readonly title: string;
  readonly grpcCode: string;

  constructor(
    readonly workerId: string,
    readonly rpc: string,
    code: number,
    detail: string,
  ) {
    super(detail);
    const name = grpcCodeName(code);
    const mapping = (name !== 'UNKNOWN_CODE' && GRPC_TO_HTTP[name]) || OTHER;
    this.grpcCode = name;
    this.status = mapping.httpStatus;
    this.type = mapping.type;
    this.title = mapping.title;
    this.extensions.workerId = workerId;
    if (mapping.retryAfterSeconds !== undefined) this.headers['Retry-After'] = String(mapping.retryAfterSeconds);
  }
}
