import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.js';
import { LAYER_NAMES, type LayerName } from '../../src/ablation/layers.js';
import { loadConfig } from '../../src/config/config.js';
import { createFakeStores } from '../../src/create-stores.js';
import { FakeWorker, FakeWorkerPool } from '../../src/features/workers/fake-worker-pool.js';
import { createLogger } from '../../src/infra/logger.js';
import { cpuDevice } from '../helpers/fake-app.js';
import { testEnv } from '../helpers/env.js';
import { bearer, getJson, listen, type Listening } from '../helpers/http.js';
import { LogCapture } from '../helpers/log-capture.js';
import { signToken } from '../helpers/tokens.js';

/**
 * The bench's layer ablation (gateway/bench/ablation.ts) removes one layer
 * at a time from the real app: each removal must leave the measured request
 * answering as before, and must remove what it names.
 */
interface Ablated extends Listening {
  worker: FakeWorker;
  logs: LogCapture;
}

async function appWithout(layers: LayerName[]): Promise<Ablated> {
  const worker = new FakeWorker('worker-0');
  worker.devices = [cpuDevice('worker-0')];
  const config = loadConfig(testEnv());
  for (const dir of [config.modelDirectory, config.outputDirectory, config.dataDirectory]) mkdirSync(dir, { recursive: true });
  const logs = new LogCapture();
  const { app } = createApp(config, {
    logger: createLogger({ level: 'info', stream: logs }),
    workers: new FakeWorkerPool([worker]),
    version: 'test',
    stores: createFakeStores(),
    ablate: new Set(layers),
  });
  return { ...(await listen(app)), worker, logs };
}

const listDevicesCalls = (worker: FakeWorker) => worker.calls.filter((call) => call.rpc === 'ListDevices').length;

describe('layer ablation', () => {
  const headers = bearer(signToken());
  let full: Ablated;
  let expected: unknown;

  beforeAll(async () => {
    full = await appWithout([]);
    const { status, body } = await getJson(`${full.url}/api/device/list`, headers);
    expect(status).toBe(200);
    expected = body;
  });
  afterAll(() => full?.close());

  it.each(LAYER_NAMES)('answers GET /api/device/list as with every layer when %s is removed', async (layer) => {
    const ablated = await appWithout([layer]);
    try {
      for (let i = 0; i < 2; i += 1) {
        const { status, body } = await getJson(`${ablated.url}/api/device/list`, headers);
        expect(status).toBe(200);
        expect(body).toEqual(expected);
      }
    } finally {
      await ablated.close();
    }
  });

  it('removes what each layer names', async () => {
    const { response } = await getJson(`${full.url}/api/device/list`, headers);
    expect(response.headers.get('x-request-id')).toBeTruthy();
    expect(response.headers.get('content-security-policy')).toBeTruthy();
    expect(full.logs.find((line) => line.message === 'request').length).toBeGreaterThan(0);

    const ablated = await appWithout(['context', 'helmet', 'access-log', 'auth']);
    try {
      // No credential at all: the fixed principal stands in for authentication.
      const { status, response: bare } = await getJson(`${ablated.url}/api/device/list`);
      expect(status).toBe(200);
      expect(bare.headers.get('x-request-id')).toBeNull();
      expect(bare.headers.get('content-security-policy')).toBeNull();
      expect(ablated.logs.find((line) => line.message === 'request')).toEqual([]);
    } finally {
      await ablated.close();
    }
  });

  it('without the gRPC call, asks each worker once and answers from its first reply', async () => {
    const ablated = await appWithout(['grpc']);
    try {
      for (let i = 0; i < 3; i += 1) expect((await getJson(`${ablated.url}/api/device/list`, headers)).status).toBe(200);
      expect(listDevicesCalls(ablated.worker)).toBe(1);
    } finally {
      await ablated.close();
    }
  });

  it("without the handler's work, still asks the worker on every request", async () => {
    const ablated = await appWithout(['handler']);
    try {
      for (let i = 0; i < 3; i += 1) expect((await getJson(`${ablated.url}/api/device/list`, headers)).status).toBe(200);
      expect(listDevicesCalls(ablated.worker)).toBe(3);
    } finally {
      await ablated.close();
    }
  });
});
