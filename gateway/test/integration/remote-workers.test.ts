import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { workerEnvironment } from '../../src/features/workers/local-worker-pool.js';
import { DeviceListSchema } from '../../src/features/devices/device-schemas.js';
import { DetailedHealthSchema } from '../../src/features/health/health-schemas.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { testEnv } from '../helpers/env.js';

/** A worker started by hand, as docker-compose would: the gateway only gets its address. */
async function startStandaloneWorker(id: string, dir: string): Promise<{ child: ChildProcess; address: string }> {
  const python = loadConfig(testEnv()).workerPython;
  const args = ['-m', 'device_ops_worker', '--port', '0', '--worker-id', id, '--ready-fd', '3', '--metrics-port', '-1'];
  args.push('--model-directory', join(dir, 'models'), '--output-directory', join(dir, 'outputs'), '--cache-directory', join(dir, 'cache'));
  const child = spawn(python, args, {
    env: workerEnvironment(process.env),
    stdio: ['ignore', 'ignore', 'inherit', 'pipe'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdio[3] as Readable }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  });
  return { child, address: `127.0.0.1:${(JSON.parse(line) as { port: number }).port}` };
}

describe('WORKER_ADDRESSES: remote workers', () => {
  let worker: { child: ChildProcess; address: string };
  let real: RealGateway;
  // Nothing listens here: a worker that is down.
  const deadAddress = '127.0.0.1:1';

  beforeAll(async () => {
    worker = await startStandaloneWorker('remote-a', mkdtempSync(join(tmpdir(), 'remote-worker-')));
    real = await startRealGateway({ WORKER_ADDRESSES: `${worker.address},${deadAddress}`, GRPC_DEADLINE_MS: '2000' });
  });
  afterAll(async () => {
    await real?.gateway.close();
    worker?.child.kill('SIGTERM');
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
