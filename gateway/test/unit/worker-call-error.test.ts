import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { WorkerCallError } from '../../src/errors/worker-call-error.js';

describe('gRPC status → HTTP status table', () => {
  const rows: [keyof typeof status, number, string | undefined][] = [
    ['INVALID_ARGUMENT', 400, undefined],
    ['NOT_FOUND', 404, undefined],
    ['FAILED_PRECONDITION', 409, undefined],
    ['RESOURCE_EXHAUSTED', 503, '5'],
    ['UNAVAILABLE', 503, '5'],
    ['DEADLINE_EXCEEDED', 504, undefined],
    ['CANCELLED', 499, undefined],
    ['UNAUTHENTICATED', 502, undefined],
    ['INTERNAL', 502, undefined],
    ['UNIMPLEMENTED', 502, undefined],
    ['UNKNOWN', 502, undefined],
    ['PERMISSION_DENIED', 502, undefined],
  ];

  it.each(rows)('%s → %i', (code, httpStatus, retryAfter) => {
    const error = new WorkerCallError('worker-0', 'ListDevices', status[code], 'worker said no');
    expect(error.status).toBe(httpStatus);
    expect(error.grpcCode).toBe(code);
    expect(error.headers['Retry-After']).toBe(retryAfter);
    expect(error.detail).toBe('worker said no');
    expect(error.extensions.workerId).toBe('worker-0');
  });

  it('maps a code outside the enum to 502', () => {
    expect(new WorkerCallError('w', 'X', 99, 'odd').status).toBe(502);
  });
});
