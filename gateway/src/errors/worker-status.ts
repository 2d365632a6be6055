import { status as GrpcStatus } from '@grpc/grpc-js';

export type GrpcCodeName = keyof typeof GrpcStatus;

/** How a worker's status reaches the REST client. */
export interface WorkerStatusMapping {
  httpStatus: number;
  type: string;
  title: string;
  /** Seconds for Retry-After, where retrying later makes sense. */
  retryAfterSeconds?: number;
  /**
   * The worker had no room (or none served): backpressure working, answered
   * 503 and logged at info like the gateway's own capacity refusals, not as a fault.
   */
  capacity?: true;
}

/**
 * The one table from a worker's status — a gRPC code, or a code the gateway
 * gives a job's end (WORKER_LOST) — to the HTTP status the client sees.
 * Both a failed call (WorkerCallError) and a job that ended in error
 * (SessionFailedError) are mapped here. Each row has a test
 * (test/unit/worker-call-error.test.ts).
 * CANCELLED on a call only happens when our client already went away: the
 * response is never written; the row exists so it is logged and counted.
 */
export const WORKER_STATUS_TO_HTTP: Readonly<Record<string, WorkerStatusMapping>> = Object.freeze({
  // The gateway checked the schema already: what a worker refuses is content its model cannot use.
  INVALID_ARGUMENT: { httpStatus: 422, type: 'invalid-argument', title: 'Invalid argument' },
  NOT_FOUND: { httpStatus: 404, type: 'not-found', title: 'Not found' },
  FAILED_PRECONDITION: { httpStatus: 409, type: 'failed-precondition', title: 'Conflict with the worker state' },
  // The worker already holds (or has outputs for) that job id: never a job run twice.
  ALREADY_EXISTS: { httpStatus: 409, type: 'already-exists', title: 'The worker already has that job' },
  RESOURCE_EXHAUSTED: { httpStatus: 503, type: 'worker-capacity', title: 'Worker at capacity', retryAfterSeconds: 5, capacity: true },
  UNAVAILABLE: { httpStatus: 503, type: 'worker-unavailable', title: 'Worker unavailable', retryAfterSeconds: 5, capacity: true },
  DEADLINE_EXCEEDED: { httpStatus: 504, type: 'worker-timeout', title: 'Worker did not answer in time' },
  CANCELLED: { httpStatus: 499, type: 'client-closed-request', title: 'Client closed the request' },
  // The worker refused the gateway's own credentials: a deployment fault, not the client's.
  UNAUTHENTICATED: { httpStatus: 502, type: 'worker-auth-failed', title: "The worker refused the gateway's credentials" },
  // A started job whose worker went away (the gateway's code, not gRPC's).
  WORKER_LOST: { httpStatus: 502, type: 'worker-lost', title: 'The worker was lost' },
});

/** Every other status: the worker failed. */
const OTHER: WorkerStatusMapping = { httpStatus: 502, type: 'worker-error', title: 'Worker failed' };

export function mapWorkerStatus(code: string): WorkerStatusMapping {
  return Object.hasOwn(WORKER_STATUS_TO_HTTP, code) ? WORKER_STATUS_TO_HTTP[code]! : OTHER;
}

export function grpcCodeName(code: number): GrpcCodeName | 'UNKNOWN_CODE' {
  const name = (Object.keys(GrpcStatus) as GrpcCodeName[]).find((key) => GrpcStatus[key] === code);
  return name ?? 'UNKNOWN_CODE';
}
