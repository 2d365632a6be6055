import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import {
  MethodNotAllowedError,
  ConflictError,
  DatabaseUnavailableError,
  ForbiddenError,
  GatewayError,
  InternalError,
  MalformedBodyError,
  NotFoundError,
  PayloadTooLargeError,
  ServiceUnavailableError,
  TooManyRequestsError,
  UnauthorizedError,
  UnsupportedMediaTypeError,
  UnprocessableContentError,
  ValidationError,
} from '../../src/errors/gateway-error.js';
import { WorkerCallError } from '../../src/errors/worker-call-error.js';
import { WORKER_STATUS_TO_HTTP } from '../../src/errors/worker-status.js';
import { SessionFailedError } from '../../src/features/sessions/session-streaming.js';
import type { Session } from '../../src/features/sessions/session-types.js';
import { ERROR_TYPE_TO_GRPC, toServiceError } from '../../src/grpc/grpc-status.js';
import { decodeStatusDetails } from '../../src/grpc/status-details.js';

const session = (overrides: Partial<Session>): Session => ({
  id: 'session-1',
  owner: 'jwt:alice',
  task: 'text-to-image',
  model: 'tiny-sd',
  deviceId: null,
  workerId: 'worker-0',
  status: 'failed',
  parameters: {},
  result: null,
  error: null,
  batchId: null,
  createdAt: new Date(),
  startedAt: null,
  finishedAt: null,
  ...overrides,
} as Session);

/** One row per error type: an error of that type, the gRPC code, and the pushback (ms) it carries. */
const ROWS: [string, () => GatewayError, keyof typeof status, number | null][] = [
  ['validation-failed', () => new ValidationError([{ field: 'body.model', message: 'is required' }]), 'INVALID_ARGUMENT', null],
  ['unprocessable-content', () => new UnprocessableContentError([{ field: 'body.dtype', message: 'float16 is not supported on w:cpu' }]), 'INVALID_ARGUMENT', null],
  ['malformed-body', () => new MalformedBodyError('bad'), 'INVALID_ARGUMENT', null],
  ['unsupported-media-type', () => new UnsupportedMediaTypeError('bad'), 'INVALID_ARGUMENT', null],
  ['payload-too-large', () => new PayloadTooLargeError('big'), 'RESOURCE_EXHAUSTED', null],
  ['unauthorized', () => new UnauthorizedError(), 'UNAUTHENTICATED', null],
  ['forbidden', () => new ForbiddenError("This route requires the 'inference' scope."), 'PERMISSION_DENIED', null],
  ['not-found', () => new NotFoundError('no such session'), 'NOT_FOUND', null],
  ['method-not-allowed', () => new MethodNotAllowedError('PATCH', '/api/device/list', ['GET', 'HEAD']), 'UNIMPLEMENTED', null],
  ['conflict', () => new ConflictError('runs text-embedding'), 'FAILED_PRECONDITION', null],
  ['rate-limited', () => new TooManyRequestsError('slow down', 7, 'principal'), 'RESOURCE_EXHAUSTED', 7000],
  ['service-unavailable', () => new ServiceUnavailableError('no worker', 3, 'no-worker'), 'UNAVAILABLE', 3000],
  ['database-unavailable', () => new DatabaseUnavailableError(new Error('ECONNREFUSED')), 'UNAVAILABLE', 5000],
  ['internal', () => new InternalError(new Error('boom')), 'INTERNAL', null],
  ['invalid-argument', () => new WorkerCallError('w', 'Infer', status.INVALID_ARGUMENT, 'steps'), 'INVALID_ARGUMENT', null],
  ['failed-precondition', () => new WorkerCallError('w', 'LoadModel', status.FAILED_PRECONDITION, 'invalid'), 'FAILED_PRECONDITION', null],
  ['already-exists', () => new WorkerCallError('w', 'Infer', status.ALREADY_EXISTS, 'job id in use'), 'ALREADY_EXISTS', null],
  ['worker-capacity', () => new WorkerCallError('w', 'Infer', status.RESOURCE_EXHAUSTED, 'queue full'), 'UNAVAILABLE', 5000],
  ['worker-unavailable', () => new WorkerCallError('w', 'Infer', status.UNAVAILABLE, 'stopping'), 'UNAVAILABLE', 5000],
  ['worker-timeout', () => new WorkerCallError('w', 'Infer', status.DEADLINE_EXCEEDED, 'late'), 'DEADLINE_EXCEEDED', null],
  ['client-closed-request', () => new WorkerCallError('w', 'Infer', status.CANCELLED, 'gone'), 'CANCELLED', null],
  ['worker-auth-failed', () => new WorkerCallError('w', 'Infer', status.UNAUTHENTICATED, 'token'), 'INTERNAL', null],
  ['worker-lost', () => new SessionFailedError(session({ error: { code: 'WORKER_LOST', message: 'gone' } })), 'UNAVAILABLE', null],
  ['worker-error', () => new WorkerCallError('w', 'Infer', status.INTERNAL, 'crash'), 'INTERNAL', null],
  ['session-cancelled', () => new SessionFailedError(session({ status: 'cancelled' })), 'CANCELLED', null],
];

