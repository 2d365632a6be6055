import { status } from '@grpc/grpc-js';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerCallError } from '../../src/errors/worker-call-error.js';
import { WORKER_STATUS_TO_HTTP } from '../../src/errors/worker-status.js';
import { SessionFailedError } from '../../src/features/sessions/session-streaming.js';
import type { Session } from '../../src/features/sessions/session-types.js';
import { problemMiddleware } from '../../src/http/problem-middleware.js';
import { requestContext } from '../../src/http/request-context.js';
import { createLogger } from '../../src/infra/logger.js';
import { listen, type Listening } from '../helpers/http.js';
import { LogCapture } from '../helpers/log-capture.js';

/** One row per status: [code, HTTP status, problem type, Retry-After]. */
const ROWS: [string, number, string, string | undefined][] = [
  ['INVALID_ARGUMENT', 422, 'invalid-argument', undefined],
  ['NOT_FOUND', 404, 'not-found', undefined],
  ['FAILED_PRECONDITION', 409, 'failed-precondition', undefined],
  ['ALREADY_EXISTS', 409, 'already-exists', undefined],
  ['RESOURCE_EXHAUSTED', 503, 'worker-capacity', '5'],
  ['UNAVAILABLE', 503, 'worker-unavailable', '5'],
  ['DEADLINE_EXCEEDED', 504, 'worker-timeout', undefined],
  ['CANCELLED', 499, 'client-closed-request', undefined],
  ['UNAUTHENTICATED', 502, 'worker-auth-failed', undefined],
  ['WORKER_LOST', 502, 'worker-lost', undefined],
  ['INTERNAL', 502, 'worker-error', undefined],
  ['UNIMPLEMENTED', 502, 'worker-error', undefined],
  ['UNKNOWN', 502, 'worker-error', undefined],
  ['PERMISSION_DENIED', 502, 'worker-error', undefined],
];

const failedSession = (code: string, sessionStatus: Session['status'] = 'failed'): Session => ({
  id: 'session-1',
  owner: 'jwt:alice',
  task: 'text-to-image',
  model: 'tiny-sd',
  deviceId: null,
  workerId: 'worker-0',
  status: sessionStatus,
  parameters: {},
  result: null,
  error: { code, message: 'it went wrong' },
  batchId: null,
  createdAt: new Date(),
  startedAt: null,
  finishedAt: new Date(),
});

describe('the worker-status table', () => {
  it('has a test row for each of its rows', () => {
    const tested = new Set(ROWS.map(([code]) => code));
    for (const code of Object.keys(WORKER_STATUS_TO_HTTP)) expect(tested.has(code), code).toBe(true);
  });

  it.each(ROWS.filter(([code]) => code in status))('a call failing with %s → %i %s', (code, httpStatus, type, retryAfter) => {
    const error = new WorkerCallError('worker-0', 'ListDevices', status[code as keyof typeof status], 'worker said no');
    expect([error.status, error.type, error.headers['Retry-After']]).toEqual([httpStatus, type, retryAfter]);
    expect(error.grpcCode).toBe(code);
    expect(error.detail).toBe('worker said no');
    expect(error.extensions.workerId).toBe('worker-0');
  });

  it.each(ROWS.filter(([code]) => code !== 'CANCELLED'))('a job ending with %s → %i %s', (code, httpStatus, type, retryAfter) => {
    const error = new SessionFailedError(failedSession(code));
    expect([error.status, error.type, error.headers['Retry-After']]).toEqual([httpStatus, type, retryAfter]);
    expect(error.extensions).toMatchObject({ sessionId: 'session-1', code });
  });

  it('answers a cancelled session 409, whatever its code', () => {
    for (const code of ['CANCELLED', 'INTERNAL']) {
      expect(new SessionFailedError(failedSession(code, 'cancelled'))).toMatchObject({ status: 409, type: 'session-cancelled' });
    }
    // CANCELLED on a session that did not end cancelled is a failure of the worker, not a client that left.
    expect(new SessionFailedError(failedSession('CANCELLED'))).toMatchObject({ status: 502, type: 'worker-error' });
  });

  it('maps a code outside the enum to 502', () => {
    expect(new WorkerCallError('w', 'X', 99, 'odd').status).toBe(502);
  });
});

describe('how worker failures are logged', () => {
  let server: Listening;
  const logs = new LogCapture();
  const errors: Record<string, Error> = {
    capacity: new WorkerCallError('worker-0', 'Infer', status.RESOURCE_EXHAUSTED, 'queue full'),
    unavailable: new WorkerCallError('worker-0', 'LoadModel', status.UNAVAILABLE, 'worker-0 is unavailable'),
    'job-capacity': new SessionFailedError(failedSession('RESOURCE_EXHAUSTED')),
    'job-lost': new SessionFailedError(failedSession('WORKER_LOST')),
    fault: new WorkerCallError('worker-0', 'Infer', status.INTERNAL, 'worker crashed'),
  };

  beforeAll(async () => {
    const app = express();
    app.use(requestContext(createLogger({ level: 'debug', stream: logs })));
    app.get('/:which', (req) => {
      throw errors[req.params.which!];
    });
    app.use(problemMiddleware());
    server = await listen(app);
  });
  afterAll(() => server.close());

  const logged = async (which: string) => {
    const response = await fetch(`${server.url}/${which}`);
    const problem = (await response.json()) as { errorId: string };
    return { status: response.status, line: logs.find((l) => l.errorId === problem.errorId)[0]! };
  };

  it.each(['capacity', 'unavailable', 'job-capacity'])('logs a worker capacity refusal (%s) at info, without a stack', async (which) => {
    const { status: httpStatus, line } = await logged(which);
    expect(httpStatus).toBe(503);
    expect(line).toMatchObject({ level: 'info', message: 'request refused', status: 503 });
    expect(JSON.stringify(line)).not.toMatch(/at .*worker-call-error\.test\.ts/);
  });

  it.each(['fault', 'job-lost'])('logs a worker fault (%s) at error', async (which) => {
    const { status: httpStatus, line } = await logged(which);
    expect(httpStatus).toBe(502);
    expect(line).toMatchObject({ level: 'error', message: 'request failed', status: 502 });
    // With its stack, for whoever has to look.
    expect(JSON.stringify(line)).toMatch(/at .*worker-call-error\.test\.ts/);
  });
});
