import { cpus, totalmem } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceListSchema } from '../../src/features/devices/device-schemas.js';
import { DetailedHealthSchema } from '../../src/features/health/health-schemas.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { processExists } from '../helpers/wait.js';

describe('REST → gateway → gRPC → a real Python worker', () => {
  let real: RealGateway;

  beforeAll(async () => {
    real = await startRealGateway({ LOG_LEVEL: 'debug' });
  });
  afterAll(async () => {
    await real?.gateway.close();
  });

  it('lists the machine\'s real CPU through the worker', async () => {
    const { status, body, response } = await getJson(`${real.url}/api/device/list`, bearer(signToken()));
    expect(status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    const list = DeviceListSchema.parse(body);
    expect(list.partial).toBe(false);
    const cpu = list.devices.find((d) => d.kind === 'cpu');
    expect(cpu).toBeDefined();
    expect(cpu!.id).toBe('worker-0:cpu');
    expect(cpu!.workerId).toBe('worker-0');
    // The worker (psutil) and this test process (Node) read the same machine.
    expect(cpu!.cpu!.logicalCores).toBe(cpus().length);
    expect(cpu!.memory.totalBytes).toBe(totalmem());
    expect(list.totalCount).toBe(list.devices.length);
  });

  it('keeps device ids stable across calls', async () => {
    const first = DeviceListSchema.parse((await getJson(`${real.url}/api/device/list`, bearer(signToken()))).body);
    const second = DeviceListSchema.parse((await getJson(`${real.url}/api/device/list`, bearer(signToken()))).body);
    expect(second.devices.map((d) => d.id)).toEqual(first.devices.map((d) => d.id));
  });

  it('refuses an unauthenticated call before it reaches the worker', async () => {
    const { status, response } = await getJson(`${real.url}/api/device/list`, { 'x-request-id': 'unauth-1' });
    expect(status).toBe(401);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(real.logs.find((l) => l.correlationId === 'unauth-1' && l.source === 'worker')).toEqual([]);
  });

  it('reports the worker process in /health/detailed', async () => {
    const { status, body } = await getJson(`${real.url}/health/detailed`);
    expect(status).toBe(200);
    const report = DetailedHealthSchema.parse(body);
    expect(report.status).toBe('healthy');
    const [worker] = report.workers;
    expect(worker).toMatchObject({ id: 'worker-0', mode: 'local', state: 'serving', healthy: true, restarts: 0 });
    expect(worker!.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(processExists(worker!.pid!)).toBe(true);
    expect(worker!.deviceCount).toBeGreaterThanOrEqual(1);
    expect(worker!.torchVersion).toMatch(/^\d+\.\d+/);
  });

  it('puts one correlation id on the response, the gateway log and the worker log', async () => {
    const id = 'trace-me-7f2c';
    const { response } = await getJson(`${real.url}/api/device/list`, { ...bearer(signToken()), 'x-request-id': id });
    expect(response.headers.get('x-request-id')).toBe(id);
    expect(real.logs.find((l) => l.correlationId === id && l.message === 'request')).toHaveLength(1);
    const workerLines = real.logs.find((l) => l.correlationId === id && l.source === 'worker');
    expect(workerLines.map((l) => [l.workerId, l.method])).toContainEqual([
      'worker-0',
      '/device_ops.v1.WorkerService/ListDevices',
    ]);
  });
});
