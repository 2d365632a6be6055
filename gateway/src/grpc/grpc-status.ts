import { Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { GatewayError, ValidationError } from '../errors/gateway-error.js';
import type { GrpcCodeName } from '../errors/worker-status.js';
import { encodeStatusDetails, type StatusDetail } from './status-details.js';

/**
 * The gRPC front's one status table, beside the HTTP one
 * (problem-middleware.ts): every GatewayError's `type` — the gateway's own
 * errors and the rows of the worker-status table — to the code a gRPC caller
 * gets. Capacity (no worker, a full queue, draining, a worker's
 * RESOURCE_EXHAUSTED) is UNAVAILABLE with retry pushback: the call can go
 * elsewhere or later; a rate limit is RESOURCE_EXHAUSTED, the caller's own
 * quota. Each row has a test (test/unit/grpc-status.test.ts).
 */
export const ERROR_TYPE_TO_GRPC: Readonly<Record<string, GrpcCodeName>> = Object.freeze({
  'validation-failed': 'INVALID_ARGUMENT',
  'unprocessable-content': 'INVALID_ARGUMENT',
  'malformed-body': 'INVALID_ARGUMENT',
  'unsupported-media-type': 'INVALID_ARGUMENT',
  'payload-too-large': 'RESOURCE_EXHAUSTED',
  unauthorized: 'UNAUTHENTICATED',
  forbidden: 'PERMISSION_DENIED',
  'not-found': 'NOT_FOUND',
  'method-not-allowed': 'UNIMPLEMENTED',
  conflict: 'FAILED_PRECONDITION',
  'rate-limited': 'RESOURCE_EXHAUSTED',
  'service-unavailable': 'UNAVAILABLE',
  'database-unavailable': 'UNAVAILABLE',
  internal: 'INTERNAL',
  // From the worker-status table (a worker's code, or the end of a job).
  'invalid-argument': 'INVALID_ARGUMENT',
  'failed-precondition': 'FAILED_PRECONDITION',
  'already-exists': 'ALREADY_EXISTS',
  'worker-capacity': 'UNAVAILABLE',
  'worker-unavailable': 'UNAVAILABLE',
  'worker-timeout': 'DEADLINE_EXCEEDED',
  'client-closed-request': 'CANCELLED',
  'worker-auth-failed': 'INTERNAL',
  'worker-lost': 'UNAVAILABLE',
  'worker-error': 'INTERNAL',
  'session-cancelled': 'CANCELLED',
});

export function grpcCodeOf(error: GatewayError): GrpcCodeName {
  return ERROR_TYPE_TO_GRPC[error.type] ?? (error.status >= 500 ? 'INTERNAL' : 'UNKNOWN');
}

/** Seconds the error asks the caller to wait (Retry-After), if any. */
function retryAfterSeconds(error: GatewayError): number | null {
  const value = Number(error.headers['Retry-After']);
  return Number.isFinite(value) && value > 0 ? value : null;
}

/**
 * The status a gRPC caller gets for an error: the table's code; the same
 * detail text as REST's problem; a google.rpc.Status in
 * `grpc-status-details-bin` with BadRequest (each field), RetryInfo and
 * ErrorInfo (type, error id, correlation id); `grpc-retry-pushback-ms` where
 * retrying later makes sense; the correlation id in `x-request-id`.
 */
export function toServiceError(
  error: GatewayError,
  correlationId: string,
  fieldName: (field: string) => string = (field) => field,
): Partial<ServiceError> & { code: number; details: string; metadata: Metadata } {
  const code = GrpcStatus[grpcCodeOf(error)];
  const metadata = new Metadata();
  metadata.set('x-request-id', correlationId);
  const details: StatusDetail[] = [];
  let message = error.detail;
  if (error instanceof ValidationError) {
    const violations = error.problems.map((p) => ({ field: fieldName(p.field), description: p.message }));
    message = violations.map((v) => `${v.field}: ${v.description}`).join('; ');
    details.push({ kind: 'BadRequest', fieldViolations: violations });
  }
  const wait = retryAfterSeconds(error);
  if (wait !== null && (code === GrpcStatus.UNAVAILABLE || code === GrpcStatus.RESOURCE_EXHAUSTED)) {
    metadata.set('grpc-retry-pushback-ms', String(wait * 1000));
    details.push({ kind: 'RetryInfo', retryDelaySeconds: wait });
  }
  const info: Record<string, string> = { errorId: error.id, correlationId };
  for (const [key, value] of Object.entries(error.extensions)) {
    if (typeof value === 'string' || typeof value === 'number') info[key] = String(value);
  }
  details.push({ kind: 'ErrorInfo', reason: error.type, domain: 'device-operations', metadata: info });
  metadata.set('grpc-status-details-bin', encodeStatusDetails(code, message, details));
  return { code, details: message, metadata };
}
