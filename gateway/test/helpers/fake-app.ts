import { mkdirSync } from 'node:fs';
import { createApp, type GatewayApp } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { FakeWorker, FakeWorkerPool } from '../../src/features/workers/fake-worker-pool.js';
import { createFakeStores, type FakeGatewayStores } from '../../src/create-stores.js';
import { createLogger } from '../../src/infra/logger.js';
import type { Device__Output } from '../../src/generated/device_ops/v1/Device.js';
import { testEnv } from './env.js';
import { listen, type Listening } from './http.js';
import { LogCapture } from './log-capture.js';

export const cpuDevice = (workerId: string): Device__Output => ({
  id: `${workerId}:cpu`,
  kind: 'DEVICE_KIND_CPU',
  name: 'Test CPU',
  memory: { totalBytes: 1024, freeBytes: 512 },
  supportedDtypes: ['float32', 'bfloat16'],
  runningJobs: 0,
  queuedJobs: 0,
  queueCapacity: 64,
  cpu: { modelName: 'Test CPU', logicalCores: 4, physicalCores: 2, architecture: 'x86_64', torchThreads: 4 },
  details: 'cpu',
});

export interface FakeGateway extends Listening {
  pool: FakeWorkerPool;
  logs: LogCapture;
  gateway: GatewayApp;
  stores: FakeGatewayStores;
}

/** The real app (auth, validation, routes, errors) over fake workers, on a real port. */
export async function startFakeGateway(
  workerIds: string[] = ['worker-0'],
  env: Record<string, string> = {},
): Promise<FakeGateway> {
  const fakes = workerIds.map((id) => {
    const fake = new FakeWorker(id);
    fake.devices = [cpuDevice(id)];
    return fake;
  });
  const pool = new FakeWorkerPool(fakes);
  const logs = new LogCapture();
  const stores = createFakeStores();
  const config = loadConfig(testEnv(env));
  for (const dir of [config.modelDirectory, config.outputDirectory, config.dataDirectory]) mkdirSync(dir, { recursive: true });
  const gateway = createApp(config, {
    logger: createLogger({ level: 'debug', stream: logs }),
    workers: pool,
    version: 'test',
    stores,
  });
  return { ...(await listen(gateway.app)), pool, logs, gateway, stores };
}
