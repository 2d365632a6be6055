import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceListSchema } from '../../src/features/devices/device-schemas.js';
import { DetailedHealthSchema } from '../../src/features/health/health-schemas.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { startStandaloneWorker, type StandaloneWorker } from '../helpers/standalone-worker.js';
import { signToken } from '../helpers/tokens.js';

describe('WORKER_ADDRESSES: remote workers', () => {
  let worker: StandaloneWorker;
  let real: RealGateway;
  // Nothing listens here: a worker that is down.
  const deadAddress = '127.0.0.1:1';

  beforeAll(async () => {
    worker = await startStandaloneWorker({ id: 'remote-a', dir: mkdtempSync(join(tmpdir(), 'remote-worker-')) });
    real = await startRealGateway({ WORKER_ADDRESSES: `${worker.address},${deadAddress}`, GRPC_DEADLINE_MS: '2000' });
  });
  afterAll(async () => {
    await real?.gateway.close();
    await worker?.stop();
  });

  it('starts no worker of its own and lists the remote worker\'s devices', async () => {
    expect(real.gateway.workers.mode).toBe('remote');
    const { status, body } = await getJson(`${real.url}/api/device/list`, bearer(signToken()));
    expect(status).toBe(200);
    const list = DeviceListSchema.parse(body);
    expect(list.devices.map((d) => [d.id, d.workerId])).toEqual([['remote-a:cpu', worker.address]]);
    expect(list.partial).toBe(true);
    expect(list.missingWorkers).toHaveLength(1);
    expect(list.missingWorkers[0]!.workerId).toBe(deadAddress);
    expect(list.missingWorkers[0]!.reason).toMatch(/unavailable/);
  });

  it('reports the dead address as unreachable in /health/detailed', async () => {
    const { status, body } = await getJson(`${real.url}/health/detailed`);
    expect(status).toBe(200);
    const report = DetailedHealthSchema.parse(body);
    expect(report.status).toBe('degraded');
    expect(report.workers.map((w) => [w.id, w.mode, w.state, w.healthy])).toEqual([
      [worker.address, 'remote', 'serving', true],
      [deadAddress, 'remote', 'unreachable', false],
    ]);
    expect(report.workers[0]!.pid).toBe(worker.child.pid);
  });
});