describe('the gRPC front status table', () => {
  it('has a row for every error type the gateway raises, and a test row for each of its rows', () => {
    const workerTypes = Object.values(WORKER_STATUS_TO_HTTP).map((m) => m.type);
    for (const type of [...workerTypes, 'worker-error', 'session-cancelled']) expect(ERROR_TYPE_TO_GRPC).toHaveProperty([type]);
    expect(ROWS.map(([type]) => type).sort()).toEqual(Object.keys(ERROR_TYPE_TO_GRPC).sort());
  });

  it.each(ROWS)('%s → its code, detail, error info and pushback', (type, make, code, pushbackMs) => {
    const error = make();
    expect(error.type).toBe(type);
    const answer = toServiceError(error, 'corr-1');
    expect(answer.code).toBe(status[code]);
    expect(answer.metadata.get('x-request-id')).toEqual(['corr-1']);
    expect(answer.metadata.get('grpc-retry-pushback-ms')).toEqual(pushbackMs === null ? [] : [String(pushbackMs)]);
    const decoded = decodeStatusDetails(answer.metadata.get('grpc-status-details-bin')[0] as Buffer);
    expect(decoded.code).toBe(status[code]);
    expect(decoded.details).toContainEqual(
      expect.objectContaining({ '@type': 'google.rpc.ErrorInfo', reason: type, metadata: expect.objectContaining({ errorId: error.id, correlationId: 'corr-1' }) }),
    );
    const retry = decoded.details.find((d) => d['@type'] === 'google.rpc.RetryInfo');
    if (pushbackMs === null) expect(retry).toBeUndefined();
    else expect(retry).toMatchObject({ retryDelay: { seconds: pushbackMs / 1000 } });
  });

  it('names each invalid field in a BadRequest detail, in the message’s own field names', () => {
    const error = new ValidationError([
      { field: 'body.parameters.steps', message: 'Too big: expected number to be <=150' },
      { field: 'body.model', message: 'Invalid input' },
    ]);
    const answer = toServiceError(error, 'corr-2', (field) => field.replace('body.parameters', 'text_to_image').replace('body.', ''));
    expect(answer.details).toBe('text_to_image.steps: Too big: expected number to be <=150; model: Invalid input');
    const decoded = decodeStatusDetails(answer.metadata.get('grpc-status-details-bin')[0] as Buffer);
    expect(decoded.details).toContainEqual({
      '@type': 'google.rpc.BadRequest',
      fieldViolations: [
        { field: 'text_to_image.steps', description: 'Too big: expected number to be <=150' },
        { field: 'model', description: 'Invalid input' },
      ],
    });
  });
});
