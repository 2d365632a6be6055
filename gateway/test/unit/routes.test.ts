import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GrpcWorkerError } from '../helpers/grpc-errors.js';
import { bearer, getJson } from '../helpers/http.js';
import { startFakeGateway, type FakeGateway } from '../helpers/fake-app.js';
import { signToken } from '../helpers/tokens.js';
import { DeviceListSchema } from '../../src/features/devices/device-schemas.js';
import { DetailedHealthSchema } from '../../src/features/health/health-schemas.js';

describe('routes over fake workers', () => {
  let gateway: FakeGateway;
  const token = signToken();

  beforeAll(async () => {
    gateway = await startFakeGateway(['worker-0', 'worker-1']);
  });
  afterAll(() => gateway.close());
  beforeEach(() => {
    for (const fake of gateway.pool.fakes) {
      fake.failure = null;
      fake.health = 'SERVING';
      fake.state = 'serving';
    }
  });

  it('GET /health is public and cheap', async () => {
    const { status, body, response } = await getJson(`${gateway.url}/health`);
    expect(status).toBe(200);
    expect(body).toEqual({ status: 'ok' });
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(gateway.pool.calls.filter((c) => c.rpc === 'Health/Check')).toEqual([]);
  });

  it('lists the devices of every worker, each naming its worker', async () => {
    const { status, body } = await getJson(`${gateway.url}/api/device/list`, bearer(token));
    expect(status).toBe(200);
    const list = DeviceListSchema.parse(body);
    expect(list.devices.map((d) => [d.id, d.workerId])).toEqual([
      ['worker-0:cpu', 'worker-0'],
      ['worker-1:cpu', 'worker-1'],
    ]);
    expect(list).toMatchObject({ totalCount: 2, partial: false, missingWorkers: [] });
  });

  it('returns the answering workers with partial: true when one fails', async () => {
    gateway.pool.fakes[1]!.failure = GrpcWorkerError('worker-1', 'DEADLINE_EXCEEDED', 'worker worker-1 did not answer ListDevices within 10000 ms');
    const { status, body } = await getJson(`${gateway.url}/api/device/list`, bearer(token));
    expect(status).toBe(200);
    const list = DeviceListSchema.parse(body);
    expect(list.partial).toBe(true);
    expect(list.devices.map((d) => d.workerId)).toEqual(['worker-0']);
    expect(list.missingWorkers).toEqual([{ workerId: 'worker-1', reason: 'worker worker-1 did not answer ListDevices within 10000 ms' }]);
  });

  it('answers 503 problem+json with Retry-After when no worker answers', async () => {
    gateway.pool.fakes[0]!.state = 'restarting';
    gateway.pool.fakes[1]!.failure = GrpcWorkerError('worker-1', 'UNAVAILABLE', 'worker worker-1 is unavailable');
    const { status, body, response } = await getJson(`${gateway.url}/api/device/list`, bearer(token));
    expect(status).toBe(503);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(response.headers.get('retry-after')).toBe('5');
    expect(body!.detail).toContain('worker-0 (worker is restarting)');
    expect(body!.detail).toContain('worker-1 (worker worker-1 is unavailable)');
  });

  it.each([
    [['SERVING', 'SERVING'], 200, 'healthy'],
    [['SERVING', 'NOT_SERVING'], 200, 'degraded'],
    [['NOT_SERVING', 'NOT_SERVING'], 503, 'unhealthy'],
  ] as const)('/health/detailed with workers %j → %i %s', async (states, httpStatus, overall) => {
    gateway.pool.fakes.forEach((fake, i) => (fake.health = states[i]!));
    const { status, body } = await getJson(`${gateway.url}/health/detailed`, bearer(token));
    expect(status).toBe(httpStatus);
    const report = DetailedHealthSchema.parse(body);
    expect(report.status).toBe(overall);
    expect(report.workers.map((w) => w.healthy)).toEqual(states.map((s) => s === 'SERVING'));
    expect(report.gateway.pid).toBe(process.pid);
  });

  it('/health/detailed names a worker whose check failed and why', async () => {
    gateway.pool.fakes[1]!.failure = GrpcWorkerError('worker-1', 'DEADLINE_EXCEEDED', 'worker worker-1 did not answer Health/Check within 2000 ms');
    const { status, body } = await getJson(`${gateway.url}/health/detailed`, bearer(token));
    expect(status).toBe(200);
    const report = DetailedHealthSchema.parse(body);
    expect(report.status).toBe('degraded');
    expect(report.workers[1]).toMatchObject({ id: 'worker-1', healthy: false, state: 'unreachable' });
    expect(report.workers[1]!.error).toContain('did not answer');
  });

  it('keeps /health/detailed from anonymous callers outside the allow-list', async () => {
    const closed = await startFakeGateway(['worker-0'], { INTERNAL_ALLOW_LIST: '' });
    try {
      expect((await getJson(`${closed.url}/health/detailed`)).status).toBe(401);
      expect((await fetch(`${closed.url}/metrics`)).status).toBe(401);
      // Any credential is not enough: an inference key must not read worker addresses and process ids.
      const inferenceOnly = await getJson(`${closed.url}/health/detailed`, bearer(signToken({ scope: 'inference' })));
      expect(inferenceOnly.status).toBe(403);
      expect(inferenceOnly.body!.detail).toBe("This route requires the 'operations:read' scope.");
      expect((await fetch(`${closed.url}/metrics`, { headers: bearer(signToken({ scope: 'inference' })) })).status).toBe(403);
      const operator = bearer(signToken({ sub: 'sre', scope: 'operations:read' }));
      expect((await fetch(`${closed.url}/metrics`, { headers: operator })).status).toBe(200);
      expect((await fetch(`${closed.url}/metrics/workers/worker-0`, { headers: operator })).status).not.toBe(403);
      expect((await getJson(`${closed.url}/health/detailed`, operator)).status).toBe(200);
      // Admins hold every scope.
      expect((await fetch(`${closed.url}/metrics`, { headers: bearer(signToken({ scope: 'admin' })) })).status).toBe(200);
      // Liveness and readiness stay public.
      expect((await getJson(`${closed.url}/health`)).status).toBe(200);
      expect((await getJson(`${closed.url}/health/ready`)).status).toBe(200);
    } finally {
      await closed.close();
    }
    const internal = await startFakeGateway(['worker-0'], { INTERNAL_ALLOW_LIST: '127.0.0.0/8' });
    try {
      expect((await getJson(`${internal.url}/health/detailed`)).status).toBe(200);
      // The allow-list opens operators' endpoints only, nothing else.
      expect((await getJson(`${internal.url}/api/device/list`)).status).toBe(401);
    } finally {
      await internal.close();
    }
  });

  it('answers an unknown route with 404 problem+json', async () => {
    const { status, body, response } = await getJson(`${gateway.url}/api/nothing-here?x=1`);
    expect(status).toBe(404);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(body).toMatchObject({ type: '/problems/not-found', status: 404, instance: '/api/nothing-here' });
    expect(body!.correlationId).toBe(response.headers.get('x-request-id'));
  });

  it('answers malformed JSON with 400 problem+json and no stack trace', async () => {
    const response = await fetch(`${gateway.url}/api/inference/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(token) },
      body: '{"broken": ',
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ type: '/problems/malformed-body', status: 400 });
    expect(JSON.stringify(body)).not.toMatch(/at .*\.js:\d+/);
  });
});
